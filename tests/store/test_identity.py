"""Identity = content: an edited dataset, replaced model weights at the same path or an edited preset file give a
new run (never a silently reused one); a changed configuration under a fixed name is refused with what changed,
on a rerun and on --resume alike."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from safety_kit import TINY, bench, new_cache, one_error_line, run_dirs, weights

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(600), pytest.mark.heavy]
LOCAL = Path(__file__).parents[1] / "fixtures" / "core" / "local_dataset"
LOCAL_SETS = ["--set", "select_by=reward_accuracy"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bench_cache, tiny_dirs):
    return new_cache(tmp_path_factory.mktemp("identity") / "cache", bench_cache)


def _run(cache, runs, *extra):
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), *extra], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1].split(" ", 1)[0])


def test_an_edited_local_dataset_gives_a_new_run(cache, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(LOCAL, data)
    runs = tmp_path / "runs"
    first = _run(cache, runs, "--dataset", str(data), *LOCAL_SETS)
    rows = (data / "train.jsonl").read_text().splitlines()
    row = json.loads(rows[0])
    row["chosen"] = row["chosen"] + " (edited)"
    (data / "train.jsonl").write_text("\n".join([json.dumps(row), *rows[1:]]) + "\n")
    second = _run(cache, runs, "--dataset", str(data), *LOCAL_SETS)
    assert second != first and len(run_dirs(runs)) == 2
    h1, h2 = (json.loads((p / "manifest.json").read_text())["data_hashes"]["pref_train"] for p in (first, second))
    assert h1 != h2
    assert json.loads((first / ".bench-run.json").read_text())["state"] == "finished"  # the old run is untouched


def test_replaced_weights_at_the_same_path_give_a_new_sft_stage_and_run(cache, tmp_path, tiny_dirs):
    student = tmp_path / "student"
    shutil.copytree(tiny_dirs["tiny-random-student"], student)
    runs = tmp_path / "runs"
    args = ["--student", str(student), "--teacher", "tiny-random", "--preset", "tiny"]
    proc = bench(["run", "--method", "dpo", *args, "--runs", str(runs)], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages_before = {p.name for p in (cache / "stages" / "sft_student").iterdir() if not p.name.startswith(".")}
    # same path, other weights (the tiny teacher has the same shapes)
    shutil.copy(tiny_dirs["tiny-random"] / "model.safetensors", student / "model.safetensors")
    again = bench(["run", "--method", "dpo", *args, "--runs", str(runs)], cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing it" not in again.stderr and len(run_dirs(runs)) == 2
    stages_after = {p.name for p in (cache / "stages" / "sft_student").iterdir() if not p.name.startswith(".")}
    assert len(stages_after - stages_before) == 1  # a new SFT student, built from the new weights
    ids = [json.loads((p / "manifest.json").read_text())["model_identities"]["student"] for p in run_dirs(runs)]
    assert ids[0] != ids[1]


def test_an_edited_preset_file_gives_a_new_run(cache, tmp_path):
    from bench.paths import CONFIG_DIR

    preset = tmp_path / "mine.yaml"
    shutil.copy(CONFIG_DIR / "runs" / "tiny.yaml", preset)
    runs = tmp_path / "runs"
    base = ["--student", "tiny-random-student", "--preset", str(preset)]
    first = _run(cache, runs, *base)
    preset.write_text(preset.read_text().replace("student:        {train: {lr: 1.0e-3", "student:        {train: {lr: 2.0e-3"))
    second = _run(cache, runs, *base)
    assert first != second
    assert json.loads((second / "manifest.json").read_text())["run_preset"]["student"]["train"]["lr"] == 2.0e-3


def test_a_changed_config_under_a_fixed_name_is_refused_naming_the_change(cache, tmp_path):
    runs = tmp_path / "runs"
    killed = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "fixed"], cache,
                   fault="state-save:2")
    assert killed.returncode != 0
    w_before = weights(runs / "fixed" / "work" / "state-00000002" / "model")
    changed = ["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "fixed",
               "--set", "student.train.lr=5e-3"]
    one_error_line(bench([*changed, "--resume"], cache), "unfinished run of a different configuration",
                   "student.train.lr")
    one_error_line(bench(changed, cache), "different configuration", "student.train.lr")
    after = weights(runs / "fixed" / "work" / "state-00000002" / "model")  # the unfinished run is left alone
    assert all((after[k] == w_before[k]).all() for k in after)
    # operational settings are not part of the identity: saving more often still resumes the same run
    resumed = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "fixed", "--resume",
                     "--set", "student.train.save_every=2"], cache)
    assert resumed.returncode == 0 and "resuming at step 2/3" in resumed.stderr, resumed.stderr[-2000:]


def test_the_trainer_refuses_a_state_saved_under_another_configuration(tmp_path):
    from bench.train.checkpoint import latest_state, load_state, save_state
    from bench.errors import BenchError
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch

    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_state(tmp_path, model, opt, sched, 1, {}, {"train": {"lr": 1e-3, "batch_size": 4}})
    with pytest.raises(BenchError, match=r"changed: train\.lr\)"):
        load_state(latest_state(tmp_path), model, opt, sched, {"train": {"lr": 2e-3, "batch_size": 4}})
