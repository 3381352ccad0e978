"""Seeds are aggregated (mean, interval, count) with numbers checked by hand; settings tell every row apart; the
baseline test, filters, sorting, partial marks and the exports' structure."""
from __future__ import annotations

import json
import math
import re

import pytest
from scipy.stats import t as student_t
from typer.testing import CliRunner

import cli
from leaderboard import stats
from bench.store.rundir import RunDir
from leaderboard_kit import make_run

runner = CliRunner()
ITEMS = [f"t{i}" for i in range(8)]


def _items(correct: set[int]) -> dict[str, float]:
    return {k: float(i in correct) for i, k in enumerate(ITEMS)}


@pytest.fixture()
def board(tmp_path):
    root = tmp_path / "runs"
    # DPO: 3 seeds; DCKD: 3 seeds and clearly better; DPO beta=0.2: 1 seed; plus an MT-Bench score per run
    dpo = [{0, 1}, {0, 2}, {1, 2}]
    dckd = [{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 6}, {0, 1, 2, 3, 5, 6}]
    for s, c in enumerate(dpo):
        make_run(root, f"dpo-s{s}", seed=s, items={"verified": _items(c)},
                 metrics={"mtbench": {"score": 5.0 + s, "categories": {"writing": 5.0 + s, "math": 4.0}}})
    for s, c in enumerate(dckd):
        make_run(root, f"dckd-s{s}", method="dckd", seed=s, items={"verified": _items(c)},
                 metrics={"mtbench": {"score": 6.0 + s, "categories": {"writing": 7.0, "coding": 6.0}}})
    make_run(root, "dpo-b02", settings={"beta": 0.2}, items={"verified": _items({0})},
             metrics={"mtbench": {"score": 9.5, "partial": True}})
    return root


