"""The leaderboard's columns: where each metric is read from, its unit, its direction, and the cost columns."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    col: str          # column key
    evaluator: str    # metrics.json section
    field: str        # field of that section
    label: str        # header text (the unit is appended)
    unit: str         # unit of the displayed value
    scale: float      # stored value × scale = displayed value
    higher: bool      # higher is better
    digits: int = 1   # decimals ("f") or significant digits ("g")
    fmt: str = "f"


METRICS = [
    Metric("verified", "verified", "score", "verified", "%", 100, True),
    Metric("reward_acc", "reward_accuracy", "score", "reward acc", "%", 100, True),
    Metric("rm", "rm", "score", "RM", "score", 1, True, 2),
    Metric("mtbench", "mtbench", "score", "MT-Bench", "1-10", 1, True, 2),
    Metric("alpaca_wr", "alpacaeval", "score", "AlpacaEval WR", "%", 1, True),
    Metric("alpaca_lc", "alpacaeval", "length_controlled_winrate", "AlpacaEval LC", "%", 1, True),
    Metric("oll_avg", "oll", "score", "OLL avg", "%", 1, True),
    Metric("value_kl", "value_kl", "score", "value KL", "nats", 1, False, 3, "g"),  # KLs can be << 0.01
    Metric("teacher_kl", "teacher_kl", "score", "KL to teacher", "nats", 1, False, 3, "g"),
]
BY_COL = {m.col: m for m in METRICS}

# cost columns (shown with --cost): key -> (header, unit, digits); all "lower is better" except tokens/s
COSTS = {
    "teacher_stages": ("teacher models", "stages", 0),
    "teacher_passes": ("teacher fwd", "passes", 0),
    "teacher_tokens": ("teacher tok", "k tok", 1),
    "cache_mb": ("signal cache", "MB", 2),
    "cache_bytes_per_token": ("cache", "B/tok", 0),
    "samples": ("samples", "seq", 0),
    "train_s": ("student train", "s", 1),
    "tokens_per_s": ("train speed", "tok/s", 0),
    "peak_rss_gb": ("peak RSS", "GB", 2),
    "peak_gpu_gb": ("peak GPU", "GB", 2),
    "total_s": ("total (amortised)", "s", 1),
}
COST_HIGHER = {"tokens_per_s"}
TEACHER_ROLES = ("ref_teacher", "dpo_teacher", "rdpo_teacher", "chosen_teacher")


def header(col: str) -> str:
    if col in BY_COL:
        m = BY_COL[col]
        return f"{m.label} ({m.unit})"
    label, unit, _ = COSTS[col]
    return f"{label} ({unit})"


def units() -> dict[str, str]:
    return {**{m.col: m.unit for m in METRICS}, **{k: v[1] for k, v in COSTS.items()}}
