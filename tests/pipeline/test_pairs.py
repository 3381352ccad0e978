"""Pair-making (bench/pipeline/pairs.py, `bench pairs`): best against worst of K judged samples, ties give no pair,
the verdict swapped at the asked rate, a checker and a reward model as judges, a cached stage, and bad settings
stopped before any work with one error line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.data.suite import build_suite, score_response
from bench.errors import BenchError
from bench.pipeline.pairs import PairSpec, RMJudge, VerifiedJudge, build_pairs, pair_rows
from cli_kit import assert_one_line_error, bench_main

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import tiny_rm_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_module")


def _rows(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}], "meta": {}} for i in range(n)]


def test_best_against_worst_first_of_equals_and_ties_give_no_pair():
    rows = _rows(4)
    samples = [["a", "b", "c"], ["x", "y", "z"], ["same", "same", "same"], ["u", "v", "w"]]
    scores = [[0.2, 0.9, 0.1], [0.5, 0.5, 0.0], [0.3, 0.3, 0.3], [0.7, 0.7, 0.7]]
    pairs, counts = pair_rows(rows, samples, scores, PairSpec(samples=3))
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("p0", "b", "c"), ("p1", "x", "z")]
    assert counts == {"prompts": 4, "pairs": 2, "ties": 2, "identical": 1, "swapped": 0}
    meta = pairs[0]["meta"]
    assert meta["scores"] == [0.2, 0.9, 0.1] and meta["chosen_score"] == 0.9 and meta["rejected_score"] == 0.1
    assert meta["judge"] == "verified" and meta["swapped"] is False and "chosen_verified" not in meta


def test_noise_swaps_verdicts_reproducibly_and_independently_of_ties():
    rows = _rows(200)
    samples = [["good", "bad"]] * 200
    scores = [[1.0, 0.0]] * 200
    spec = PairSpec(samples=2, noise=0.3, seed=5)
    pairs, counts = pair_rows(rows, samples, scores, spec)
    swapped = [p["id"] for p in pairs if p["meta"]["swapped"]]
    assert counts["swapped"] == len(swapped) > 0
    assert all(p["chosen"] == "bad" and p["meta"]["chosen_score"] < p["meta"]["rejected_score"]
               for p in pairs if p["meta"]["swapped"])
    assert pair_rows(rows, samples, scores, spec)[0] == pairs  # same seed, same swaps
    # a tie on one prompt does not change which other prompts are swapped
    tied = [[0.5, 0.5]] + scores[1:]
    again = {p["id"] for p in pair_rows(rows, samples, tied, spec)[0] if p["meta"]["swapped"]}
    assert again == set(swapped) - {"p0"}
    assert pair_rows(rows, samples, scores, PairSpec(samples=2, noise=0.0))[1]["swapped"] == 0


def test_verified_judge_scores_with_the_suite_checker_and_keeps_both_sides_quality():
    rows = build_suite(0, sizes={"sft": 0, "pref_train": 16, "pref_val": 0, "test": 0}).split("pref_train")
    judge = VerifiedJudge(rows)
    samples = [[r["rejected"], r["chosen"], r["rejected"]] for r in rows]
    scores = judge.score(rows, samples)
    assert scores == [[score_response(r["meta"], s) for s in g] for r, g in zip(rows, samples)]
    pairs, counts = pair_rows(rows, samples, scores, PairSpec(samples=3))
    assert counts["pairs"] == len(rows) and all(p["chosen"] == r["chosen"] for p, r in zip(pairs, rows))
    assert all(p["meta"]["chosen_verified"] == 1.0 > p["meta"]["rejected_verified"] for p in pairs)
    assert all(p["meta"]["family"] == r["meta"]["family"] for p, r in zip(pairs, rows))


def test_verified_judge_refuses_prompts_without_checkers():
    with pytest.raises(BenchError, match="judge 'verified' needs prompts with the embedded suite's checkers"):
        VerifiedJudge(_rows(2))


def test_rm_judge_orders_the_pair_by_the_reward_model(tiny_dirs):
    from bench.scoring.reward_model import RewardScorer

    rows = _rows(3)
    samples = [["short", "a much longer answer", "zz"], ["1", "2", "3"], ["yes", "no", "maybe"]]
    judge = RMJudge(str(tiny_rm_dir()))
    scores = judge.score(rows, samples)
    direct, _ = RewardScorer(str(tiny_rm_dir())).score([r["prompt"] for r in rows for _ in range(3)],
                                                        [s for g in samples for s in g])
    assert [x for g in scores for x in g] == pytest.approx(direct)
    pairs, _ = pair_rows(rows, samples, scores, PairSpec(samples=3, judge="rm"))
    for p, sc, g in zip(pairs, scores, samples):
        assert p["chosen"] == g[sc.index(max(sc))] and p["rejected"] == g[sc.index(min(sc))]


def test_a_policy_with_identical_samples_makes_no_pairs_and_the_stage_is_cached(tiny_dirs, monkeypatch):
    """Near-greedy sampling of the tiny model: the K samples of a prompt are the same text, so every prompt ties."""
    import bench.pipeline.pairs as pairs_mod

    rows = build_suite(0, sizes={"sft": 0, "pref_train": 0, "pref_val": 4, "test": 0}).split("pref_val")
    spec = PairSpec(samples=2, temperature=1e-4, max_new_tokens=4)
    path, counts = build_pairs("tiny-random-student", rows, spec)
    assert counts == {"prompts": 4, "pairs": 0, "ties": 4, "identical": 4, "swapped": 0}
    assert path.read_text() == ""
    monkeypatch.setattr(pairs_mod, "sample_responses", lambda *a, **k: pytest.fail("sampled again"))
    assert build_pairs("tiny-random-student", rows, spec) == (path, counts)


def test_bench_pairs_writes_pairs_a_run_can_read(tiny_dirs, tmp_path, monkeypatch, capsys):
    from bench.data.resolve import resolve_dataset

    out = tmp_path / "pairs.jsonl"
    args = ["pairs", "--policy", "tiny-random-student", "--split", "pref_val", "--limit", "6", "--samples", "3",
            "--max-new-tokens", "6", "--judge", "rm", "--rm-model", str(tiny_rm_dir()), "--out", str(out)]
    code, stdout, err = bench_main(monkeypatch, capsys, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert stdout.startswith(f"{len(rows)} pairs from 6 prompts") and str(out) in stdout
    assert rows and all(r["chosen"] != r["rejected"] and r["meta"]["chosen_score"] > r["meta"]["rejected_score"]
                        for r in rows)
    assert all({"chosen_verified", "rejected_verified", "scores", "family"} <= set(r["meta"]) for r in rows)
    assert len(resolve_dataset(str(out)).split("pref_train")) + len(resolve_dataset(str(out)).split("pref_val")) \
        == len(rows)
    # --out exists: refused unless --force
    code, _, err = bench_main(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "--out", "exists", "--force")
    assert bench_main(monkeypatch, capsys, *args, "--force")[0] == 0


@pytest.mark.parametrize("extra, needles", [
    (["--samples", "1"], ["samples=1", "at least 2"]),
    (["--temperature", "0"], ["temperature=0.0", "> 0"]),
    (["--temperature", "-1"], ["temperature=-1.0", "> 0"]),
    (["--judge", "oracle"], ["unknown judge 'oracle'", "verified or rm"]),
    (["--judge", "rm", "--rm-model", "no-such-rm"], ["unknown RM preset 'no-such-rm'"]),
    (["--noise", "0.5"], ["noise=0.5"]),
    (["--prompts", "examples/prefs.jsonl"], ["judge 'verified' needs prompts with the embedded suite's checkers"]),
])
def test_bad_settings_fail_before_any_work(tmp_path, monkeypatch, capsys, extra, needles):
    import bench.pipeline.pairs as pairs_mod

    monkeypatch.setattr(pairs_mod, "sample_responses", lambda *a, **k: pytest.fail("worked before failing"))
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "p.jsonl"
    code, _, err = bench_main(monkeypatch, capsys, "pairs", "--policy", "tiny-random-student", "--out", str(out),
                              *extra)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()
