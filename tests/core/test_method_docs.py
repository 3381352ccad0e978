"""docs/METHODS.md is the project's own method reference, generated from the plugins (`bench methods --format md`):
it must equal the rendering of the built-in plugins, every default must name a real source, and nothing in the
repository may point at a method spec outside it (a clone has no shared folder beside it)."""
from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from typer.testing import CliRunner

import cli
from bench.method import describe
from bench.method_docs import methods_markdown
from bench.registry import get_method

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = sorted(ep.name for ep in entry_points(group="bench.methods") if ep.value.startswith("methods."))


def rendered() -> str:
    return methods_markdown([describe(get_method(n)) for n in BUILT_IN])


def test_docs_methods_md_is_in_sync_with_the_plugins():
    doc = (ROOT / "docs" / "METHODS.md").read_text()
    assert doc == rendered(), ("docs/METHODS.md is out of date: regenerate it with "
                               "`bench methods --format md > docs/METHODS.md`")


def test_bench_methods_md_renders_every_plugin():
    result = CliRunner().invoke(cli.app, ["methods", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Method reference")
    for name in BUILT_IN:
        info = describe(get_method(name))
        section = result.stdout.split(f"## `{name}` — ", 1)[1].split("\n## ", 1)[0]
        assert info["citation"] in section and info["module_doc"].splitlines()[0] in section
        for s in info["settings"]:
            assert f"| `{s['name']}` |" in section


def test_every_default_names_its_source_and_every_plugin_documents_itself():
    assert len(BUILT_IN) >= 17
    for name in BUILT_IN:
        info = describe(get_method(name))
        # the equation, deviations and ablations live in the module docstring
        assert len(info["module_doc"]) > 40, name
        for s in info["settings"]:
            assert s["source"].strip() and s["help"].strip(), (name, s["name"])
            assert "METHODS.md" not in s["source"] and "shared" not in s["source"], (name, s["name"], s["source"])


def test_nothing_points_outside_the_repository_for_the_method_spec():
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_dir() or rel.parts[0] in (".git", ".venv") or path.suffix not in (".py", ".md", ".toml", ".yaml"):
            continue
        text = path.read_text(errors="ignore")
        if any(needle in text for needle in ("../" + "shared", "/work/" + "shared")):
            offenders.append(str(rel))
    assert offenders == [], offenders
    readme = (ROOT / "README.md").read_text()
    assert "docs/METHODS.md" in readme
