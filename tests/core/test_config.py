"""bench/config.py + bench/method.py settings: `--set` parsing, run presets and overrides, typed method settings."""
from __future__ import annotations

import pytest

from bench.config import RunConfig, TOP_LEVEL_KEYS, load_run_preset, parse_value, split_sets
from bench.errors import BenchError
from bench.registry import get_method
from bench.train.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.mark.parametrize("text,value", [("3", 3), ("true", True), ("name", "name"), ("1.0e-5", 1e-5), ("0.5", 0.5),
                                        ("-1", -1), ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1})])
def test_parse_value_yaml_scalars(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("text,value", [("1e-5", 1e-5), ("2e-4", 2e-4), ("1E-3", 1e-3), ("1e5", 1e5), ("5e+3", 5e3)])
def test_parse_value_reads_exponent_floats(text, value):
    """The README's own example `--set student.train.lr=1e-5` must give a float; PyYAML's YAML 1.1 resolver reads
    '1e-5' (no dot) as a string, which then crashes TrainConfig.validate with a TypeError."""
    got = parse_value(text)
    assert isinstance(got, float) and got == pytest.approx(value)


def test_readme_lr_override_gives_a_valid_train_config():
    preset = load_run_preset("tiny", {"student.train.lr": parse_value("1e-5")})
    TrainConfig(**preset["student"]["train"]).validate()


def test_split_sets_routes_method_settings_and_preset_keys():
    method, stage = split_sets(["beta=0.2", "student.train.lr=1.0e-5", "sizes.pref_train=64", "k=20",
                                "select_by=last"], {"beta"})
    assert method == {"beta": "0.2"}  # typed later by the method's config
    assert stage == {"student.train.lr": 1e-5, "sizes.pref_train": 64, "k": 20, "select_by": "last"}


@pytest.mark.parametrize("item,needle", [("beta", "key=value"), ("nope=1", "not a setting"),
                                         ("student_train_lr=1", "not a setting")])
def test_split_sets_errors(item, needle):
    with pytest.raises(BenchError, match=needle):
        split_sets([item], {"beta"})


def test_load_run_preset_overrides_are_deep_and_do_not_leak():
    base = load_run_preset("tiny", {})
    over = load_run_preset("tiny", {"student.train.lr": 0.5, "sizes.test": 2, "new.section.key": 1})
    assert over["student"]["train"]["lr"] == 0.5 and over["student"]["train"]["max_steps"] == 3
    assert over["sizes"] == {**base["sizes"], "test": 2}
    assert over["new"] == {"section": {"key": 1}}
    assert load_run_preset("tiny", {}) == base  # the YAML on disk is not modified in memory
    assert set(base) <= set(TOP_LEVEL_KEYS)


def test_load_run_preset_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown run preset 'nope'; choose from .*tiny"):
        load_run_preset("nope", {})
    with pytest.raises(BenchError, match="'k' is not a section"):
        load_run_preset("tiny", {"k.x": 1})
    custom = tmp_path / "mine.yaml"
    custom.write_text("k: 3\nstudent: {train: {lr: 0.1}}\n")
    assert load_run_preset(str(custom), {"k": 4}) == {"k": 4, "student": {"train": {"lr": 0.1}}}


def test_method_settings_are_typed_and_bounded():
    dpo = get_method("dpo")
    assert dpo.make_config({"beta": "0.2"}).beta == 0.2
    assert dpo.make_config({"beta": 0.3}).beta == 0.3
    assert dpo.make_config().beta == 0.05
    for bad, needle in (("abc", "must be a float"), ("-1", ">= 0"), ("nan", "beta"), ("inf", "beta")):
        with pytest.raises(BenchError, match=needle):
            dpo.make_config({"beta": bad})


def test_run_config_round_trips():
    cfg = RunConfig(method="dpo", method_settings={"beta": "0.2"}, eval_suite=("verified",))
    d = cfg.to_dict()
    assert RunConfig(**d) == cfg and d["method_settings"] == {"beta": "0.2"}