def _json(*args):
    result = runner.invoke(cli.app, ["leaderboard", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_seeds_are_grouped_with_hand_checked_means_and_intervals(board):
    out = _json("--runs", str(board))
    assert out["units"]["verified"] == "%" and out["units"]["mtbench"] == "1-10"
    rows = {(r["method"], r["settings"]): r for r in out["rows"]}
    dpo = rows[("DPO", "")]
    assert dpo["n_seeds"] == 3 and dpo["seeds"] == [0, 1, 2] and dpo["runs"] == ["dpo-s0", "dpo-s1", "dpo-s2"]
    assert dpo["verified"] == pytest.approx(100 * 6 / 24)  # 2 of 8 right in each seed
    iv = stats.bootstrap_ci([_items(c) for c in ({0, 1}, {0, 2}, {1, 2})])
    assert dpo["verified_ci"] == pytest.approx([100 * iv.low, 100 * iv.high])
    # MT-Bench has no per-item scores: Student t over the three seeds, by hand
    v = [5.0, 6.0, 7.0]
    half = student_t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert dpo["mtbench"] == pytest.approx(6.0) and dpo["mtbench_ci"] == pytest.approx([6 - half, 6 + half])
    assert sum(v) / 3 == dpo["mtbench"]
    single = rows[("DPO", "beta=0.2")]
    assert single["n_seeds"] == 1 and single["mtbench_ci"] is None and single["mtbench_partial"] is True


def test_baseline_paired_test_marks_the_clear_winner(board):
    rows = {(r["method"], r["settings"]): r for r in _json("--runs", str(board), "--baseline", "dpo")["rows"]}
    vs = rows[("DCKD", "")]["verified_vs"]
    assert vs["diff"] == pytest.approx(100 * (18 - 6) / 24) and vs["significant"] and vs["low"] > 0
    assert "verified_vs" not in rows[("DPO", "")]  # the baseline itself
    md = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--baseline", "dpo", "--format", "md"]).stdout
    (dckd_line,) = [line for line in md.splitlines() if line.startswith("| DCKD")]
    assert re.search(r"\*\*75\.0\*\* ± [0-9.]+\*", dckd_line)  # best and significantly better than DPO


def test_partial_evaluations_are_marked_and_never_bold(board):
    md = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--format", "md"]).stdout
    (partial,) = [line for line in md.splitlines() if "beta=0.2" in line]
    cells = partial.split("|")
    assert "9.50 †" in partial and "**9.50" not in partial
    assert any("**7.00**" in line for line in md.splitlines() if line.startswith("| DCKD"))  # best non-partial
    assert len(cells) > 5


def test_two_different_configurations_never_look_identical(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", items={"verified": _items({0})}, overrides={"student.train.lr": 1e-5})
    make_run(root, "b", items={"verified": _items({1})}, overrides={"student.train.lr": 2e-5})
    make_run(root, "c", items={"verified": _items({2})}, preset="mine")
    settings = [r["settings"] for r in _json("--runs", str(root))["rows"]]
    assert len(set(settings)) == 3
    assert "student.train.lr=1e-05" in settings and "student.train.lr=2e-05" in settings
    assert "preset=mine" in settings


def test_filter_and_sort(board):
    rows = _json("--runs", str(board), "--filter", "method=dckd")["rows"]
    assert [r["method"] for r in rows] == ["DCKD"]
    rows = _json("--runs", str(board), "--sort", "verified")["rows"]
    assert [r["verified"] for r in rows] == sorted((r["verified"] for r in rows), reverse=True)
    bad = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--sort", "nope"])
    assert bad.exit_code != 0


def test_latex_bold_best_underline_second_ties_and_partial(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "x1", items={"verified": _items({0, 1, 2})})                     # 37.5
    make_run(root, "x2", method="dckd", items={"verified": _items({3, 4, 5})})      # 37.5: tied best
    make_run(root, "x3", method="tvkd", items={"verified": _items({0})})            # 12.5: second
    make_run(root, "x4", method="sft", items={"verified": _items(set(range(8)))},   # 100 but partial
             metrics={"verified": {"score": 1.0, "partial": True, "items": _items(set(range(8)))}})
    tex = runner.invoke(cli.app, ["leaderboard", "--runs", str(root), "--format", "latex"]).stdout
    assert tex.count(r"\textbf{37.5}") == 2 and r"\underline{12.5}" in tex
    assert r"\textbf{100.0}" not in tex and r"100.0{\scriptsize$\pm$" in tex and r"\dagger" in tex
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", "verified (\\%)", "seeds"):
        assert token in tex
    html = runner.invoke(cli.app, ["leaderboard", "--runs", str(root), "--format", "html"]).stdout
    assert html.startswith("<!DOCTYPE html>") and "<script>" in html and "http" not in html.replace("<!DOCTYPE", "")
    assert html.count('class="num best"') >= 2 and "†" in html


def test_outputs_for_every_format_and_plots(board, tmp_path):
    for fmt in ("table", "md", "csv", "json", "latex", "html"):
        out = tmp_path / f"board.{fmt}"
        result = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0 and out.stat().st_size > 100, (fmt, result.output)
    assert "verified (%)" in (tmp_path / "board.csv").read_text().splitlines()[0]
    for suffix in ("png", "pdf"):
        bars, radar = tmp_path / f"bars.{suffix}", tmp_path / f"radar.{suffix}"
        result = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--plot", str(bars), "--radar",
                                         str(radar)])
        assert result.exit_code == 0, result.output
        assert bars.stat().st_size > 1000 and radar.stat().st_size > 1000
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "bars.pdf").read_bytes()[:4] == b"%PDF"


def test_bars_draw_the_reference_levels_the_runs_share_and_diagnostics_print_them(tmp_path, monkeypatch):
    import matplotlib.axes

    from leaderboard import plots
    from leaderboard.command import build_groups
    from leaderboard.diagnostics import to_markdown

    refs = {"dpo_teacher": 0.8, "sft_student": 0.2, "chosen": 0.64, "rejected": 0.3}
    root = tmp_path / "runs"
    make_run(root, "a", method="sft", items={"verified": _items({0, 1})}, references=refs)
    make_run(root, "b", method="dpo", items={"verified": _items({0})}, references={**refs, "dpo_teacher": None})
    make_run(root, "c", method="dckd", items={"verified": _items({2})})  # recorded none: the others' levels hold
    lines = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda self, y, *a, **k: (lines.append((y, k["label"])),
                                                                                   original(self, y, *a, **k))[1])
    groups = build_groups(root, baseline=None, filters=[], sort=None, per_run=False)
    plots.bars(groups, tmp_path / "b.png")
    assert sorted(lines) == [(20.0, "SFT student (the start): 20.0"),
                             (64.0, "chosen side of the student's pairs: 64.0"), (80.0, "π_dpo (DPO teacher): 80.0")]
    md = to_markdown(groups)
    assert "π_dpo (DPO teacher) 80.0, SFT student (the start) 20.0, chosen side of the student's pairs 64.0, " \
           "rejected side 30.0" in md
    # runs that disagree on a level (another teacher or data) draw no line for it
    make_run(root, "d", method="tvkd", items={"verified": _items({2})}, references={**refs, "chosen": 1.0})
    lines.clear()
    plots.bars(build_groups(root, baseline=None, filters=[], sort=None, per_run=False), tmp_path / "b2.png")
    assert sorted(y for y, _ in lines) == [20.0, 80.0]


