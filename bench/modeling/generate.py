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


class VLLMGenerator:
    """Greedy generation with vLLM (imported only when selected: `--set generation.backend=vllm`, the optional extra
    `pip install 'prefdistill-bench[vllm]'`, GPU machines). vLLM loads the weights itself from `model_path` (a
    saved model directory), so the caller does not load an HF copy first (`loads_weights`). Prompts go in as token
    ids, so the chat template and truncation are exactly the HF backend's."""

    loads_weights = True
    package = "vllm"

    def __init__(self, model=None, tokenizer=None, batch_size: int = 16, model_path: str | None = None,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.85):
        try:
            import vllm
        except ImportError:
            raise BenchError("generation backend 'vllm' needs vLLM: `pip install 'prefdistill-bench[vllm]'` on a GPU "
                             "machine, or --set generation.backend=hf") from None
        if model_path is None:
            raise BenchError("generation backend 'vllm' needs a saved model directory; this step only has an "
                             "in-memory model, so it uses --set generation.backend=hf")
        self.tokenizer = tokenizer
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                            trust_remote_code=False)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str = "generate") -> list[list[int]]:
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        out = []
        with progress_bar(desc, total=len(prompts), unit="seq") as bar:
            for result in self.llm.generate(inputs, params, use_tqdm=False):
                ids = list(result.outputs[0].token_ids)
                eos = self.tokenizer.eos_token_id
                out.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
                bar.advance(1, tokens=len(ids))
        return out


HFGenerator.loads_weights = False
GENERATORS: dict[str, Callable[..., object]] = {"hf": HFGenerator, "vllm": VLLMGenerator}


def check_backend(backend: str) -> None:
    """Fail before any work when the configured backend is unknown or its package is missing."""
    import importlib.util

    if backend not in GENERATORS:
        raise BenchError(f"unknown generation backend '{backend}'; choose from {', '.join(GENERATORS)} "
                         "(--set generation.backend=hf)")
    package = getattr(GENERATORS[backend], "package", None)
    if package and importlib.util.find_spec(package) is None:
        raise BenchError(f"generation backend '{backend}' needs the '{package}' package: `pip install "
                         f"'prefdistill-bench[{backend}]'` (GPU machines), or --set generation.backend=hf")


def needs_model(backend: str) -> bool:
    """Whether the caller must pass a loaded HF model (False: the backend loads the weights from a path)."""
    return not getattr(GENERATORS.get(backend, HFGenerator), "loads_weights", False)


def make_generator(backend: str, model, tokenizer, model_path=None, **kwargs):
    if backend not in GENERATORS:
        raise BenchError(f"unknown generation backend '{backend}'; choose from {', '.join(GENERATORS)}")
    if needs_model(backend):
        return GENERATORS[backend](model=model, tokenizer=tokenizer, **kwargs)
    return GENERATORS[backend](model=model, tokenizer=tokenizer, model_path=model_path, **kwargs)


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
