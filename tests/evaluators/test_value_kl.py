"""value_kl (TVKD Table 4): token-mean KL between the DPO teacher's and the student's Boltzmann distributions at the
value temperature, on chosen responses of the training prompts, against an independent float64 loop over unpadded
full forward passes of the tiny models; stored in metrics.json and shown (lower = better) in the leaderboard."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.evaluators.run import run_evaluators
from bench.evaluators.value_kl import mean_value_kl

pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(scope="module")
def tvkd_run(tiny_dirs, tiny_run_config, tmp_path_factory):
    from bench.runs.run import run_pipeline

    return run_pipeline(tiny_run_config(tmp_path_factory.mktemp("value-kl"), method="tvkd"))


def kl_by_hand(teacher, student, pairs, tau, reverse=False):
    """Σ over positions of KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) with unpadded forward passes and float64 loops."""
    total, n = 0.0, 0
    for prompt, resp in pairs:
        ids = torch.tensor([prompt + resp])
        with torch.no_grad():
            zt = teacher(input_ids=ids).logits[0].double().numpy()
            zs = student(input_ids=ids).logits[0].double().numpy()
        for pos in range(len(prompt) - 1, len(prompt) + len(resp) - 1):
            a, b = zt[pos] / tau, zs[pos] / tau
            la = a - (a.max() + math.log(np.exp(a - a.max()).sum()))
            lb = b - (b.max() + math.log(np.exp(b - b.max()).sum()))
            la, lb = (lb, la) if reverse else (la, lb)
            total += float((np.exp(la) * (la - lb)).sum())
            n += 1
    return total / n, n


def test_value_kl_matches_an_independent_computation(tvkd_run):
    from bench.config import RunConfig
    from bench.modeling.models import load_model
    from bench.pipeline.graph import Pipeline

    out = run_evaluators([tvkd_run.path], ["value_kl"], {"value_kl_n": 3})
    entry = out[str(tvkd_run.path)]["value_kl"]
    assert entry["version"] == "1" and entry["settings"] == {"value_kl_n": 3}
    assert tvkd_run.metrics["value_kl"]["score"] == entry["score"]  # stored in metrics.json

    pipe = Pipeline(RunConfig(**{**tvkd_run.manifest["config"], "eval_suite": ()}))
    pairs = pipe.side_pairs("pref_train", "chosen", {})[:3]
    teacher = load_model(pipe.built_path("dpo_teacher")).eval()
    want, n = kl_by_hand(teacher, load_model(tvkd_run.checkpoint_path).eval(), pairs, 2.0)
    assert entry["tokens"] == n == sum(len(r) for _, r in pairs) and entry["n"] == 3 and entry["tau"] == 2.0
    # the models run in float32: a per-token KL of ~1e-3 carries ~1e-7 absolute rounding
    assert entry["score"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    sref, _ = kl_by_hand(teacher, load_model(pipe.built_path("sft_student")).eval(), pairs, 2.0)
    assert entry["sft_student"] == pytest.approx(sref, rel=1e-4, abs=1e-6)
    # the temperature matters (a different τ, a different number), and a model against itself scores 0
    hot = run_evaluators([tvkd_run.path], ["value_kl"], {"value_kl_n": 3, "value_kl_tau": 0.5})
    hot_want = kl_by_hand(teacher, load_model(tvkd_run.checkpoint_path).eval(), pairs, 0.5)[0]
    assert hot[str(tvkd_run.path)]["value_kl"]["score"] == pytest.approx(hot_want, rel=1e-4, abs=1e-6)
    assert abs(hot_want - want) > 1e-3 * want
    assert mean_value_kl(teacher, teacher, pairs, pipe.tok.pad_token_id, 2.0)[0] == 0.0


def test_direction_and_temperature_on_distinct_models():
    # the tiny random models are nearly uniform (forward ≈ reverse KL); two sharpened models pin the definition
    from transformers import LlamaConfig, LlamaForCausalLM

    def model(seed):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0)
        m = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():
            m.model.embed_tokens.weight.mul_(20)
        return m
    teacher, student = model(0), model(1)
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(1, 64, (p,), generator=g).tolist(), torch.randint(1, 64, (r,), generator=g).tolist())
             for p, r in [(3, 5), (5, 2), (2, 7)]]
    for tau in (2.0, 1.0):
        got, n = mean_value_kl(teacher, student, pairs, 0, tau, batch_size=2)
        want, n_want = kl_by_hand(teacher, student, pairs, tau)
        rev, _ = kl_by_hand(teacher, student, pairs, tau, reverse=True)
        assert n == n_want == 14 and got == pytest.approx(want, rel=1e-5)
        assert abs(rev - want) > 0.01 * want  # so the forward direction is what matched


def test_missing_dpo_teacher_is_a_clean_error(tvkd_run, monkeypatch):
    import bench.pipeline.graph as pipeline_mod

    original = pipeline_mod.Pipeline.built_path
    monkeypatch.setattr(pipeline_mod.Pipeline, "built_path",
                        lambda self, role: None if role == "dpo_teacher" else original(self, role))
    with pytest.raises(BenchError, match="value_kl_build=true"):
        run_evaluators([tvkd_run.path], ["value_kl"], {"value_kl_n": 2})
    with pytest.raises(BenchError, match="teacher_kl_build=true"):
        run_evaluators([tvkd_run.path], ["teacher_kl"], {"teacher_kl_n": 2})
    with pytest.raises(BenchError, match="value_kl_tau"):
        run_evaluators([tvkd_run.path], ["value_kl"], {"value_kl_tau": -1.0})


def test_leaderboard_shows_value_kl_and_marks_the_lowest_best(tvkd_run, tmp_path):
    import shutil

    from leaderboard.collect import collect
    from leaderboard.command import build_groups
    from leaderboard.render import to_markdown
    from leaderboard_kit import make_run

    run_evaluators([tvkd_run.path], ["value_kl"], {"value_kl_n": 2})
    rows = collect(tvkd_run.path.parent)
    assert rows[0]["metrics"]["value_kl"] == pytest.approx(tvkd_run.metrics["value_kl"]["score"])
    board = tmp_path / "board"
    board.mkdir()
    shutil.copytree(tvkd_run.path, board / tvkd_run.path.name)
    make_run(board, "a", metrics={"value_kl": {"score": 0.5}, "verified": {"score": 0.1}})
    make_run(board, "b", method="dckd", metrics={"value_kl": {"score": 0.00213}, "verified": {"score": 0.3}})
    md = to_markdown(build_groups(board, baseline=None, filters=[], sort=None, per_run=False))
    assert "value KL (nats)" in md.splitlines()[0]
    # one precision for the column (leaderboard.cells.column_decimals): two significant digits of its smallest value
    assert "**0.0021**" in md and "0.5000" in md and "**0.5000**" not in md and "**30.0**" in md


def test_teacher_kl_on_the_runs_own_test_responses(tvkd_run):
    """teacher_kl: KL(π_dpo ‖ π_θ) at τ = 1 on the run's greedy test responses, by hand on unpadded passes."""
    from bench.config import RunConfig
    from bench.modeling.models import load_model
    from bench.pipeline.graph import Pipeline

    out = run_evaluators([tvkd_run.path], ["teacher_kl"], {"teacher_kl_n": 4})
    entry = out[str(tvkd_run.path)]["teacher_kl"]
    assert entry["version"] == "1" and entry["n"] == 4
    assert tvkd_run.metrics["teacher_kl"]["score"] == entry["score"]
    pipe = Pipeline(RunConfig(**{**tvkd_run.manifest["config"], "eval_suite": ()}))
    tok, rows = pipe.tok, tvkd_run.generations()[:4]
    pairs = []
    for r in rows:  # independent encoding: the chat-templated prompt, the response text's tokens, then EOS
        resp = (tok(r["response"], add_special_tokens=False)["input_ids"] if r["response"] else []) + [tok.eos_token_id]
        pairs.append((pipe.enc.prompt_ids(r["prompt"], r["id"]), resp[:pipe.enc.max_response_len]))
    teacher = load_model(pipe.built_path("dpo_teacher")).eval()
    want, n = kl_by_hand(teacher, load_model(tvkd_run.checkpoint_path).eval(), pairs, 1.0)
    assert entry["tokens"] == n
    assert entry["score"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    sref, _ = kl_by_hand(teacher, load_model(pipe.built_path("sft_student")).eval(), pairs, 1.0)
    assert entry["sft_student"] == pytest.approx(sref, rel=1e-4, abs=1e-6)
    assert abs(sref - want) > 1e-6  # training moved the student: the two numbers are different models'
