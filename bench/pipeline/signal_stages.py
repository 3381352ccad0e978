"""The pipeline's generation and teacher-signal stages (a mixin of `bench.pipeline.graph.Pipeline`), including the
cross-tokenizer ones: when the teacher's tokenizer is not the student's, teacher stages train and generate on the
teacher's own tokenization (`pipe.enc_for(role)`), their generations reach the student as text re-tokenized by the
student's tokenizer, and their signals are computed on the teacher's tokenization of the same text and projected
onto the student's rows through the character alignment (`bench.signals.xtok`, kind `xtok`).
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

from bench import dist
from bench.errors import BenchError
from bench.method import parse_sample_side
from bench.modeling.generate import decode, make_generator, needs_model
from bench.modeling.precision import autocast, resolve_precision
from bench.signals.cache import SignalEntry, write_entry
from bench.signals.compute import SIGNAL_FORMAT, compute_side_signals
from bench.signals.shards import sharded_signals
from bench.pipeline.served import SERVED_ROLE
from bench.store.files import read_jsonl, write_jsonl
from bench.store.identity import GENERATION_MODULES, SIGNAL_MODULES, code_version
from bench.store.stages import build_stage, content_key, stage_path, token_hash

TEACHER_ROLES = ("ref_teacher", "dpo_teacher", "rdpo_teacher", "chosen_teacher")
XTOK_MODULES = ("bench.signals.xtok", "bench.modeling.alignment")


def cross_tokenizer_ready(method, cfg) -> bool:
    """Whether a method can train a student whose teacher has another tokenizer: it reads teacher signals only as
    `xtok` (projected through the alignment), as `topk` through the vocabulary map when it declares that sound
    (forward-KL losses, ADPA's advantages at span starts), as `values` held between shared boundaries when it
    declares that (TVKD's telescoping potentials), or as `logps` when it only sums them per sequence (DDPO); teacher
    generations (SeqKD) reach it as re-tokenized text."""
    ok = {"xtok"} | ({"topk"} if method.cross_tokenizer_topk else set()) | (
        {"values"} if method.cross_tokenizer_values else set()) | (
        {"logps"} if method.cross_tokenizer_sequence_logps else set())
    return all(spec.kind in ok for spec in method.signals(cfg) if spec.model in TEACHER_ROLES)


def check_cross_tokenizer(method_name: str, teacher: str, student: str, settings: dict | None = None) -> None:
    """One error line, before any work, for a method that cannot cross tokenizers (or not with these settings),
    naming those that can."""
    from bench.registry import get_method, method_names

    method = get_method(method_name)
    mcfg = method.make_config(settings or {})
    problem = method.cross_tokenizer_problem(mcfg)
    if problem:
        raise BenchError(f"method '{method_name}' across tokenizers (teacher '{teacher}', student '{student}'): "
                         f"{problem}")
    if cross_tokenizer_ready(method, mcfg):
        return
    ready = sorted(n for n in method_names() if cross_tokenizer_ready(get_method(n), get_method(n).make_config()))
    raise BenchError(f"method '{method_name}' reads the teacher's token-level signals in the student's vocabulary, "
                     f"but teacher '{teacher}' and student '{student}' tokenize differently; methods that run "
                     f"across tokenizers: {', '.join(ready)} (or pick a teacher of the student's family)")


class SignalStages:
    """Generations and signals of model roles (mixed into Pipeline, which provides the rest)."""

    def enc_for(self, role: str):
        """The encoder a role's model reads: the teacher's for teacher stages (the same as the student's unless the
        tokenizers differ)."""
        return self.tenc if role in TEACHER_ROLES else self.enc

    def generation_key(self, role: str, split: str) -> dict:
        enc = self.enc_for(role)
        return {"model": self.model_key(role), "prompts": token_hash(self.prompts(split, enc)),
                "max_new": enc.max_response_len, "gen": self.preset.get("generation", {}),
                "code": code_version(*GENERATION_MODULES)}

    def stage_precision(self, role: str = "student") -> str:
        """The resolved precision a stage trains at (its signals are computed with the body at it too)."""
        from bench.train.trainer import TrainConfig

        train = self.stage_cfg(role).get("train", {})
        return resolve_precision(train.get("precision", TrainConfig.precision))

    def signal_key(self, role: str, pairs, precision: str | None = None, enc=None) -> dict:
        enc = enc or self.enc
        return {"model": self.model_key(role), "tokens": token_hash(pairs), "k": self.k, "tau": self.tau,
                "tokenizer": content_key(enc.fingerprint()), "code": code_version(*SIGNAL_MODULES),
                "format": SIGNAL_FORMAT, "precision": precision or self.stage_precision()}

    def _generation_rows(self, role: str, split: str) -> list[dict]:
        enc = self.enc_for(role)
        prompts = self.prompts(split, enc)
        max_new = enc.max_response_len
        gen_cfg = self.preset.get("generation", {})
        key = self.generation_key(role, split)

        def build(tmp: Path) -> dict:
            self.model_dir(role)  # train the generator first, outside this stage's timer (every process)
            if not dist.is_main():
                return {}  # process 0 generates (a vLLM engine shards the model itself); the others wait
            t0 = time.perf_counter()
            backend = gen_cfg.get("backend", "hf")
            model = self.load(role) if needs_model(backend) else None
            gen = make_generator(backend, model, enc.tokenizer, model_path=self.model_dir(role),
                                 batch_size=self.infer_bs)
            outs = gen.generate(prompts, max_new, desc=f"generate {role} on {split}")
            rows = self.split_rows(split)
            write_jsonl(tmp / "generations.jsonl", [{"id": r["id"], "token_ids": o, "text": decode(enc.tokenizer, o)}
                                                   for r, o in zip(rows, outs)])
            self.timings[f"generate:{role}:{split}"] = time.perf_counter() - t0
            del model
            gc.collect()
            return {"n": len(outs), "cost": {"seconds": self.timings[f"generate:{role}:{split}"], "role": role,
                                             "tokens": sum(len(o) for o in outs), "sequences": len(outs)}}

        path = build_stage("generations", key, build)
        return read_jsonl(path / "generations.jsonl")

    def generations(self, role: str, split: str) -> list[list[int]]:
        """A role's greedy responses to a split's prompts, as token ids of the role's own tokenizer."""
        return [r["token_ids"] for r in self._generation_rows(role, split)]

    def generation_texts(self, role: str, split: str) -> list[str]:
        return [r["text"] for r in self._generation_rows(role, split)]

    def samples(self, role: str, split: str, k: int, temperature: float, seed: int = 0) -> list[list[str]]:
        """`k` responses per prompt of a split sampled from a role at `temperature` (seeded), as text: a cached stage
        (kind "samples") on the pair-making stage's sampler (bench.pipeline.pairs.sample_responses)."""
        from bench.pipeline.pairs import PairSpec, sample_responses

        enc = self.enc_for(role)
        prompts = self.prompts(split, enc)
        spec = PairSpec(samples=max(k, 2), temperature=temperature, seed=seed, max_new_tokens=enc.max_response_len,
                        batch_size=self.infer_bs).validate()  # a pair needs 2 samples; a samples stage may hold 1
        spec.samples = k
        key = {"model": self.model_key(role), "prompts": token_hash(prompts), "k": k, "temperature": temperature,
               "seed": seed, "max_new": enc.max_response_len,
               "code": code_version(*GENERATION_MODULES, "bench.pipeline.pairs")}

        def build(tmp: Path) -> dict:
            self.model_dir(role)
            if not dist.is_main():
                return {}
            t0 = time.perf_counter()
            outs = sample_responses(self.load(role), enc.tokenizer, prompts, spec, desc=f"sample {k}x {role} on {split}")
            write_jsonl(tmp / "samples.jsonl", [{"id": r["id"], "samples": o}
                                                for r, o in zip(self.split_rows(split), outs)])
            self.timings[f"samples:{role}:{split}"] = time.perf_counter() - t0
            gc.collect()
            return {"n": len(outs), "cost": {"seconds": self.timings[f"samples:{role}:{split}"], "role": role,
                                             "sequences": len(outs) * k}}

        path = build_stage("samples", key, build)
        return [r["samples"] for r in read_jsonl(path / "samples.jsonl")]

    def side_texts(self, split: str, side: str, alias: dict[str, str]) -> list[str]:
        """The response text of each row of a side (what both tokenizers read)."""
        rows = self.split_rows(split)
        if side.startswith("gen:"):
            return self.generation_texts(alias.get(side[4:], side[4:]), split)
        if side.startswith("sample:"):
            role, k, temperature, j = parse_sample_side(side)
            return [s[j] for s in self.samples(alias.get(role, role), split, k, temperature)]
        return [r["response" if split == "sft" else side] for r in rows]

    def signal_entry(self, role: str, side: str, split: str, alias: dict[str, str],
                     precision: str | None = None, enc=None) -> SignalEntry:
        """The signals of `role` on a side as `enc` (default: the student's) encodes it, with the body at
        `precision` (default: the student stage's)."""
        precision = precision or self.stage_precision()
        enc = enc or self.enc
        pairs = self.side_pairs(split, side, alias, enc)
        key = self.signal_key(role, pairs, precision, enc)
        final = stage_path("signals", key)
        if self.served is not None and role == SERVED_ROLE:  # the client's code is part of what the entry holds
            key = {**key, "client": code_version("bench.signals.remote", "bench.signals.serve")}
            final = stage_path("signals", key)
            return SignalEntry(write_entry(final, key, self.served.fill(pairs, f"signals {role} (served) on "
                                                                               f"{split}/{side}")))

        def fill(writers):
            self.model_dir(role)  # train the model first, outside this stage's timer
            t0 = time.perf_counter()
            model = self.load(role)
            tokens, passes = sharded_signals(model, pairs, writers, k=self.k, tau=self.tau,
                                             pad_id=enc.tokenizer.pad_token_id, batch_size=self.infer_bs,
                                             model_key=content_key(self.model_key(role)),
                                             desc=f"signals {role} on {split}/{side}",
                                             autocast=lambda L: autocast(precision, seq_len=L))
            self.timings[f"signals:{role}:{side}"] = time.perf_counter() - t0
            del model
            gc.collect()
            return {"cost": {"seconds": self.timings[f"signals:{role}:{side}"], "tokens": tokens,
                             "forward_passes": passes, "role": role, "side": side}}

        return SignalEntry(write_entry(final, key, fill))

    def xtok_entry(self, role: str, side: str, split: str, alias: dict[str, str],
                   precision: str | None = None) -> SignalEntry:
        """`role`'s signals on its own tokenization of a side's text, projected onto the student's rows (kind xtok;
        keyed by both tokenizations and both tokenizers)."""
        from bench.signals.xtok import (
            RowCollector, alignment_counts, offsets_for_ids, project_example, span_groups, teacher_to_student_map,
            tokenize_response,
        )

        precision = precision or self.stage_precision()
        tenc = self.enc_for(role)
        rows, texts = self.split_rows(split), self.side_texts(split, side, alias)
        s_pairs = self.side_pairs(split, side, alias)
        # an empty response (a rollout that stopped at once) is EOS alone on both sides: one EOS group
        t_tok = [tokenize_response(tenc.tokenizer, t, tenc.max_response_len) for t in texts]
        t_pairs = [(tenc.prompt_ids(r["prompt"], r["id"]), t.ids) for r, t in zip(rows, t_tok)]
        s_tok = [offsets_for_ids(self.tok, text, resp, self.tok.eos_token_id) for text, (_, resp) in zip(texts, s_pairs)]
        key = {**self.signal_key(role, t_pairs, precision, tenc), "kind": "xtok", "student": token_hash(s_pairs),
               "student_tokenizer": content_key(self.enc.fingerprint()), "xcode": code_version(*XTOK_MODULES)}

        def fill(writers):
            self.model_dir(role)
            t0 = time.perf_counter()
            model = self.load(role)
            rows_t = {kind: RowCollector() for kind in ("topk", "logps", "values")}
            tokens, passes = compute_side_signals(model, t_pairs, rows_t, k=self.k, tau=self.tau,
                                                  pad_id=tenc.tokenizer.pad_token_id, batch_size=self.infer_bs,
                                                  model_key=content_key(self.model_key(role)),
                                                  desc=f"signals {role} on {split}/{side} (cross-tokenizer)",
                                                  autocast=lambda L: autocast(precision, seq_len=L))
            to_student, share = teacher_to_student_map(tenc.tokenizer, self.tok)
            groups = [span_groups(s, t) for s, t in zip(s_tok, t_tok)]
            for i, ((_, resp), g) in enumerate(zip(s_pairs, groups)):
                top = rows_t["topk"].rows[i]
                writers["xtok"].add(**project_example(g, len(resp), top["topk_ids"], top["topk_logps"],
                                                      rows_t["logps"].rows[i]["logps"], to_student, share,
                                                      rows_t["values"].rows[i]))
            self.timings[f"signals:{role}:{side}"] = time.perf_counter() - t0
            del model
            gc.collect()
            return {"alignment": alignment_counts(groups, [len(p[1]) for p in s_pairs]),
                    "cost": {"seconds": self.timings[f"signals:{role}:{side}"], "tokens": tokens,
                             "forward_passes": passes, "role": role, "side": side}}

        return SignalEntry(write_entry(final=stage_path("signals", key), key=key, fill=fill))

    def contrast_entry(self, role_d: str, role_r: str, side: str, split: str, alias: dict[str, str], beta2: float,
                       temperature: float) -> SignalEntry:
        """AlignDistil's composed target from a DPO and a reverse-DPO teacher on a side (kind `contrast`,
        bench.signals.contrast), keyed by both models, the side's tokens, k, β₂ and T."""
        from bench.signals.contrast import compute_contrast

        pairs = self.side_pairs(split, side, alias)
        key = {"contrast": [self.model_key(role_d), self.model_key(role_r)], "tokens": token_hash(pairs), "k": self.k,
               "beta2": beta2, "temperature": temperature, "tokenizer": content_key(self.enc.fingerprint()),
               "code": code_version(*SIGNAL_MODULES, "bench.signals.contrast"), "format": SIGNAL_FORMAT}

        def fill(writers):
            self.model_dir(role_d)
            self.model_dir(role_r)
            t0 = time.perf_counter()
            model_d, model_r = self.load(role_d), self.load(role_r)
            keys = (content_key(self.model_key(role_d)), content_key(self.model_key(role_r)))
            tokens, passes = compute_contrast(model_d, model_r, pairs, writers["contrast"], k=self.k, beta2=beta2,
                                              temperature=temperature, pad_id=self.tok.pad_token_id,
                                              batch_size=self.infer_bs, model_keys=keys,
                                              desc=f"signals {role_d} - {role_r} on {split}/{side}")
            self.timings[f"signals:contrast:{side}"] = time.perf_counter() - t0
            del model_d, model_r
            gc.collect()
            return {"cost": {"seconds": self.timings[f"signals:contrast:{side}"], "tokens": tokens,
                             "forward_passes": passes, "role": f"{role_d}+{role_r}", "side": side}}

        return SignalEntry(write_entry(stage_path("signals", key), key, fill))
