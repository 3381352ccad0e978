"""Open LLM Leaderboard evaluator: lm_eval.simple_evaluate with an in-memory HFLM, offline tasks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import make_run, tiny_lm_dir  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators.oll import EMBEDDED_TASKS, OLL_V1, embedded_task_rows, materialize_embedded_tasks, parse_tasks  # noqa: E402
from bench.evaluators.run import run_evaluators  # noqa: E402

pytestmark = pytest.mark.timeout(300)

LOCAL_TASK = """task: local_colour_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


LOCAL_GROUP = """group: local_group
task:
  - local_colour_mc
  - local_colour_mc_b
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


def test_oll_v1_protocol_table():
    suite, tasks = parse_tasks(None)
    assert suite == "oll_v1"
    assert {t: s for t, (s, _) in tasks.items()} == {"arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0,
                                                     "mmlu": 5, "winogrande": 5, "gsm8k": 5}
    assert tasks["arc_challenge"][1] == "acc_norm,none" and tasks["gsm8k"][1] == "exact_match,strict-match"
    assert parse_tasks("embedded") == ("embedded", dict(EMBEDDED_TASKS))
    assert parse_tasks("arc_easy:0, my_task")[1] == {"arc_easy": (0, None), "my_task": (None, None)}
    assert parse_tasks({"mmlu": None})[1] == {"mmlu": (5, "acc,none")}
    assert parse_tasks(list(OLL_V1))[0] == "oll_v1"
    with pytest.raises(BenchError, match="NAME or NAME:SHOTS"):
        parse_tasks("arc:five")


def test_embedded_tasks_are_materialized_from_the_suite(tmp_path):
    rows = embedded_task_rows()
    mc, gen = rows["prefdistill_pref_mc"], rows["prefdistill_suite_gen"]
    from bench.data.suite import build_suite

    suite = build_suite()  # one task row per validation pair (multiple choice) and per test prompt (generation)
    assert [r["id"] for r in mc] == [r["id"] for r in suite.split("pref_val")]
    assert [r["id"] for r in gen] == [r["id"] for r in suite.split("test")]
    assert {r["label"] for r in mc} == {0, 1}  # the correct reply is not always first
    assert all(r["choices"][r["label"]] != r["choices"][1 - r["label"]] for r in mc)
    d = materialize_embedded_tasks(tmp_path)
    assert materialize_embedded_tasks(tmp_path) == d  # built once
    text = (d / "prefdistill_pref_mc.yaml").read_text()
    assert "dataset_path: json" in text and "__DATA_DIR__" not in text and str(d.resolve()) in text
    assert (d / "prefdistill_suite_gen.jsonl").exists() and (d / "utils.py").exists()


def test_simple_evaluate_on_the_embedded_and_a_local_task(tmp_path):
    run = make_run(tmp_path / "runs", "r", ckpt=tiny_lm_dir(seed=1, init_range=0.02))
    tasks_dir = tmp_path / "my_tasks"
    tasks_dir.mkdir()
    data = tasks_dir / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What colour is the sky on a clear day?", "choices": ["blue", "green", "red"], "label": 0},
        {"question": "What colour is fresh grass?", "choices": ["purple", "green", "black"], "label": 1},
        {"question": "What colour is snow?", "choices": ["orange", "grey", "white"], "label": 2},
    ]))
    (tasks_dir / "local_colour_mc.yaml").write_text(LOCAL_TASK.format(data=data))
    # a group of local tasks (like mmlu): its aggregate is read from lm_eval's "groups" block
    (tasks_dir / "local_colour_mc_b.yaml").write_text(
        LOCAL_TASK.format(data=data).replace("task: local_colour_mc", "task: local_colour_mc_b"))
    (tasks_dir / "local_group.yaml").write_text(LOCAL_GROUP)
    settings = {"oll_tasks": ["prefdistill_pref_mc", "prefdistill_suite_gen", "local_colour_mc", "local_group:0"],
                "oll_limit": 6, "include_path": str(tasks_dir), "oll_batch_size": 4}
    res = run_evaluators([run], ["oll"], settings, cache_dir=tmp_path / "cache")[str(run)]["oll"]
    assert res["suite"] == "custom" and res["limit"] == 6 and res["complete"] is False
    t = res["tasks"]
    assert t["prefdistill_pref_mc"]["metric"] == "acc,none" and t["prefdistill_pref_mc"]["n"] == 6
    assert t["prefdistill_suite_gen"]["metric"] == "suite_score,none"
    assert t["local_colour_mc"]["metric"] == "acc,none" and t["local_colour_mc"]["n"] == 3
    assert t["local_group"]["metric"] == "acc,none" and t["local_group"]["score"] == pytest.approx(
        t["local_colour_mc"]["score"])  # same data twice: the group mean equals the task's
    for v in t.values():
        assert 0.0 <= v["score"] <= 100.0
    assert res["score"] == pytest.approx(sum(v["score"] for v in t.values()) / 4)
    # per-task results are cached in the run dir: a rerun does not evaluate again
    cached = sorted(p.name for p in (run / "eval" / "oll").glob("*.json"))
    assert len(cached) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in (run / "eval" / "oll").glob("*.json")}
    again = run_evaluators([run], ["oll"], settings, cache_dir=tmp_path / "cache")[str(run)]["oll"]
    assert again["score"] == res["score"]
    assert {p: p.stat().st_mtime_ns for p in (run / "eval" / "oll").glob("*.json")} == mtimes


def test_unknown_task_and_bad_include_path_are_clear_errors(tmp_path):
    run = make_run(tmp_path / "runs", "r", ckpt=tiny_lm_dir(seed=1, init_range=0.02))
    with pytest.raises(BenchError, match="include_path .* is not a directory"):
        run_evaluators([run], ["oll"], {"oll_tasks": "embedded", "include_path": str(tmp_path / "nope")},
                       cache_dir=tmp_path / "cache")
    with pytest.raises(BenchError, match="oll_limit"):
        run_evaluators([run], ["oll"], {"oll_tasks": "embedded", "oll_limit": "lots"}, cache_dir=tmp_path / "cache")
    no_ckpt = make_run(tmp_path / "runs", "n")
    with pytest.raises(BenchError, match="has no checkpoint"):
        run_evaluators([no_ckpt], ["oll"], {"oll_tasks": "embedded"}, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_unknown_task_name_is_a_clear_error(tmp_path):
    # needs lm_eval's full task index (~15 s to build), hence slow
    run = make_run(tmp_path / "runs", "r", ckpt=tiny_lm_dir(seed=1, init_range=0.02))
    with pytest.raises(BenchError, match="unknown lm-eval task\\(s\\): no_such_task_xyz"):
        run_evaluators([run], ["oll"], {"oll_tasks": "no_such_task_xyz"}, cache_dir=tmp_path / "cache")
