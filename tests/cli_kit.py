"""What the CLI tests share: the tiny-model arguments, the in-process `bench` entry point, the one-line error check."""
from __future__ import annotations

import sys

import cli


TINY = ["--student", "tiny-random-student", "--preset", "tiny"]


def bench_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the `bench` console-script entry point (cli:main) in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    capsys.readouterr()
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
