"""The project's method reference (docs/METHODS.md), rendered from the installed plugins by
`bench methods --format md`: each plugin's equation, deviations and ablations (its module docstring), its
declarations and every setting with its default and the source of that default. tests/core/test_method_docs.py fails
when docs/METHODS.md and the plugins disagree; regenerate with `bench methods --format md > docs/METHODS.md`."""
from __future__ import annotations

from typing import Any

HEADER = """# Method reference

Generated from the method plugins by `bench methods --format md` (do not edit by hand: the test suite fails when
this file and the plugins disagree; regenerate with `bench methods --format md > docs/METHODS.md`).

Notation. x prompt; y = (y_1..y_T) response tokens; s_t = (x, y_<t). Only response tokens count in any sum or
mean. log π(y|x) = Σ_t log π(y_t|s_t). σ = sigmoid, sg = stop-gradient. π_θ the student being trained; π_sref the
frozen student reference (the SFT student); π_ref the teacher reference (the SFT teacher); π_dpo the DPO teacher
(π_ref after DPO). Teacher and student share one tokenizer and embedding size (checked before any work).

Teacher top-k signal (computed once per model and data, cached, shared by every method that declares it): for each
response position, the teacher's top-k token ids, their log-probs under the full softmax (float16, rounded toward
−inf) and the tail mass r = 1 − Σ exp(stored top-k log-probs), so the k+1 bins sum to 1. "Sparse KL" is the KL
over these k+1 bins against the student's full-softmax probabilities at the same ids plus its remaining mass
(`bench.tensors.sparse_kl`); it is exact when k ≥ V−1. Values signal: per state s_1..s_{T+1} (s_{T+1} = after the
last token) the soft value τ·logsumexp(z/τ), logsumexp z, max z, E_π[z], top-1 − top-2 logit and the logit of the
next token. "Token mean" is over the batch's response tokens. Losses compute in float32 at least.

A setting's source says where its default comes from: a paper (equation, table, section), the authors' released
code, or "our choice". Where the released code differs from the paper, the paper is the default and the code's
behaviour an option, as each plugin's text says.
"""


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _range(s: dict) -> str:
    if s.get("choices"):
        return " | ".join(_value(c) for c in s["choices"])
    lo, hi = s.get("min"), s.get("max")
    if s.get("above") is not None:
        return f"{s['type']} > {_value(s['above'])}"
    if lo is not None and hi is not None:
        return f"{s['type']} in [{_value(lo)}, {_value(hi)}]"
    if lo is not None or hi is not None:
        return f"{s['type']} {'≥ ' + _value(lo) if lo is not None else '≤ ' + _value(hi)}"
    return s["type"]


def method_section(info: dict) -> str:
    lines = [f"## `{info['name']}` — {info['display_name']}", "", f"*{info['citation']}*", ""]
    if info.get("doc"):
        lines += [info["doc"], ""]
    lines += [f"- sides (policy passes): {', '.join(info['sides']) or '–'}",
              f"- cached signals: {', '.join(info['signals']) or '–'}",
              f"- frozen reference run online: {info['reference'] or 'no'}",
              f"- initialised from: {info['init_from']}", ""]
    if info["settings"]:
        lines += ["| setting | default | values | source of the default | meaning |", "|---|---|---|---|---|"]
        for s in info["settings"]:
            lines.append(f"| `{s['name']}` | {_cell(_value(s['default']))} | {_cell(_range(s))} | "
                         f"{_cell(s['source'])} | {_cell(s['help'])} |")
        lines.append("")
    else:
        lines += ["No settings.", ""]
    if info.get("module_doc"):
        lines += ["Definition, deviations from the paper and the authors' code, ablations:", "", "```text",
                  info["module_doc"], "```", ""]
    return "\n".join(lines)


def methods_markdown(infos: list[dict]) -> str:
    """docs/METHODS.md for the given `describe()` dicts (sorted by name)."""
    infos = sorted(infos, key=lambda i: i["name"])
    toc = ["| method | name | reference |", "|---|---|---|"]
    toc += [f"| [`{i['name']}`](#{_anchor(i['name'] + ' — ' + i['display_name'])}) | {i['display_name']} "
            f"| {_cell(i['citation'])} |" for i in infos]
    return "\n".join([HEADER, *toc, "", *[method_section(i) for i in infos]]).rstrip() + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor for the part after the em dash (lower case, spaces to '-', punctuation dropped)."""
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return keep.replace(" ", "-")
