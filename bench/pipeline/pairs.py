"""On-policy preference pairs: K sampled responses per prompt from a policy, scored by a judge, best against worst.

Real preference data is made this way (dpo-mix-7k, HelpSteer2: sampled answers ranked by an annotator or a reward
model), so both sides are samples and the label is only as good as the judge. Judges:

- ``verified``: the embedded suite's checker (rows must carry its meta). Exact, so best-of-K recreates gold chosen
  sides whenever one sample is right; ``noise`` > 0 models an imperfect annotator: each pair's verdict is swapped
  with that probability (seeded), as annotators disagree with a gold standard 20-35% of the time.
- ``rm``: a reward model (``rm_model``: a preset, ``embedded``, an HF id or a directory; bench.scoring.reward_model).

Ties (every sample scored the same, e.g. a policy that returns identical samples) give no pair and are counted.
Each pair keeps every sample's judge score, the chosen and rejected scores, whether the verdict was swapped, and,
where the rows have checkers, both sides' verified scores: the pair's true quality, for `headroom`-style reports.
The result is a cached stage (kind "pairs") keyed by the policy's content, the prompts, K, temperature, seed, the
judge and the generation code, so asking again costs nothing.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import BenchError

JUDGES = ("verified", "rm")
PAIRS_FORMAT = 1


@dataclass
class PairSpec:
    samples: int = 4
    temperature: float = 1.0
    seed: int = 0
    max_new_tokens: int = 64
    judge: str = "verified"
    rm_model: str = "embedded"
    noise: float = 0.0
    batch_size: int = 16

    def validate(self) -> "PairSpec":
        """One-line errors for bad settings, before any work."""
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 2:
            raise BenchError(f"samples={self.samples!r}: a pair needs at least 2 samples per prompt; pass --samples 2 "
                             "or more")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise BenchError(f"temperature={self.temperature!r} must be > 0 (identical greedy samples make no pairs); "
                             "pass e.g. --temperature 1.0")
        if self.judge not in JUDGES:
            raise BenchError(f"unknown judge {self.judge!r}; choose {' or '.join(JUDGES)} (--judge)")
        if not 0.0 <= float(self.noise) < 0.5:
            raise BenchError(f"noise={self.noise!r} must be in [0, 0.5): the share of pairs whose verdict is swapped")
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BenchError(f"{name}={value!r} must be a positive integer")
        return self


# ------------------------------------------------------------------------------------------------------------------
# judges
class VerifiedJudge:
    """The embedded suite's checker: exact, so its noise (if any) is added by `pair_rows`."""

    name = "verified"

    def __init__(self, rows: list[dict]):
        from bench.pipeline.selection import has_checkers

        if not has_checkers(rows):
            raise BenchError("judge 'verified' needs prompts with the embedded suite's checkers (--prompts embedded); "
                             "for other prompts pass --judge rm")

    def identity(self) -> dict:
        from bench.data.suite import SUITE_VERSION

        return {"judge": "verified", "suite": SUITE_VERSION}

    def score(self, rows: list[dict], samples: list[list[str]]) -> list[list[float]]:
        from bench.data.suite import score_response

        return [[score_response(r["meta"], s) for s in group] for r, group in zip(rows, samples)]


class RMJudge:
    """A reward model (the RM evaluator's protocol and cache)."""

    name = "rm"

    def __init__(self, rm_model: str, settings: dict | None = None):
        from bench.scoring.reward_model import RewardScorer

        self.scorer = RewardScorer(rm_model, settings or {})
        self.scorer.identity()  # an unknown preset or a missing directory fails here, before any sampling

    def identity(self) -> dict:
        return {"judge": "rm", "rm": self.scorer.identity()}

    def score(self, rows: list[dict], samples: list[list[str]]) -> list[list[float]]:
        flat_prompts = [r["prompt"] for r, group in zip(rows, samples) for _ in group]
        flat, _ = self.scorer.score(flat_prompts, [s for group in samples for s in group])
        out, i = [], 0
        for group in samples:
            out.append(flat[i:i + len(group)])
            i += len(group)
        return out


