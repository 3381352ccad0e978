"""Reward-model evaluator, the embedded Bradley-Terry RM and checkpoint selection, with real tiny models."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import make_run, suite_generations, tiny_lm_dir, tiny_rm_dir, tokenizer_dir  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.scoring.reward_model import (  # noqa: E402
    RewardScorer,
    checkpoint_score_fn,
    load_reward_model,
    select_best_checkpoint,
    validation_scorer,
)
from bench.scoring.rm_protocol import format_rm_text, score_texts  # noqa: E402
from bench.evaluators.run import run_evaluators  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def rm():
    model, tok, ident = load_reward_model(str(tiny_rm_dir()), {"device": "cpu"}, "/tmp/unused-rm-cache")
    return model, tok


def test_format_keeps_the_template_and_drops_only_a_duplicate_bos():
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    text = format_rm_text(tok, [{"role": "user", "content": "hi"}], "hello")
    # SmolLM2's tokenizer adds no BOS, so its template's leading <|im_start|> (its bos_token) must stay
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith("hello<|im_end|>")
    # a tokenizer that adds BOS itself (as Llama-3's does): the template's BOS text is removed -> one BOS
    tok.bos_token = "<|endoftext|>"
    bos_id = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A $B",
                                                       special_tokens=[("<|endoftext|>", bos_id)])
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    text = format_rm_text(tok, "hi", "yo")
    assert text == "user: hi\nassistant: yo\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == bos_id and ids.count(bos_id) == 1


def test_score_texts_is_batch_invariant(rm):
    model, tok = rm
    prompts = [[{"role": "user", "content": "Say hi."}], "Name three colours, please, in a list.", "2+2?"]
    responses = ["hi", "red, green and a rather long description of blue", "4"]
    one = score_texts(model, tok, prompts, responses, batch_size=1)
    three = score_texts(model, tok, prompts, responses, batch_size=3)
    assert all(math.isfinite(s) for s in one)
    assert one == pytest.approx(three, abs=1e-4)
    assert len(set(round(s, 5) for s in one)) == 3  # distinct texts, distinct scores
    with pytest.raises(BenchError, match="2 prompts but 1 responses"):
        score_texts(model, tok, prompts[:2], responses[:1])


def test_rm_evaluator_scores_generations_and_caches(tmp_path, rm):
    run = make_run(tmp_path / "runs", "r", generations=suite_generations(5, lambda i, r: f"answer {i}"))
    settings = {"rm_model": str(tiny_rm_dir()), "rm_batch_size": 2}
    res = run_evaluators([run], ["rm"], settings, cache_dir=tmp_path / "cache")[str(run)]["rm"]
    model, tok = rm
    gens = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    direct = score_texts(model, tok, [g["prompt"] for g in gens], [g["response"] for g in gens])
    assert res["score"] == pytest.approx(sum(direct) / 5, abs=1e-4) and res["n"] == 5 and res["cached"] is False
    assert json.loads((run / "metrics.json").read_text())["rm"]["settings"] == settings
    cache_files = list((tmp_path / "cache" / "rm_scores").rglob("*.json"))
    assert len(cache_files) == 1
    again = run_evaluators([run], ["rm"], settings, cache_dir=tmp_path / "cache")[str(run)]["rm"]
    assert again["cached"] is True and again["score"] == res["score"]


def test_unknown_rm_preset_is_a_clear_error(tmp_path):
    run = make_run(tmp_path / "runs", "r", generations=suite_generations(2, lambda i, r: "x"))
    with pytest.raises(BenchError, match="unknown RM preset 'fsfairy'; use rm_model=fsfairx, embedded"):
        run_evaluators([run], ["rm"], {"rm_model": "fsfairy"}, cache_dir=tmp_path / "cache")


def test_missing_generations_is_a_clear_error(tmp_path):
    run = make_run(tmp_path / "runs", "r")
    with pytest.raises(BenchError, match="no generations.jsonl"):
        run_evaluators([run], ["rm"], {"rm_model": str(tiny_rm_dir())}, cache_dir=tmp_path / "cache")


def test_embedded_bt_reward_model_is_trained_once_and_cached(tmp_path):
    run = make_run(tmp_path / "runs", "r", generations=suite_generations(4, lambda i, r: r["meta"]["answer"]))
    settings = {"rm_model": "embedded", "rm_embedded_base": str(tiny_lm_dir(seed=3, init_range=0.02)),
                "rm_embedded_epochs": 1, "rm_embedded_layers": 0}
    res = run_evaluators([run], ["rm"], settings, cache_dir=tmp_path / "cache")[str(run)]["rm"]
    dirs = list((tmp_path / "cache" / "reward_models").glob("embedded-*"))
    assert len(dirs) == 1 and res["rm"] == f"embedded:{dirs[0].name}"
    report = json.loads((dirs[0] / "bench_rm.json").read_text())
    assert report["n_train"] == 256 and report["n_val"] == 64 and 0 <= report["val_accuracy"] <= 1
    assert report["spec"]["epochs"] == 1
    mtime = (dirs[0] / "model.safetensors").stat().st_mtime_ns
    scorer = RewardScorer("embedded", settings, tmp_path / "cache")
    assert scorer.identity() == res["rm"]  # found in the cache, not retrained
    assert (dirs[0] / "model.safetensors").stat().st_mtime_ns == mtime


def test_select_best_checkpoint_with_planted_scores(tmp_path):
    dirs = [tmp_path / f"step-{i}" for i in range(4)]
    planted = {dirs[0]: 0.1, dirs[1]: float("nan"), dirs[2]: 0.7, dirs[3]: 0.7}
    best, scores = select_best_checkpoint(dirs, lambda d: planted[d])
    assert best == dirs[2]  # the earliest of the tied best; NaN never wins
    assert scores[str(dirs[0])] == 0.1 and math.isnan(scores[str(dirs[1])])
    with pytest.raises(BenchError, match="no checkpoints"):
        select_best_checkpoint([], lambda d: 0.0)
    with pytest.raises(BenchError, match="non-finite"):
        select_best_checkpoint(dirs[:2], lambda d: float("nan"))


def test_checkpoint_selection_picks_the_planted_best_checkpoint(tmp_path):
    """Three real checkpoints; an RM trained to prefer checkpoint B's own greedy replies; selection must pick B."""
    from bench.scoring.rm_train import train_bt_reward_model
    from bench.scoring.runtime import generate_chat, load_causal_lm

    prompts = [[{"role": "user", "content": t}] for t in
               ("Name a colour.", "Say something kind.", "What is 3 + 4?", "Describe rain.")]
    ckpts = [tiny_lm_dir(seed=s) for s in (11, 12, 13)]
    replies = []
    for c in ckpts:
        model, tok, device = load_causal_lm(c, {"device": "cpu"})
        replies.append(generate_chat(model, tok, prompts, max_new_tokens=6, device=device))
    assert replies[0] != replies[1] != replies[2]
    pairs = [{"prompt": p, "chosen": replies[1][i], "rejected": replies[j][i]}
             for i, p in enumerate(prompts) for j in (0, 2)]
    rm_dir = tmp_path / "planted-rm"
    report = train_bt_reward_model(tiny_lm_dir(seed=3, init_range=0.02), pairs, rm_dir, layers=0, epochs=40,
                                   lr=3e-3, batch=8)
    assert report["train_accuracy"] == 1.0
    score_fn = checkpoint_score_fn(prompts, rm_model=str(rm_dir), settings={"device": "cpu"},
                                   cache_dir=tmp_path / "cache", max_new_tokens=6)
    best, scores = select_best_checkpoint(ckpts, score_fn)
    assert best == ckpts[1], scores
    assert len(scores) == 3


def test_validation_scorer_for_the_trainer(tmp_path, rm):
    import types

    pipe = types.SimpleNamespace(preset={"rm_batch_size": 2, "device": "cpu", "lr": 1.0})
    score = validation_scorer(str(tiny_rm_dir()), pipe, cache_dir=tmp_path / "cache")
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Count to two."}]]
    value = score(prompts, ["hi", "one two"])
    model, tok = rm
    assert value == pytest.approx(sum(score_texts(model, tok, prompts, ["hi", "one two"])) / 2, abs=1e-4)
    assert score(prompts, ["hi", "one two"]) == value  # second call: from the score cache
