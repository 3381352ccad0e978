"""Benchmark workloads on the embedded default: the embedded preference data tokenized by the project's encoder,
the converted SmolLM2 models from the cache, and signal entries written by the real precompute
(`bench.signals.compute.compute_side_signals` → a signal cache entry on disk, read back memory-mapped)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

import benchmarks.harness  # noqa: F401  (puts the project on sys.path)
from bench.config import RunConfig
from bench.modeling.models import load_model
from bench.pipeline.graph import Pipeline
from bench.modeling.precision import autocast
from bench.signals.cache import SignalEntry, write_entry
from bench.signals.compute import compute_side_signals
from bench.train.trainer import TrainData

TEACHER, STUDENT = "smollm2-135m", "smollm2-135m-l12"


def embedded(n: int, sides=("chosen", "rejected"), seed: int = 0):
    """(tokenizer, {side: [(prompt_ids, response_ids)] * n}) from the embedded preference split."""
    pipe = Pipeline(RunConfig(method="dpo", student=STUDENT, preset="embedded", seed=seed))
    pairs = {s: pipe.side_pairs(pipe.teacher_pref, s, {})[:n] for s in sides}  # gold pairs: nothing to train
    return pipe.tok, pairs


def model(name: str):
    """A converted embedded model (float32), loaded fresh."""
    return load_model(name)


def signal_entry(model, pairs, out: Path, *, pad_id: int, precision: str, k: int = 50, tau: float = 2.0,
                 batch_size: int = 8) -> SignalEntry:
    """One real cache entry of `model` over `pairs` (topk, logps, values), body at `precision`."""
    def fill(writers):
        compute_side_signals(model, pairs, writers, k=k, tau=tau, pad_id=pad_id, batch_size=batch_size,
                             model_key=str(out), desc="signals", autocast=lambda L: autocast(precision, seq_len=L))
    return SignalEntry(write_entry(out, {"benchmark": str(out)}, fill))


def xtok_entry(model, pairs, out: Path, *, pad_id: int, precision: str, k: int = 50, tau: float = 2.0,
               batch_size: int = 8) -> SignalEntry:
    """A real `xtok` entry (bench.signals.xtok) of `model` over `pairs`, every row its own span: the stored layout and
    bytes of a cross-tokenizer teacher's entry per student row (they do not depend on where the spans fall)."""
    from bench.signals.xtok import RowCollector, project_example

    def fill(writers):
        rows = {kind: RowCollector() for kind in ("topk", "logps", "values")}
        compute_side_signals(model, pairs, rows, k=k, tau=tau, pad_id=pad_id, batch_size=batch_size,
                             model_key=str(out), desc="signals", autocast=lambda L: autocast(precision, seq_len=L))
        ident = torch.arange(model.config.vocab_size)
        for i, (_, resp) in enumerate(pairs):
            n = len(resp)
            writers["xtok"].add(**project_example([((j, j + 1), (j, j + 1)) for j in range(n)], n,
                                                  rows["topk"].rows[i]["topk_ids"], rows["topk"].rows[i]["topk_logps"],
                                                  rows["logps"].rows[i]["logps"], ident, 1.0, rows["values"].rows[i]))
    return SignalEntry(write_entry(out, {"benchmark": str(out), "kind": "xtok"}, fill))


def train_data(pairs: dict, signals: dict[str, tuple[SignalEntry, str, str]]) -> TrainData:
    n = len(next(iter(pairs.values())))
    return TrainData(n=n, sides=dict(pairs), signals=signals)


def dpo_data(ref_model, pairs: dict, tmp: Path, pad_id: int, precision: str) -> TrainData:
    """DPO's declared signals (the reference's log-probs of each side), precomputed like the pipeline does."""
    sig = {}
    for side, p in pairs.items():
        entry = signal_entry(ref_model, p, tmp / f"ref-{side}-{precision}", pad_id=pad_id, precision=precision)
        sig[f"reference.logps.{side}"] = (entry, "logps", side)
    return train_data(pairs, sig)


def kd_data(teacher, pairs: dict, tmp: Path, pad_id: int, precision: str, teacher_role: str = "dpo_teacher"):
    """The chosen side with the teacher's cached top-k (GKD / VanillaKD / DCKD-on-chosen)."""
    entry = signal_entry(teacher, pairs["chosen"], tmp / f"teacher-chosen-{precision}", pad_id=pad_id,
                         precision=precision)
    return train_data({"chosen": pairs["chosen"]}, {f"{teacher_role}.topk.chosen": (entry, "topk", "chosen")})


@contextlib.contextmanager
def threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
