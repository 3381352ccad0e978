"""Paper-ready exports: LaTeX (booktabs) and one standalone HTML file with sortable columns (no network)."""
from __future__ import annotations

import html
import json

from leaderboard.cells import ID_COLUMNS, ID_HEADERS, build, caption, cost_columns, id_text, metric_columns
from leaderboard.metrics import header

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _varying(groups: list[dict]) -> list[str]:
    """Identity columns worth a column in a paper table: method always, the others where rows differ."""
    return [c for c in ID_COLUMNS if c == "method" or len({id_text(g, c) for g in groups}) > 1]


def to_latex(groups: list[dict], cost: bool = False, baseline: str | None = None) -> str:
    cols = metric_columns(groups)
    costs = cost_columns(groups) if cost else []
    cells = build(groups, cols, costs)
    ids = _varying(groups)
    heads = [latex_escape(ID_HEADERS.get(c, c)) for c in ids] + [latex_escape(header(c)) for c in cols + costs]
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(ids) + "r" * len(cols + costs) + "}", r"\toprule",
             " & ".join(heads) + r" \\", r"\midrule"]
    for g, row in zip(groups, cells):
        out = [latex_escape(id_text(g, c)) for c in ids]
        for c in cols + costs:
            cell = row[c]
            text = cell.text if cell.text != "–" else "--"
            if cell.best:
                text = r"\textbf{" + text + "}"
            elif cell.second:
                text = r"\underline{" + text + "}"
            if cell.ci is not None:
                text += r"{\scriptsize$\pm$" + cell.ci + "}"
            marks = ("*" if cell.significant else "") + (r"\dagger" if cell.partial else "")
            if marks:
                text += "$^{" + marks + "}$"
            out.append(text)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(caption(groups, baseline))
              .replace("†", r"$^\dagger$").replace("±", r"$\pm$").replace("×", r"$\times$") + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.asc !== 'true';
    th.dataset.asc = asc;
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var r = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; }
th { cursor: pointer; border-bottom: 2px solid #333; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.best { font-weight: bold; }
.second { text-decoration: underline; }
.ci { font-size: 0.8em; color: #555; }
caption { caption-side: bottom; text-align: left; font-size: 0.85em; color: #444; padding-top: 1em; max-width: 60em; }
"""


def to_html(groups: list[dict], cost: bool = False, baseline: str | None = None) -> str:
    cols = metric_columns(groups)
    costs = cost_columns(groups) if cost else []
    cells = build(groups, cols, costs)
    heads = [ID_HEADERS.get(c, c) for c in ID_COLUMNS] + [header(c) for c in cols + costs]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>prefdistill-bench leaderboard</title>", f"<style>{_STYLE}</style></head><body>",
           "<h1>prefdistill-bench leaderboard</h1>", "<table>",
           f"<caption>{html.escape(caption(groups, baseline))} Click a header to sort.</caption>",
           "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for g, row in zip(groups, cells):
        tds = [f'<td data-v="{html.escape(id_text(g, c))}">{html.escape(id_text(g, c))}</td>' for c in ID_COLUMNS]
        for c in cols + costs:
            cell = row[c]
            cls = "num" + (" best" if cell.best else " second" if cell.second else "")
            text = html.escape(cell.text)
            if cell.ci is not None:
                text += f' <span class="ci">± {html.escape(cell.ci)}</span>'
            text += ("*" if cell.significant else "") + (" †" if cell.partial else "")
            value = "" if cell.value is None else json.dumps(cell.value)
            tds.append(f'<td class="{cls}" data-v="{value}">{text}</td>')
        out.append("<tr>" + "".join(tds) + "</tr>")
    out += ["</tbody></table>", f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(out) + "\n"
