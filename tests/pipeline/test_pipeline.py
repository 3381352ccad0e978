"""bench/pipeline/graph.py + bench/runs/run.py on the tiny models (`--preset tiny`): the run directory, and the stage/signal
caches shared between runs."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import bench.pipeline.signal_stages as signal_stages
from bench.config import RunConfig
from bench.errors import BenchError
from bench.modeling.forward import pad_batch, packed_forward
from bench.modeling.precision import autocast
from bench.paths import cache_root
from bench.pipeline.graph import Pipeline
from bench.store.files import read_jsonl
from bench.runs.run import run_pipeline
from bench.signals.compute import FORWARD_PASSES

pytestmark = pytest.mark.usefixtures("single_thread_module")


def complete_stage_dirs() -> set[str]:
    root = cache_root() / "stages"
    if not root.exists():
        return set()
    return {f"{d.parent.name}/{d.name}" for d in root.glob("*/*")
            if d.is_dir() and ((d / "stage.json").exists() or (d / "manifest.json").exists())}


# ---------------------------------------------------------------- the run directory


def test_run_dir_manifest(tiny_dpo_run):
    run, cfg = tiny_dpo_run
    m = run.manifest
    assert m["method"] == "dpo" and m["student"] == "tiny-random-student" and m["teacher"] == "tiny-random"
    assert m["seed"] == 0 and m["dataset"] == "embedded" and m["preset"] == "tiny"
    assert m["config"]["method"] == "dpo" and m["config"]["preset"] == "tiny"
    assert m["run_id"] == run.path.name
    for pkg in ("python", "torch", "transformers", "accelerate", "safetensors", "prefdistill-bench"):
        assert m["versions"].get(pkg), pkg
    assert set(m["data_hashes"]) == {"sft", "pref_train", "pref_val", "test"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in m["data_hashes"].values())
    assert m["suite_version"] == m["dataset_version"] and m["suite_version"].count(".") == 2
    assert m["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", m["git_commit"])
    assert set(m["truncation"]) == {"prompts", "prompts_truncated", "responses", "responses_truncated"}
    assert m["truncation"]["prompts"] > 0 and m["truncation"]["responses"] > 0
    assert "train:dpo" in m["timings"] and "generate:test" in m["timings"]
    assert all(v >= 0 for v in m["timings"].values())
    assert m["method_settings"] == {"beta": 0.05}
    assert m["run_preset"]["k"] == 8 and m["run_preset"]["sizes"]["test"] == 6
    assert m["selected_step"] in (2, 3)  # eval_every 2 over 3 steps: evaluated at 2 and 3


def test_run_dir_metrics_generations_and_checkpoint(tiny_dpo_run):
    run, _ = tiny_dpo_run
    metrics = run.metrics
    for name in ("verified", "reward_accuracy"):
        assert 0.0 <= metrics[name]["score"] <= 1.0, name
        assert metrics[name]["version"]
    assert metrics["reward_accuracy"]["n"] == 6 and metrics["verified"]["n"] == 6
    assert metrics["train"]["steps"] == 3 and math.isfinite(metrics["train"]["final_loss"])

    pipe_rows = Pipeline(RunConfig(**{**run.manifest["config"], "eval_suite": ()})).split_rows("test")
    gens = read_jsonl(run.generations_path)
    assert len(gens) == len(pipe_rows) == 6
    assert [g["id"] for g in gens] == [r["id"] for r in pipe_rows]
    for g, r in zip(gens, pipe_rows):
        assert isinstance(g["response"], str) and g["prompt"] == r["prompt"] and g["meta"] == r["meta"]

    log = json.loads((run.path / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3]
    assert [e["step"] for e in log["evals"]] == [2, 3]
    assert sum(bool(e.get("selected")) for e in log["evals"]) == 1
    assert not (run.path / "work").exists() and not (run.path / ".checkpoint.tmp").exists()

    model = AutoModelForCausalLM.from_pretrained(run.checkpoint_path)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert (run.checkpoint_path / "tokenizer.json").exists()
    ids = torch.tensor([[1, 42, 43, 2]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_same_config_twice_reuses_the_run(tiny_dpo_run, capsys):
    run, cfg = tiny_dpo_run
    stamp = {p.name: p.stat().st_mtime_ns for p in run.checkpoint_path.iterdir()}
    metrics = run.metrics_path.read_text()
    capsys.readouterr()
    again = run_pipeline(cfg)
    err = capsys.readouterr().err
    assert again.path == run.path
    assert "complete; reusing" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.checkpoint_path.iterdir()} == stamp
    assert run.metrics_path.read_text() == metrics


# ---------------------------------------------------------------- a second run shares every stage


@pytest.fixture(scope="module")
def second_run(tiny_dpo_run, tiny_run_config, tmp_path_factory):
    """A DPO run with another beta (and last-step selection) after the shared DPO run, with spies on every way the
    pipeline could redo work."""
    record = {"roles": [], "train_stage": [], "signal_fills": []}
    orig_model_dir = Pipeline.model_dir

    def model_dir(self, role):
        record["roles"].append(role)
        return orig_model_dir(self, role)

    def train_stage(self, role, out):
        record["train_stage"].append(role)
        raise AssertionError(f"stage {role} retrained")

    def compute(*a, **kw):
        record["signal_fills"].append(kw.get("desc"))
        raise AssertionError("signals recomputed")

    before_dirs, before_passes = complete_stage_dirs(), sum(FORWARD_PASSES.values())
    runs = tmp_path_factory.mktemp("second-runs")
    cfg = tiny_run_config(runs, method_settings={"beta": "0.2"}, stage_overrides={"select_by": "last"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Pipeline, "model_dir", model_dir)
        mp.setattr(Pipeline, "_train_stage", train_stage)
        mp.setattr(signal_stages, "sharded_signals", compute)
        mp.setattr(signal_stages, "compute_side_signals", compute)
        run = run_pipeline(cfg)
    # the stages this run used that were not there before (other pytest-xdist workers may add their own meanwhile)
    used = {e.split("/", 1)[1] for e in run.manifest["cache_entries"] if e.startswith("stages/")}
    record.update(run=run, new_dirs=used - before_dirs, passes=sum(FORWARD_PASSES.values()) - before_passes)
    return record


def test_second_method_run_recomputes_no_teacher_or_reference_pass(second_run, tiny_dpo_run):
    assert second_run["passes"] == 0
    assert second_run["signal_fills"] == [] and second_run["train_stage"] == []
    assert second_run["new_dirs"] == set()
    run = second_run["run"]
    first, _ = tiny_dpo_run
    assert run.path != first.path
    assert run.manifest["method_settings"] == {"beta": 0.2}
    assert run.manifest["selected_step"] == 3 and run.metrics["train"]["steps"] == 3
    assert 0 <= run.metrics["reward_accuracy"]["score"] <= 1
    # same student init and data, different beta: a different model
    a = AutoModelForCausalLM.from_pretrained(first.checkpoint_path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(run.checkpoint_path).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_student_run_builds_only_the_models_its_method_needs(second_run):
    """DPO needs the SFT student (its init and frozen reference) and nothing of the teacher. Recording the teacher's
    path in the manifest must not build (train) the SFT and DPO teachers for a run that never uses them: on the
    paper preset that is an 8B SFT + DPO run for the DPO baseline."""
    roles = set(second_run["roles"])
    assert "sft_student" in roles
    assert not roles & {"dpo_teacher", "ref_teacher", "chosen_teacher"}, roles


# ---------------------------------------------------------------- pipeline pieces (warm cache)


@pytest.fixture(scope="module")
def pipe(tiny_dpo_run):
    _, cfg = tiny_dpo_run
    return Pipeline(cfg)


def test_side_pairs_are_aligned_and_encoded(pipe):
    chosen = pipe.side_pairs("pref_train", "chosen", {})
    rejected = pipe.side_pairs("pref_train", "rejected", {})
    rows = pipe.split_rows("pref_train")
    assert len(chosen) == len(rejected) == len(rows) == 12
    for (pc, rc), (pr, rr), row in zip(chosen, rejected, rows):
        assert pc == pr == pipe.enc.prompt_ids(row["prompt"])
        assert len(rc) <= pipe.enc.max_response_len
        if len(rc) < pipe.enc.max_response_len:  # not truncated: the text, then EOS
            assert rc[-1] == pipe.tok.eos_token_id and pipe.tok.decode(rc[:-1]) == row["chosen"]
            assert rr[-1] == pipe.tok.eos_token_id
    sft = pipe.side_pairs("sft", "chosen", {})
    assert len(sft) == 16  # the sft split reads "response"


def test_cached_reference_logps_match_the_model(pipe):
    """The signal entry the DPO loss reads is the SFT student's log-probs of exactly the pairs the policy sees."""
    entry = pipe.signal_entry("sft_student", "chosen", "pref_train", {})
    pairs = pipe.side_pairs("pref_train", "chosen", {})
    model = pipe.load("sft_student").eval()
    batch = pad_batch(pairs[:5], pipe.tok.pad_token_id)
    with torch.no_grad(), autocast(pipe.stage_precision(), seq_len=batch.input_ids.shape[1]):  # as the signals were
        p = packed_forward(model, batch)
    want = p.token_logps()
    got = entry.gather("logps", list(range(5)))["logps"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    topk = entry.gather("topk", [0])
    assert topk["topk_ids"].shape == (len(pairs[0][1]), 8)  # k from the tiny preset


def test_model_keys_chain_the_stages(pipe):
    ref, dpo = pipe.model_key("ref_teacher"), pipe.model_key("dpo_teacher")
    assert dpo["init"] == ref and dpo["stage"] == "dpo_teacher"
    assert ref["init"]["model"] == "tiny-random"
    assert pipe.model_key("sft_student")["init"]["model"] == "tiny-random-student"
    assert pipe.model_key("dpo_teacher") == dpo  # deterministic
    with pytest.raises(BenchError, match="unknown model role"):
        pipe.model_key("no_such_role")
    d = pipe.model_dir("sft_student")
    assert (d / "stage.json").exists() and (d / "config.json").exists() and (d / "tokenizer.json").exists()
    assert not Path(str(d) + ".work").exists()


def test_teacher_stages_are_built_once_and_reused(tiny_dpo_run, monkeypatch):
    """The DPO teacher (SFT teacher -> its logps signals -> DPO) is built on first use; a second pipeline (another
    method, another beta) reuses the SFT and DPO teacher stages and their signals."""
    _, cfg = tiny_dpo_run
    first = Pipeline(cfg)
    dpo_dir = first.model_dir("dpo_teacher")
    ref_dir = first.model_dir("ref_teacher")
    for d in (dpo_dir, ref_dir):
        assert (d / "stage.json").exists() and (d / "config.json").exists()
        assert not Path(str(d) + ".work").exists()
    info = json.loads((dpo_dir / "stage.json").read_text())
    assert info["kind"] == "dpo_teacher" and info["steps"] == 2 and math.isfinite(info["final_loss"])
    assert first.built_path("dpo_teacher") == str(dpo_dir)

    def no_training(self, role, out):
        raise AssertionError(f"stage {role} retrained")

    monkeypatch.setattr(Pipeline, "_train_stage", no_training)
    second = Pipeline(tiny_run_cfg(cfg, method="sft", method_settings={}))
    assert second.model_dir("dpo_teacher") == dpo_dir and second.model_dir("ref_teacher") == ref_dir
    entry = second.signal_entry("dpo_teacher", "chosen", "pref_train", {})  # built now if no run needed it before
    passes = sum(FORWARD_PASSES.values())
    third = Pipeline(tiny_run_cfg(cfg, method="dpo", method_settings={"beta": "0.3"}))
    assert third.signal_entry("dpo_teacher", "chosen", "pref_train", {}).path == entry.path
    assert third.model_dir("dpo_teacher") == dpo_dir
    assert sum(FORWARD_PASSES.values()) == passes  # reused: no forward pass in this process


def tiny_run_cfg(cfg: RunConfig, **kw) -> RunConfig:
    return RunConfig(**{**cfg.to_dict(), **kw})


def test_missing_split_and_teacher_are_bench_errors(pipe, tiny_dirs):
    with pytest.raises(BenchError, match="no default teacher"):
        Pipeline(RunConfig(method="dpo", student="tiny-random", preset="tiny"))
    with pytest.raises(BenchError, match="unknown run preset 'nope'"):
        Pipeline(RunConfig(method="dpo", student="tiny-random-student", preset="nope"))



# ---------------------------------------------------------------- `bench run --resume`


def test_killed_run_resumes_to_the_same_model(tiny_dpo_run, tiny_run_config, tmp_path, monkeypatch):
    """Kill the student training right after its step-2 state is saved; `--resume` finishes it, and the result equals
    the uninterrupted run of the same config."""
    import bench.train.trainer as trainer_mod

    ref, cfg = tiny_dpo_run
    original = trainer_mod.save_state

    def save_then_die(directory, model, opt, sched, step, extra, fingerprint=None, full=None):
        original(directory, model, opt, sched, step, extra, fingerprint, full)
        if step == 2:
            raise KeyboardInterrupt

    runs = tmp_path / "runs"
    monkeypatch.setattr(trainer_mod, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny_run_config(runs))
    monkeypatch.setattr(trainer_mod, "save_state", original)
    killed = runs / ref.path.name
    assert (killed / "work" / "state-00000002" / "state.json").exists() and not (killed / "metrics.json").exists()

    resumed = run_pipeline(tiny_run_config(runs, resume=True))
    assert resumed.path == killed
    log = json.loads((killed / "train_log.json").read_text())
    ref_log = json.loads((ref.path / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3]
    assert [h["loss"] for h in log["history"]] == pytest.approx([h["loss"] for h in ref_log["history"]], abs=1e-6)
    assert resumed.manifest["selected_step"] == ref.manifest["selected_step"]
    a = AutoModelForCausalLM.from_pretrained(resumed.checkpoint_path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(ref.checkpoint_path).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    assert not (killed / "work").exists()


# ---------------------------------------------------------------- stage keys name everything a stage depends on

LOCAL_DATASET = Path(__file__).parents[1] / "fixtures" / "core" / "local_dataset"


@pytest.mark.parametrize("override", [{"k": 4}, {"select_by": "last"}, {"val_prompts": 3}, {"sizes.pref_val": 3}],
                         ids=["k", "select_by", "val_prompts", "pref_val-data"])
def test_student_run_key_covers_what_the_run_depends_on(pipe, tiny_run_config, tmp_path, override):
    """`run:<method>` is a cached stage (ADPA+ starts from `run:dckd`; a default-settings `bench run` registers its
    checkpoint under it). The DCKD student depends on the teacher top-k size k and on checkpoint selection
    (select_by, val_prompts, the pref_val rows), so a run with another k or selection must not reuse it."""
    other = Pipeline(tiny_run_config(tmp_path, stage_overrides=override))
    assert other.model_key("run:dckd") != pipe.model_key("run:dckd"), override


def test_equal_stage_keys_mean_equal_training(tiny_dirs, tiny_run_config, tmp_path):
    """Content addressing: two pipelines that compute the same key for a trained stage must train it identically.
    With a dataset that does not depend on --seed, the teacher/SFT-student keys are equal across seeds, but their
    training takes its seed (data order) from --seed: whichever seed runs first decides the cached teacher."""
    p0 = Pipeline(tiny_run_config(tmp_path, dataset=str(LOCAL_DATASET), seed=0))
    p1 = Pipeline(tiny_run_config(tmp_path, dataset=str(LOCAL_DATASET), seed=1))
    assert p0.bundle.hashes() == p1.bundle.hashes()  # the seed does not change this data
    for role in ("ref_teacher", "dpo_teacher", "sft_student"):
        if p0.model_key(role) == p1.model_key(role):
            assert p0._train_cfg(p0.stage_cfg(role)) == p1._train_cfg(p1.stage_cfg(role)), role
