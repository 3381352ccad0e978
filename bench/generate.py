"""Generation backends (rollouts, teacher generations, evaluation). HF `generate` is built in; a backend is any
object with `generate(prompt_ids_list, max_new_tokens) -> list[list[int]]`, registered in GENERATORS, so a vLLM
backend can be added without touching callers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bench.errors import BenchError
from bench.progress import progress_bar


@dataclass
class HFGenerator:
    model: object
    tokenizer: object
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str = "generate") -> list[list[int]]:
        tok, model = self.tokenizer, self.model
        model.eval()
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        dev = next(model.parameters()).device
        out: list[list[int]] = [None] * len(prompts)  # type: ignore[list-item]
        # sort by length so batches pad little; restore order at the end
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        with progress_bar(desc, total=len(prompts), unit="seq") as bar:
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                L = max(len(prompts[i]) for i in idx)
                ids = torch.full((len(idx), L), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), L), dtype=torch.long)
                for r, i in enumerate(idx):
                    p = prompts[i]
                    ids[r, L - len(p):] = torch.tensor(p)
                    mask[r, L - len(p):] = 1
                kwargs = {"do_sample": self.do_sample}
                if self.do_sample:
                    kwargs["temperature"] = self.temperature
                gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id, **kwargs)
                new = gen[:, L:].tolist()
                for r, i in enumerate(idx):
                    seq = new[r]
                    if tok.eos_token_id in seq:
                        seq = seq[: seq.index(tok.eos_token_id) + 1]
                    out[i] = seq
                bar.advance(len(idx), tokens=sum(len(x) for x in new))
        return out


GENERATORS: dict[str, Callable[..., object]] = {"hf": HFGenerator}


def make_generator(backend: str, model, tokenizer, **kwargs):
    if backend not in GENERATORS:
        raise BenchError(f"unknown generation backend '{backend}'; choose from {', '.join(GENERATORS)}")
    return GENERATORS[backend](model=model, tokenizer=tokenizer, **kwargs)


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