def make_judge(spec: PairSpec, rows: list[dict]):
    spec.validate()
    return VerifiedJudge(rows) if spec.judge == "verified" else RMJudge(spec.rm_model)


# ------------------------------------------------------------------------------------------------------------------
# pairs from scored samples (pure)
def pair_rows(rows: list[dict], samples: list[list[str]], scores: list[list[float]], spec: PairSpec
              ) -> tuple[list[dict], dict]:
    """(preference rows, counts): per prompt, the best-scored sample against the worst-scored one (the first of
    equals), the verdict swapped with probability ``spec.noise``; prompts whose samples all score the same give no
    pair (``ties``; ``identical`` when the samples are the same text)."""
    rng = random.Random(f"prefdistill-pairs/{spec.seed}/{spec.noise}")
    with_checker = bool(rows) and all(isinstance(r.get("meta"), dict) and "family" in r["meta"] for r in rows)
    out, counts = [], {"prompts": len(rows), "pairs": 0, "ties": 0, "identical": 0, "swapped": 0}
    for row, group, sc in zip(rows, samples, scores):
        best = max(range(len(sc)), key=lambda i: (sc[i], -i))
        worst = min(range(len(sc)), key=lambda i: (sc[i], i))
        swapped = rng.random() < spec.noise  # drawn for every prompt, so one prompt's tie never shifts the others
        if sc[best] == sc[worst]:
            counts["ties"] += 1
            counts["identical"] += len(set(group)) == 1
            continue
        if swapped:
            best, worst = worst, best
            counts["swapped"] += 1
        meta = {**(row.get("meta") or {}), "judge": spec.judge, "scores": [float(s) for s in sc],
                "chosen_score": float(sc[best]), "rejected_score": float(sc[worst]), "swapped": swapped,
                "samples": len(group)}
        if with_checker:
            from bench.data.suite import score_response

            meta["chosen_verified"] = score_response(row["meta"], group[best])
            meta["rejected_verified"] = score_response(row["meta"], group[worst])
        out.append({"id": row["id"], "prompt": row["prompt"], "chosen": group[best], "rejected": group[worst],
                    "meta": meta})
    counts["pairs"] = len(out)
    return out, counts


# ------------------------------------------------------------------------------------------------------------------
# sampling and the cached stage
def sample_responses(model, tok, prompt_ids: list[list[int]], spec: PairSpec, desc: str = "sample") -> list[list[str]]:
    """``spec.samples`` responses per prompt at ``spec.temperature``, seeded (same seed, batch size and order: the
    same samples)."""
    import torch

    from bench.modeling.generate import HFGenerator, decode

    flat = [p for p in prompt_ids for _ in range(spec.samples)]
    gen = HFGenerator(model=model, tokenizer=tok, batch_size=spec.batch_size, do_sample=True,
                      temperature=float(spec.temperature))
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state untouched
        torch.manual_seed(spec.seed)
        outs = [decode(tok, o) for o in gen.generate(flat, spec.max_new_tokens, desc=desc)]
    return [outs[i:i + spec.samples] for i in range(0, len(outs), spec.samples)]


def pairs_key(policy_identity, prompt_ids: list[list[int]], rows: list[dict], spec: PairSpec, judge) -> dict:
    """The content key of a pairs stage: the policy (its content, or the key of the pipeline stage that makes it),
    the prompts' tokens and rows, the sampling settings, the judge and the code that samples and pairs."""
    from bench.store.identity import GENERATION_MODULES, code_version
    from bench.store.stages import token_hash

    return {"format": PAIRS_FORMAT, "policy": policy_identity, "prompts": token_hash(prompt_ids),
            "rows": token_hash([[r["id"], r.get("meta")] for r in rows]),
            "spec": {k: v for k, v in asdict(spec).items() if k != "rm_model"}, "judge": judge.identity(),
            "code": code_version(*GENERATION_MODULES, __name__)}


