"""`bench serve-teacher` as a user starts it: a process that says where it listens (loopback by default) and
answers TRL's protocol there; bad options are one error line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from cli_kit import assert_one_line_error, bench_main

BENCH = Path(sys.executable).with_name("bench")


def test_serves_on_loopback_and_answers(tiny_dirs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_TEACHER_TOKEN": ""}
    proc = subprocess.Popen([str(BENCH), "serve-teacher", "tiny-random", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        url = m.group(1)
        with urllib.request.urlopen(url + "/health/", timeout=30) as r:
            assert r.status == 200
        body = json.dumps({"sequences": [[1, 2, 3, 4]], "prompt_lengths": [2], "top_logprobs": 3,
                           "response_format": "json"}).encode()
        req = urllib.request.Request(url + "/get_sequence_logprobs/", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
        assert len(out["logprobs"][0]) == 2 and all(len(row) in (3, 4) for row in out["logprobs"][0])
    finally:
        proc.terminate()
        proc.wait(30)


def test_bad_options_are_one_error_line(monkeypatch, capsys):
    code, _, err = bench_main(monkeypatch, capsys, "serve-teacher", "tiny-random", "--port", "70000")
    assert_one_line_error(code, err, "--port")
    code, _, err = bench_main(monkeypatch, capsys, "serve-teacher", "no-such-model")
    assert_one_line_error(code, err, "no-such-model")
