"""Group runs that differ only in their seed: mean, 95% interval and seed count per metric, a paired test against a
baseline method, and cost columns with shared stages amortised over the runs that used them."""
from __future__ import annotations

from collections import Counter, defaultdict

from bench.errors import BenchError
from leaderboard import stats
from leaderboard.metrics import METRICS, TEACHER_ROLES

ID_FIELDS = ("method", "method_name", "settings", "student", "teacher", "dataset", "preset")


def _interval(runs: list[dict], col: str) -> stats.Interval | None:
    values = [r["metrics"][col] for r in runs if r["metrics"].get(col) is not None]
    if not values:
        return None
    if len(values) == len(runs) and all(r["items"].get(col) for r in runs):
        try:
            return stats.bootstrap_ci([r["items"][col] for r in runs])
        except ValueError:
            pass
    return stats.t_interval(values)


def _stage_users(rows: list[dict]) -> Counter:
    """How many runs of the table used each stage (directly or through a dependency)."""
    users = Counter()
    for r in rows:
        for st in r["cost"].get("stages") or []:
            users[st["path"]] += 1
    return users


def run_costs(row: dict, users: Counter) -> dict[str, float | None]:
    """The cost columns of one run (see leaderboard.metrics.COSTS)."""
    c = row["cost"]
    if not c:
        return {}
    stages = c.get("stages") or []
    teacher = [s for s in stages if s["kind"] in ("signals", "generations")
               and any(r in TEACHER_ROLES for r in str((s["cost"] or {}).get("role")).split("+"))]
    direct_signals = [s for s in stages if s["kind"] == "signals" and s["direct"]]
    cache_bytes = sum(s["cost"].get("bytes", 0) for s in direct_signals)
    rows_ = sum(s["cost"].get("rows", 0) for s in direct_signals)
    amortised = sum((s["cost"] or {}).get("seconds", 0.0) / max(users[s["path"]], 1) for s in stages)
    gb = 1024 ** 3
    return {
        "teacher_stages": sum(1 for s in stages if s["kind"] in TEACHER_ROLES),
        "teacher_passes": sum(s["cost"].get("forward_passes", 0) for s in teacher),
        "samples": sum(s["cost"].get("sequences", 0) for s in stages if s["kind"] == "samples") or None,
        "teacher_tokens": sum(s["cost"].get("tokens", 0) for s in teacher) / 1000,
        "cache_mb": cache_bytes / 1024 ** 2,
        "cache_bytes_per_token": cache_bytes / rows_ if rows_ else None,
        "train_s": c.get("train_seconds"),
        "tokens_per_s": c.get("tokens_per_s"),
        "peak_rss_gb": c["peak_rss_bytes"] / gb if c.get("peak_rss_bytes") else None,
        "peak_gpu_gb": c["peak_gpu_bytes"] / gb if c.get("peak_gpu_bytes") else None,
        "total_s": (c.get("wall_seconds") or 0.0) + amortised,
    }


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def aggregate(rows: list[dict], baseline: str | None = None) -> list[dict]:
    """One row per group of seeds (see module docstring); keys per metric: value, `<col>_ci` (low, high) or None,
    `<col>_interval` (how), `<col>_partial`, and with a baseline `<col>_vs` (diff, low, high, p, significant)."""
    users = _stage_users(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    out = []
    for gid, runs in groups.items():
        runs.sort(key=lambda r: (r["seed"] is None, r["seed"]))
        first = runs[0]
        g = {**{k: first[k] for k in ID_FIELDS}, "group": gid, "seeds": [r["seed"] for r in runs],
             "n_seeds": len(runs), "runs": [r["run"] for r in runs], "run": ";".join(r["run"] for r in runs),
             "params": first["params"], "_runs": runs,
             "mtbench_categories": _mean_categories(runs)}
        for m in METRICS:
            iv = _interval(runs, m.col)
            g[m.col] = iv.mean if iv else None
            g[f"{m.col}_ci"] = (iv.low, iv.high) if iv and iv.low is not None else None
            g[f"{m.col}_interval"] = iv.method if iv else None
            g[f"{m.col}_partial"] = any(r["partial"].get(m.col) for r in runs)
        costs = [run_costs(r, users) for r in runs]
        g["cost"] = {k: _mean([c.get(k) for c in costs]) for k in (costs[0] if costs else {})}
        g["train_s"] = _mean([r["train_s"] for r in runs])
        out.append(g)
    _disambiguate(out)
    if baseline:
        _compare(out, baseline)
    return out


def _mean_categories(runs: list[dict]) -> dict[str, float]:
    cats = sorted({c for r in runs for c in r["mtbench_categories"]})
    return {c: _mean([r["mtbench_categories"].get(c) for r in runs]) for c in cats}


def _disambiguate(groups: list[dict]) -> None:
    """Two different groups never look identical: equal visible fields get the group id appended."""
    seen = Counter((g["method"], g["settings"], g["student"], g["teacher"], g["dataset"]) for g in groups)
    for g in groups:
        if seen[(g["method"], g["settings"], g["student"], g["teacher"], g["dataset"])] > 1:
            g["settings"] = (g["settings"] + "," if g["settings"] else "") + f"#{g['group'][:6]}"


def _compare(groups: list[dict], baseline: str) -> None:
    bases = [g for g in groups if baseline in (g["method_name"], g["method"])]
    if not bases:
        raise BenchError(f"--baseline {baseline}: no runs of that method in the table; pick one of "
                         f"{', '.join(sorted({g['method_name'] for g in groups}))}")
    for g in groups:
        same = [b for b in bases if (b["student"], b["teacher"], b["dataset"]) ==
                (g["student"], g["teacher"], g["dataset"]) and b is not g]
        if not same or g in bases and not g["settings"]:
            continue
        base = min(same, key=lambda b: (b["settings"] != "", b["preset"] != g["preset"], b["settings"]))
        g["baseline"] = f"{base['method']}" + (f" ({base['settings']})" if base["settings"] else "")
        for m in METRICS:
            a_items = [r["items"].get(m.col) for r in g["_runs"]]
            b_items = [r["items"].get(m.col) for r in base["_runs"]]
            if all(a_items) and all(b_items):
                try:
                    t = stats.paired_bootstrap(a_items, b_items)
                except ValueError:
                    continue
                g[f"{m.col}_vs"] = {"diff": t.diff, "low": t.low, "high": t.high, "p": t.p_value,
                                    "significant": t.significant}


def sort_groups(groups: list[dict], key: str | None) -> list[dict]:
    from leaderboard.metrics import BY_COL, COST_HIGHER, COSTS

    if key is None:
        return sorted(groups, key=lambda g: (g["student"] or "", g["dataset"] or "", -(g.get("verified") or -1e9),
                                             g["method"], g["settings"]))
    if key in BY_COL:
        sign = -1 if BY_COL[key].higher else 1
        return sorted(groups, key=lambda g: (g.get(key) is None, sign * (g.get(key) or 0)))
    if key in COSTS:
        sign = -1 if key in COST_HIGHER else 1
        return sorted(groups, key=lambda g: (g["cost"].get(key) is None, sign * (g["cost"].get(key) or 0)))
    if key in ID_FIELDS or key == "n_seeds":
        return sorted(groups, key=lambda g: str(g.get(key)))
    raise BenchError(f"--sort {key!r} is not a column; use a metric ({', '.join(BY_COL)}), a cost column "
                     f"({', '.join(COSTS)}) or one of {', '.join(ID_FIELDS)}")
