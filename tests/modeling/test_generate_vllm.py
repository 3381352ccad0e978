"""The vLLM generation backend: imported only when selected, one clear error line without it (before any work),
and its adapter (token-id prompts in, EOS-trimmed token ids out, in order) checked against a stand-in module."""
from __future__ import annotations

import sys
import types

import pytest

from safety_kit import TINY, bench, new_cache, one_error_line

pytestmark = pytest.mark.usefixtures("single_thread_module")


def test_selecting_vllm_without_it_is_one_line_before_any_work(tmp_path, bench_cache, tiny_dirs):
    cache = new_cache(tmp_path / "cache", bench_cache)
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(tmp_path / "runs"), "--set",
                  "generation.backend=vllm"], cache)
    one_error_line(proc, "vllm", "generation.backend=hf")
    assert not (cache / "stages").exists()
    one_error_line(bench(["run", "--method", "dpo", *TINY, "--set", "generation.backend=nope"], cache),
                   "unknown generation backend")


class _Out:
    def __init__(self, ids):
        self.outputs = [types.SimpleNamespace(token_ids=ids)]


def test_vllm_adapter_with_a_stand_in_module(monkeypatch, tiny_tokenizer):
    seen = {}

    class LLM:
        def __init__(self, model, **kw):
            seen["model"], seen["kw"] = model, kw

        def generate(self, inputs, params, use_tqdm=False):
            seen["inputs"], seen["params"] = inputs, params
            eos = tiny_tokenizer.eos_token_id
            return [_Out(list(x["prompt_token_ids"][-2:]) + [eos, 7, 7]) for x in inputs]

    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from bench.modeling.generate import make_generator, needs_model

    assert not needs_model("vllm") and needs_model("hf")
    gen = make_generator("vllm", None, tiny_tokenizer, model_path="/models/x", batch_size=4)
    out = gen.generate([[10, 11, 12], [13, 14]], max_new_tokens=9)
    eos = tiny_tokenizer.eos_token_id
    assert out == [[11, 12, eos], [13, 14, eos]]  # in prompt order, cut after EOS
    assert seen["model"] == "/models/x" and seen["kw"]["trust_remote_code"] is False
    assert seen["params"] == {"temperature": 0.0, "max_tokens": 9}
    assert seen["inputs"] == [{"prompt_token_ids": [10, 11, 12]}, {"prompt_token_ids": [13, 14]}]
