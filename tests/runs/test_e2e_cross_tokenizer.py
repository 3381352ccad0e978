"""A student taught by a teacher of another tokenizer, end to end on tiny models: tiny-random-student (SmolLM2's
byte-level BPE) and tiny-random-xtok (the toy SentencePiece-style tokenizer). The teacher stages train on the
teacher's own tokenization, its signals are projected onto the student's rows (checked against the teacher's own
forward pass), its generations reach SeqKD as re-tokenized text, and a method that cannot cross tokenizers stops
with one error line naming those that can."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from bench.config import RunConfig

XT = "tiny-random-xtok"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-xtok")


def cfg(runs, method="uld", teacher=XT) -> RunConfig:
    return RunConfig(method=method, student="tiny-random-student", teacher=teacher, preset="tiny", runs_dir=str(runs))


@pytest.mark.parametrize("method", ["uld", "gold", "seq_kd", "dpo", "vanilla_kd", "dckd", "tvkd", "adpa", "ddpo",
                                    "ctpd"])
def test_cross_tokenizer_methods_run_end_to_end(method, runs, tiny_dirs):
    from cli import app

    result = CliRunner().invoke(app, ["run", "--method", method, "--student", "tiny-random-student", "--teacher", XT,
                                      "--preset", "tiny", "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    run_dir = next(p for p in runs.iterdir() if p.name.startswith(f"{method}-tiny-random-student"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert manifest["teacher"] == XT
    assert metrics["train"]["steps"] == 3 and math.isfinite(metrics["train"]["final_loss"])


def test_a_method_that_cannot_cross_tokenizers_fails_before_any_work(runs, tiny_dirs, monkeypatch, capsys):
    from cli_kit import assert_one_line_error, bench_main

    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "atkd", "--student", "tiny-random-student",
                              "--teacher", XT, "--preset", "tiny", "--runs", str(runs / "refused"))
    line = assert_one_line_error(code, err, "method 'atkd'", "tokenize differently", "gold", "uld", "dckd", "tvkd",
                                 "adpa", "ctpd")
    assert "atkd" not in line.split("across tokenizers:")[1] and "gkd," not in line
    assert not (runs / "refused").exists()
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "tvkd", "--student", "tiny-random-student",
                              "--teacher", XT, "--preset", "tiny", "--runs", str(runs / "refused"),
                              "--set", "gamma=0.9")
    assert_one_line_error(code, err, "method 'tvkd' across tokenizers", "gamma=1")
    assert not (runs / "refused").exists()


def test_teacher_stages_read_the_teachers_own_tokenization(runs, tiny_dirs):
    from bench.pipeline.graph import Pipeline

    pipe = Pipeline(cfg(runs))
    assert pipe.tenc is not pipe.enc and pipe.enc_for("dpo_teacher") is pipe.tenc
    assert pipe.enc_for("sft_student") is pipe.enc
    t_pairs = pipe.side_pairs("sft", "response", {}, pipe.tenc)
    s_pairs = pipe.side_pairs("sft", "response", {})
    row = pipe.split_rows("sft")[0]
    assert pipe.tenc.tokenizer.decode(t_pairs[0][1], skip_special_tokens=True).strip() == row["response"].strip()
    assert t_pairs[0][0] != s_pairs[0][0]  # another chat template and vocabulary
    # SeqKD's side: the teacher's greedy text, re-tokenized by the student's tokenizer
    texts = pipe.generation_texts("dpo_teacher", "pref_train")
    gen = pipe.side_pairs("pref_train", "gen:dpo_teacher", {})
    for text, (_, resp) in zip(texts, gen):
        assert resp == (pipe.enc.response_ids(text) if text.strip() else [pipe.tok.eos_token_id])


def test_projected_signals_are_the_teachers_own_forward_at_span_starts(runs, tiny_dirs):
    from bench.modeling.forward import packed_forward, pad_batch
    from bench.pipeline.graph import Pipeline
    from bench.signals.xtok import logps_from_xtok, offsets_for_ids, span_groups, tokenize_response

    pipe = Pipeline(cfg(runs))
    entry = pipe.xtok_entry("dpo_teacher", "chosen", "pref_train", {"reference": "sft_student"})
    align = entry.manifest["alignment"]
    assert align["student_rows"] > 0 and 0.5 < align["start_share"] <= 1.0
    model = pipe.load("dpo_teacher")
    rows, s_pairs = pipe.split_rows("pref_train"), pipe.side_pairs("pref_train", "chosen", {})
    spans = whole = 0
    for i in range(4):
        text = rows[i]["chosen"]
        t = tokenize_response(pipe.tenc.tokenizer, text, pipe.tenc.max_response_len)
        s = offsets_for_ids(pipe.tok, text, s_pairs[i][1], pipe.tok.eos_token_id)
        batch = pad_batch([(pipe.tenc.prompt_ids(rows[i]["prompt"], rows[i]["id"]), t.ids)],
                          pipe.tenc.tokenizer.pad_token_id)
        with torch.no_grad():
            z = packed_forward(model, batch, chunked=False).logits.double()
            logp = torch.log_softmax(z, -1)
        x = entry.example("xtok", i)
        assert x["first"].shape[0] == len(s_pairs[i][1])
        groups = span_groups(s, t)
        assert x["first"].nonzero().flatten().tolist() == [s0 for (s0, _), _ in groups]
        for (s0, s1), (t0, t1) in groups:
            top = logp[t0].topk(pipe.k)
            # the cache's batched forward and this one-sequence forward agree to ~1e-4 on some CPUs (AVX-512/AMX):
            # the same top-k up to the order of near-ties, then float16 rounded toward -inf
            assert torch.allclose(logp[t0][x["topk_ids"][s0].long()], top.values, rtol=0, atol=1e-4)
            gap = top.values - x["topk_logps"][s0].double()
            assert bool((gap >= -1e-4).all() and (gap <= top.values.abs() * 2**-10 + 1e-4).all())
            later = sum(float(logp[j, t.ids[j]]) for j in range(t0 + 1, t1))
            assert float(x["later"][s0]) == pytest.approx(later, abs=1e-4 * max(t1 - t0 - 1, 1))  # per token
            assert (x["group"][s0:s1] == x["group"][s0]).all()
            if t1 < z.shape[0]:  # the state after the span, held on its last row (TVKD's potential there)
                # the cache's batched forward against this one-sequence forward: logits agree to ~1e-4 absolute on
                # some CPUs (6e-5 measured on an AVX-512/AMX Xeon), the bound `later` uses above
                assert float(x["after_v_lse"][s1 - 1]) == pytest.approx(float(torch.logsumexp(z[t1], -1)), abs=1e-4)
                assert float(x["after_v_max"][s1 - 2 if s1 - s0 > 1 else s1 - 1]) == pytest.approx(
                    float(z[t0 if s1 - s0 > 1 else t1].max()), abs=1e-4)  # an inner row holds the span's start
            spans += 1
        if groups and groups[-1][1][1] == len(t.ids):  # the whole response aligned: the sequence log-prob is exact
            seq = float(logps_from_xtok(x)["logps"].double().sum())
            assert seq == pytest.approx(sum(float(logp[j, t.ids[j]]) for j in range(len(t.ids))),
                                        abs=1e-4 * len(t.ids))  # the per-token bound above, over the response
            whole += 1
    assert spans > 0 and whole > 0


def test_xtok_with_one_tokenizer_is_the_plain_top_k(runs, tiny_dirs):
    from bench.pipeline.graph import Pipeline

    pipe = Pipeline(cfg(runs, teacher="tiny-random"))
    assert pipe.tenc is pipe.enc
    alias = {"reference": "sft_student"}
    x = pipe.xtok_entry("dpo_teacher", "chosen", "pref_train", alias).gather("xtok", [0, 1, 2])
    top = pipe.signal_entry("dpo_teacher", "chosen", "pref_train", alias).gather("topk", [0, 1, 2])
    assert bool(x["first"].all())  # every token its own span
    assert torch.equal(x["topk_ids"], top["topk_ids"].int()) and torch.equal(x["topk_sids"], x["topk_ids"])
    assert torch.allclose(x["topk_logps"], top["topk_logps"].float())
    assert float(x["match_share"][0]) == 1.0
    from bench.signals.xtok import STATE_VALUE_FIELDS, values_from_xtok

    lengths = [len(pipe.side_pairs("pref_train", "chosen", alias)[i][1]) for i in range(3)]
    held = values_from_xtok(x, lengths)  # every row its own span: the held values are the values signal itself
    plain = pipe.signal_entry("dpo_teacher", "chosen", "pref_train", alias).gather("values", [0, 1, 2])
    for v in STATE_VALUE_FIELDS:
        assert torch.equal(held[v], plain[v].float()), v


def test_headroom_reads_a_teacher_of_another_tokenizer_through_its_own(runs, tiny_dirs, monkeypatch):
    """benchmarks/headroom.py scores a teacher's greedy text and its reward accuracy on the teacher's own tokenization
    (it used to decode Gemma's ids and feed it the pairs with the student's tokenizer: 0% verified)."""
    import benchmarks.headroom as headroom
    from bench.pipeline.graph import Pipeline
    from bench.scoring import metrics
    from bench.scoring.metrics import verified_scores

    pipe = Pipeline(cfg(runs, "dpo"))
    rows = pipe.split_rows("test")
    want = verified_scores(rows, pipe.generation_texts("dpo_teacher", "test"))["score"]
    assert headroom.role_report(pipe, "dpo_teacher")["score"] == want
    assert headroom._enc(pipe, "teacher_base") is pipe.tenc and headroom._enc(pipe, "student_base") is pipe.enc
    assert max(max(ids, default=0) for ids in headroom.base_generations(pipe, "teacher_base")) < len(pipe.tenc.tokenizer)
    seen = []
    real = metrics.mean_logps
    monkeypatch.setattr(metrics, "mean_logps", lambda model, pairs, *a: seen.append(pairs) or real(model, pairs, *a))
    acc = headroom.teacher_reward_accuracy(pipe, "dpo_teacher")
    assert seen == [pipe.side_pairs("pref_val", s, {}, pipe.tenc) for s in ("chosen", "rejected")]
    assert seen[0] != pipe.side_pairs("pref_val", "chosen", {}) and 0.0 <= acc["score"] <= 1.0