def pairs_stage(key: dict, sample, rows: list[dict], spec: PairSpec, judge) -> tuple[Path, dict]:
    """(pairs.jsonl, counts) of the stage `key`, built if missing: `sample()` returns the samples per row (called
    only when building; process 0 alone samples under several processes), the judge scores them, `pair_rows` pairs
    them."""
    from bench import dist
    from bench.store.files import atomic_write_json, write_jsonl
    from bench.store.stages import build_stage

    def build(tmp: Path) -> dict:
        if not dist.is_main():
            return {}
        samples = sample()
        pairs, counts = pair_rows(rows, samples, judge.score(rows, samples), spec)
        write_jsonl(tmp / "pairs.jsonl", pairs)
        atomic_write_json(tmp / "counts.json", counts)
        return counts

    path = build_stage("pairs", key, build)
    return path / "pairs.jsonl", json.loads((path / "counts.json").read_text())


def build_pairs(policy: str, rows: list[dict], spec: PairSpec, judge=None, max_prompt_len: int = 256
                ) -> tuple[Path, dict]:
    """(pairs.jsonl path in the cache, counts) for `policy` (a preset, HF id or directory) on `rows`; `judge` as
    made by `make_judge` (made here when not given)."""
    from bench.modeling.encoding import Encoder
    from bench.modeling.models import load_model, load_tokenizer, model_identity

    spec.validate()
    if not rows:
        raise BenchError("no prompts to make pairs from; check --prompts and --split")
    judge = judge or make_judge(spec, rows)
    tok = load_tokenizer(policy)
    enc = Encoder(tok, max_prompt_len, spec.max_new_tokens)
    prompt_ids = [enc.prompt_ids(r["prompt"], r["id"]) for r in rows]
    key = pairs_key(model_identity(policy), prompt_ids, rows, spec, judge)
    return pairs_stage(key, lambda: sample_responses(load_model(policy), tok, prompt_ids, spec,
                                                     desc=f"sample {spec.samples}x"), rows, spec, judge)


def write_pairs(policy: str, prompts: str, split: str, spec: PairSpec, out: Path, limit: int | None = None,
                data_seed: int = 0) -> str:
    """`bench pairs`: pairs for the `split` prompts of dataset `prompts`, written to `out` (atomically); returns the
    summary line."""
    from bench.data.resolve import resolve_dataset
    from bench.store.files import atomic_write_text

    if limit is not None and limit < 1:
        raise BenchError(f"--limit {limit} must be >= 1")
    if split not in ("sft", "pref_train", "pref_val", "test"):
        raise BenchError(f"--split {split} is not a split; pass sft, pref_train, pref_val or test")
    rows = resolve_dataset(prompts, seed=data_seed).split(split)[:limit]
    if not rows:
        raise BenchError(f"dataset '{prompts}' has no '{split}' rows; pass --split sft, pref_train, pref_val or test")
    path, counts = build_pairs(policy, rows, spec, judge=make_judge(spec, rows))
    text = path.read_text()
    atomic_write_text(out, text)
    summary = (f"{counts['pairs']} pairs from {counts['prompts']} prompts (ties {counts['ties']}, of them identical "
               f"samples {counts['identical']}; verdicts swapped {counts['swapped']})")
    made = [json.loads(line) for line in text.splitlines() if line.strip()]
    if made and "chosen_verified" in made[0]["meta"]:
        def mean(key: str) -> float:
            return 100 * sum(r["meta"][key] for r in made) / len(made)

        summary += (f"; verified score of the chosen side {mean('chosen_verified'):.1f}%, "
                    f"rejected {mean('rejected_verified'):.1f}%")
    return f"{summary} -> {out}"

