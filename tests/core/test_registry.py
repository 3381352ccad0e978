"""bench/registry.py + bench/method.py: third-party method plugins through the `bench.methods` entry-point group."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from bench import registry
from bench.errors import BenchError
from bench.method import Method, describe

pytestmark = pytest.mark.usefixtures("single_thread_module")

PLUGIN = '''
from dataclasses import dataclass

from bench.method import Method, MethodConfig, SignalSpec, setting
from methods.sft import sft_loss


@dataclass
class MyConfig(MethodConfig):
    weight: float = setting(0.5, "our choice", "a weight", min=0.0, max=1.0)
    mode: str = setting("a", "our choice", "a mode", choices=("a", "b"))


class MyMethod(Method):
    """A third-party test method."""

    name = "my_method"
    display_name = "My Method"
    citation = "nobody 2025"
    config_cls = MyConfig

    def signals(self, cfg):
        return [SignalSpec("dpo_teacher", "chosen", "topk")]

    def loss(self, batch, cfg):
        return cfg.weight * sft_loss(batch.policy["chosen"]), {}


class Misnamed(MyMethod):
    name = "some_other_name"


class NotAMethod:
    name = "not_a_method"
'''

BROKEN = '''
import a_module_that_does_not_exist_anywhere  # noqa: F401
'''


def make_dist(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    for name, text in modules.items():
        (root / f"{name}.py").write_text(text)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[bench.methods]\n{lines}")


@pytest.fixture()
def plugin_path(tmp_path, monkeypatch):
    """A tmp dir on sys.path holding installed-looking third-party plugin distributions; the registry cache is
    cleared before and after so no other test sees them."""
    make_dist(tmp_path, "my_plugin", {"my_method": "my_plugin:MyMethod", "misnamed": "my_plugin:Misnamed",
                                      "not_a_method": "my_plugin:NotAMethod"}, {"my_plugin": PLUGIN})
    make_dist(tmp_path, "broken_plugin", {"broken": "broken_plugin:Broken"}, {"broken_plugin": BROKEN})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    yield tmp_path
    for mod in ("my_plugin", "broken_plugin"):
        sys.modules.pop(mod, None)
    monkeypatch.undo()
    registry.clear_cache()


def test_builtin_methods_are_registered():
    names = registry.method_names()
    assert {"sft", "dpo"} <= set(names) and names == sorted(names)
    for name in ("sft", "dpo"):
        m = registry.get_method(name)
        assert isinstance(m, Method) and m.name == name


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(BenchError) as e:
        registry.get_method("nosuch")
    assert "unknown method 'nosuch'" in str(e.value) and "dpo" in str(e.value) and "sft" in str(e.value)


def test_third_party_plugin_is_discovered(plugin_path):
    assert "my_method" in registry.method_names()
    m = registry.get_method("my_method")
    assert type(m).__name__ == "MyMethod" and m.name == "my_method"
    cfg = m.make_config({"weight": "0.25", "mode": "b"})
    assert cfg.weight == 0.25 and cfg.mode == "b"
    assert m.required_models(cfg) == {"reference", "dpo_teacher"}
    info = describe(m)
    assert info["display_name"] == "My Method" and info["signals"] == ["dpo_teacher.topk.chosen"]
    assert {s["name"]: s["default"] for s in info["settings"]} == {"weight": 0.5, "mode": "a"}
    assert {s["name"]: s.get("choices") for s in info["settings"]}["mode"] == ["a", "b"]
    # built-ins still load next to it
    assert registry.get_method("dpo").name == "dpo"


def test_plugin_settings_are_validated(plugin_path):
    m = registry.get_method("my_method")
    with pytest.raises(BenchError, match="weight=2.0 is invalid"):
        m.make_config({"weight": "2"})
    with pytest.raises(BenchError, match="choose one of a, b"):
        m.make_config({"mode": "c"})
    with pytest.raises(BenchError, match="has no setting 'nope'"):
        m.make_config({"nope": "1"})
    with pytest.raises(BenchError, match="must be a float"):
        m.make_config({"weight": "heavy"})


def test_broken_plugin_is_named_and_others_still_load(plugin_path):
    assert {"broken", "my_method", "sft", "dpo"} <= set(registry.method_names())
    with pytest.raises(BenchError) as e:
        registry.get_method("broken")
    msg = str(e.value)
    assert "'broken'" in msg and "broken_plugin:Broken" in msg and "failed to import" in msg
    assert "\n" not in msg
    assert registry.get_method("my_method").name == "my_method"
    assert registry.get_method("sft").name == "sft"


def test_name_mismatch_and_non_method_are_refused(plugin_path):
    with pytest.raises(BenchError, match="loads a method named 'some_other_name'"):
        registry.get_method("misnamed")
    with pytest.raises(BenchError, match="not a bench.method.Method subclass"):
        registry.get_method("not_a_method")


def test_bench_methods_survives_a_broken_plugin(plugin_path):
    """One broken third-party plugin must not take `bench methods` down: the others are still listed (the broken
    one may be reported on stderr)."""
    result = CliRunner().invoke(cli.app, ["methods", "--format", "json"])
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 0
    names = {i["name"] for i in json.loads(result.stdout)}
    assert {"sft", "dpo", "my_method"} <= names


def test_registry_cache_is_cleared(plugin_path):
    assert "my_method" in registry.method_names()
    sys.path.remove(str(plugin_path))
    assert "my_method" in registry.method_names()  # cached until cleared
    registry.clear_cache()
    assert "my_method" not in registry.method_names()
    sys.path.insert(0, str(plugin_path))
