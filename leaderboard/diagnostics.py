"""`bench leaderboard --diagnostics`: per group of seeds, what explains its score: reward accuracy and margin on
the validation pairs, KL to the teacher on its own test responses (and where its SFT-student start was), the
checkpoint step each seed selected, the share of styled test prompts answered in the SFT demonstrator's house style
(the failure only the preference data corrects), and verified % per task family. Means over seeds; no intervals
(the main table has them)."""
from __future__ import annotations


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def diagnostics_rows(groups: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of text) for the groups, in their order."""
    families = sorted({f for g in groups for r in g["_runs"] for f in r["diagnostics"]["families"]})
    heads = ["method", "settings", "seeds", "reward acc (%)", "margin (nats)", "KL to teacher (nats)",
             "KL at start (nats)", "selected steps", "house style (%)"] + [f"{f} (%)" for f in families]
    rows = []
    for g in groups:
        runs = g["_runs"]
        d = [r["diagnostics"] for r in runs]
        rows.append([g["method"], g["settings"] or "–", str(g["n_seeds"]), _fmt(g.get("reward_acc"), 100),
                     _fmt(_mean([x["margin"] for x in d]), digits=2), _fmt(g.get("teacher_kl"), digits=3),
                     _fmt(_mean([x["teacher_kl_start"] for x in d]), digits=3),
                     "/".join("–" if x["selected_step"] is None else str(x["selected_step"]) for x in d),
                     _fmt(_mean([x.get("house_style") for x in d]), 100)]
                    + [_fmt(_mean([x["families"].get(f) for x in d]), 100) for f in families])
    return heads, rows


def references_line(groups: list[dict]) -> str:
    """The reference levels every run of the table shares (verified %), one line; empty when none."""
    from leaderboard.plots import REFERENCES, shared_references

    refs = shared_references(groups, (*(k for k, *_ in REFERENCES), "rejected"))
    labels = {key: text for key, text, *_ in REFERENCES} | {"rejected": "rejected side"}
    parts = [f"{labels[k]} {100 * v:.1f}" for k, v in refs.items() if v is not None]
    return ("Reference levels (verified %, the same for every run here): " + ", ".join(parts) + ".") if parts else ""


def to_markdown(groups: list[dict]) -> str:
    heads, rows = diagnostics_rows(groups)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    refs = references_line(groups)
    lines += ["", refs] if refs else []
    return "\n".join(lines) + "\n\nMeans over seeds. KL to teacher: token-mean KL(π_dpo ‖ π_θ) on the run's own " \
        "greedy test responses (`bench eval --suite teacher_kl`); KL at start: the SFT student's on the same states. " \
        "House style: share of the styled test prompts (each family's last template) answered in the SFT " \
        "demonstrator's habitual format.\n"


def to_rich(groups: list[dict]):
    from rich.table import Table

    heads, rows = diagnostics_rows(groups)
    table = Table(title="diagnostics (means over seeds)", caption=references_line(groups) or None)
    for i, h in enumerate(heads):
        table.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*r)
    return table