def test_radar_draws_missing_categories_as_gaps(board, monkeypatch, tmp_path):
    import matplotlib.axes

    from leaderboard import plots
    from leaderboard.command import build_groups

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, x, y, *a, **k: (drawn.append(list(y)),
                                                                                 original(self, x, y, *a, **k))[1])
    groups = build_groups(board, baseline=None, filters=["method=dckd"], sort=None, per_run=False)
    plots.radar(groups, tmp_path / "r.png")
    (ys,) = drawn
    cats = list(plots.MTBENCH_CATEGORIES)
    assert ys[cats.index("writing")] == 7.0 and ys[cats.index("coding")] == 6.0
    assert math.isnan(ys[cats.index("math")]) and math.isnan(ys[cats.index("humanities")])  # gaps, not zeros


def test_sweep_plot_needs_the_parameter(board, tmp_path):
    ok = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--sweep-plot", "beta", "--sweep-out",
                                 str(tmp_path / "s.png")])
    assert ok.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 1000
    bad = runner.invoke(cli.app, ["leaderboard", "--runs", str(board), "--sweep-plot", "nope"])
    assert bad.exit_code != 0


def test_diagnostics_means_over_seeds_per_family(tmp_path):
    root = tmp_path / "diag"
    for seed, (margin, kl, step, fam, habit) in enumerate([(1.0, 0.4, 8, {"add": 0.0, "last": 0.5}, 0.25),
                                                           (2.0, 0.2, 16, {"add": 0.5, "last": 1.0}, 0.75)]):
        d = make_run(root, f"dckd-{seed}", method="dckd", seed=seed,
                     metrics={"reward_accuracy": {"score": 0.5 + seed / 4, "margin": margin},
                              "teacher_kl": {"score": kl, "sft_student": 0.9},
                              "verified": {"score": 0.3, "per_family": fam, "house_style": habit}})
        man = json.loads((d / "manifest.json").read_text())
        man["selected_step"] = step
        (d / "manifest.json").write_text(json.dumps(man))
        RunDir(d).finish()  # re-record the checksums of the edited manifest
    md = runner.invoke(cli.app, ["leaderboard", "--runs", str(root), "--diagnostics", "--format", "md"]).stdout
    head, rule, row = md.splitlines()[:3]
    cells = dict(zip([c.strip() for c in head.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["seeds"] == "2" and cells["reward acc (%)"] == "62.5" and cells["margin (nats)"] == "1.50"
    assert cells["KL to teacher (nats)"] == "0.300" and cells["KL at start (nats)"] == "0.900"
    assert cells["selected steps"] == "8/16" and cells["add (%)"] == "25.0" and cells["last (%)"] == "75.0"
    assert cells["house style (%)"] == "50.0"
    bad = runner.invoke(cli.app, ["leaderboard", "--runs", str(root), "--diagnostics", "--format", "latex"])
    assert bad.exit_code == 2 and "--diagnostics" in bad.output


def test_one_precision_per_column_for_significant_digit_metrics():
    """The KL columns are shown to 3 significant digits of the column's largest value, the same decimals for every
    row and its ± (the HTML export once showed `1.7 ± 0.0989` beside `1.79 ± 0.219`)."""
    from leaderboard.cells import build

    groups = [{"value_kl": 1.6963, "value_kl_ci": (1.6963 - 0.0989, 1.6963 + 0.0989)},
              {"value_kl": 1.7883, "value_kl_ci": (1.7883 - 0.219, 1.7883 + 0.219)}]
    cells = build(groups, ["value_kl"], [])
    assert [(c["value_kl"].text, c["value_kl"].ci) for c in cells] == [("1.70", "0.10"), ("1.79", "0.22")]
    small = build([{"value_kl": 0.5}, {"value_kl": 0.0123}], ["value_kl"], [])
    assert [c["value_kl"].text for c in small] == ["0.500", "0.012"]
    assert build([{"verified": 0.20512}], ["verified"], [])[0]["verified"].text == "20.5"  # fixed decimals stay
