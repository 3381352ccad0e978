"""bench/train/trainer.py + bench/train/checkpoint.py: the shared training loop (loss goes down, accumulation, schedule, resume,
errors, checkpoint selection) on a tiny random model with the SFT plugin."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import get_cosine_schedule_with_warmup

from bench.errors import BenchError
from bench.method import Method
from bench.registry import get_method
from bench.train.trainer import TrainConfig, TrainData, train
from methods.sft import sft_loss
from train_kit import PAD, V, make_data, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread_module")

def weights(model_or_dir) -> dict[str, torch.Tensor]:
    if isinstance(model_or_dir, (str, Path)):
        out = {}
        for f in sorted(Path(model_or_dir).glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out
    return {k: v.detach().clone() for k, v in model_or_dir.state_dict().items() if k != "lm_head.weight"}


def assert_same_weights(a: dict, b: dict, atol: float):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def run(work: Path, tcfg: TrainConfig, data: TrainData | None = None, model=None, method=None, **kw):
    method = method or get_method("sft")
    model = model if model is not None else tiny_model()
    result = train(model, method, method.make_config(), data or make_data(), tcfg, pad_id=PAD, work_dir=work, **kw)
    return model, result


# ---------------------------------------------------------------- learning


def test_sft_loss_goes_down_on_repeated_examples(tmp_path):
    data = make_data(n=8, equal=False)
    tcfg = TrainConfig(lr=1e-2, batch_size=4, max_steps=20, warmup_ratio=0.1)
    model, result = run(tmp_path, tcfg, data)
    losses = [h["loss"] for h in result.history]
    assert result.steps == 20 and len(losses) == 20 and [h["step"] for h in result.history] == list(range(1, 21))
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    assert result.tokens > 0 and result.tokens_per_s > 0
    # the final model is written and equals the in-memory model (no evaluator: the last step)
    assert (result.final_dir / "config.json").exists()
    assert_same_weights(weights(result.final_dir), weights(model), atol=0)
    assert not list(tmp_path.glob("state-*"))  # save_every=0: no resumable state is written


def test_epochs_visit_every_example_once_per_epoch(tmp_path):
    seen: list[tuple] = []

    class Spy(Method):
        name = "spy"

        def loss(self, batch, cfg):
            p = batch.policy["chosen"]
            for b in range(p.n_seq):
                seen.append(tuple(p.labels[p.seg == b].tolist()))
            return sft_loss(p), {}

    data = make_data(n=8, equal=False)
    _, result = run(tmp_path, TrainConfig(lr=1e-3, batch_size=4, epochs=2), data, method=Spy())
    assert result.steps == 4  # ceil(2 epochs * 8 / 4)
    responses = [tuple(r) for _, r in data.sides["chosen"]]
    assert sorted(seen[:8]) == sorted(responses) and sorted(seen[8:]) == sorted(responses)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    data = make_data(n=8, equal=True)  # equal lengths: the token mean over 4 = the mean of two token means over 2
    base = dict(lr=1e-3, max_steps=1, warmup_ratio=0.0, precision="fp32")  # arithmetic identity: no bf16 rounding
    m0 = weights(tiny_model())
    a, ra = run(tmp_path / "a", TrainConfig(batch_size=2, grad_accum=2, **base), data)
    b, rb = run(tmp_path / "b", TrainConfig(batch_size=4, grad_accum=1, **base), data)
    wa, wb = weights(a), weights(b)
    assert any(not torch.equal(wa[k], m0[k]) for k in wa)  # the step did move the weights
    assert_same_weights(wa, wb, atol=1e-6)
    assert ra.history[0]["loss"] == pytest.approx(rb.history[0]["loss"], abs=1e-6)
    assert ra.steps == rb.steps == 1


def test_gradient_accumulation_two_steps(tmp_path):
    data = make_data(n=8, equal=True)
    base = dict(lr=1e-3, max_steps=2, warmup_ratio=0.0, precision="fp32")
    a, _ = run(tmp_path / "a", TrainConfig(batch_size=1, grad_accum=4, **base), data)
    b, _ = run(tmp_path / "b", TrainConfig(batch_size=4, grad_accum=1, **base), data)
    assert_same_weights(weights(a), weights(b), atol=1e-6)


@pytest.mark.parametrize("accum", [1, 2])
def test_cosine_schedule_with_warmup(tmp_path, accum):
    tcfg = TrainConfig(lr=1e-2, batch_size=2, grad_accum=accum, max_steps=12, warmup_ratio=0.2)
    _, result = run(tmp_path, tcfg, make_data(n=8))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    ref = get_cosine_schedule_with_warmup(opt, 3, 12)  # ceil(0.2 * 12) warmup steps
    want = []
    for _ in range(12):
        opt.step()
        ref.step()
        want.append(ref.get_last_lr()[0])
    got = [h["lr"] for h in result.history]
    assert got == pytest.approx(want, abs=1e-12)
    assert max(got) == pytest.approx(1e-2) and got[-1] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- resume


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    data = make_data(n=8, equal=False)
    tcfg = dict(lr=1e-2, batch_size=2, max_steps=4, warmup_ratio=0.25, save_every=2, eval_every=1)

    def constant(model):
        return {"score": 0.0}  # ties -> the latest checkpoint (step 4)

    ref_model, ref = run(tmp_path / "ref", TrainConfig(**tcfg), data, evaluate=constant)

    calls = []

    def dies_at_step_3(model):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed after step 3")
        return {"score": 0.0}

    work = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):
        run(work, TrainConfig(**tcfg), data, evaluate=dies_at_step_3)
    assert (work / "state-00000002" / "state.json").exists()

    # a fresh process: a fresh model object (same init), then resume
    resumed_model, res = run(work, TrainConfig(**tcfg), data, model=tiny_model(), evaluate=constant, resume=True)
    assert res.steps == 4
    assert [h["step"] for h in res.history] == [1, 2, 3, 4]
    assert [e["step"] for e in res.evals] == [1, 2, 3, 4]
    assert [h["loss"] for h in res.history] == pytest.approx([h["loss"] for h in ref.history], abs=1e-6)
    assert [h["lr"] for h in res.history] == pytest.approx([h["lr"] for h in ref.history], abs=1e-12)
    assert_same_weights(weights(resumed_model), weights(ref_model), atol=1e-6)
    assert_same_weights(weights(res.final_dir), weights(ref.final_dir), atol=1e-6)
    # the trainer keeps the final state: only its caller, once the result is stored, deletes the work dir
    assert [p.name for p in work.glob("state-*")] == ["state-00000004"]


def test_resume_without_state_starts_from_scratch(tmp_path):
    tcfg = TrainConfig(lr=1e-2, batch_size=2, max_steps=2)
    a, _ = run(tmp_path / "a", tcfg, make_data())
    b, rb = run(tmp_path / "b", TrainConfig(lr=1e-2, batch_size=2, max_steps=2), make_data(), resume=True)
    assert rb.steps == 2
    assert_same_weights(weights(a), weights(b), atol=0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [dict(lr=0), dict(lr=-1e-3), dict(batch_size=0), dict(grad_accum=0), dict(epochs=0),
                                 dict(max_steps=-1)])
def test_invalid_train_config_is_a_bench_error(tmp_path, bad):
    with pytest.raises(BenchError, match=rf"training setting {next(iter(bad))}=.* is invalid"):
        run(tmp_path, TrainConfig(**bad))
    assert not (tmp_path / "final").exists()


@pytest.mark.parametrize("bad", [dict(lr="1e-5"), dict(lr="abc"), dict(batch_size="4")])
def test_mistyped_train_config_is_a_bench_error(bad):
    """`--set student.train.lr=1e-5` reaches TrainConfig as the string '1e-5' (YAML 1.1 reads exponent floats
    without a dot as strings): it must be a BenchError (or be converted), never a TypeError traceback."""
    with pytest.raises(BenchError):
        TrainConfig(**bad).validate()


@pytest.mark.parametrize("bad", [dict(warmup_ratio=1.5), dict(warmup_ratio=-0.1), dict(max_grad_norm=0.0),
                                 dict(max_grad_norm=-1.0), dict(eval_every=-1), dict(save_every=-2)])
def test_out_of_range_train_config_is_a_bench_error(bad):
    """A warmup share outside [0, 1] (the lr never reaches its peak), a non-positive clip norm (every gradient is
    clipped to zero: nothing trains) or a negative interval must be refused, not run silently."""
    with pytest.raises(BenchError):
        TrainConfig(**bad).validate()


def test_no_examples_is_a_bench_error(tmp_path):
    with pytest.raises(BenchError, match="no training examples"):
        run(tmp_path, TrainConfig(lr=1e-3), TrainData(n=0, sides={"chosen": []}))


def test_nan_loss_is_a_bench_error(tmp_path):
    class Exploding(Method):
        name = "exploding"

        def loss(self, batch, cfg):
            loss = sft_loss(batch.policy["chosen"])
            return loss * float("nan"), {}

    with pytest.raises(BenchError) as e:
        run(tmp_path, TrainConfig(lr=1e-3, batch_size=2, max_steps=3), method=Exploding())
    assert "loss became nan" in str(e.value) and "step 0" in str(e.value)


def test_infinite_loss_is_a_bench_error(tmp_path):
    class Inf(Method):
        name = "inf"

        def loss(self, batch, cfg):
            return sft_loss(batch.policy["chosen"]) + float("inf"), {}

    with pytest.raises(BenchError, match="loss became inf"):
        run(tmp_path, TrainConfig(lr=1e-3, batch_size=2, max_steps=2), method=Inf())


# ---------------------------------------------------------------- checkpoint selection


def _selection_run(tmp_path, scores: dict[int, float], eval_every=1, max_steps=5, keep=False):
    snapshots, counter = {}, {"step": 0}

    def evaluate(model):
        counter["step"] += eval_every if counter["step"] + eval_every <= max_steps else max_steps - counter["step"]
        s = counter["step"]
        snapshots[s] = weights(model)
        return {"score": scores[s], "extra": s}

    tcfg = TrainConfig(lr=1e-2, batch_size=2, max_steps=max_steps, eval_every=eval_every, keep_checkpoints=keep)
    model, result = run(tmp_path, tcfg, make_data(equal=False), evaluate=evaluate)
    return model, result, snapshots


def test_checkpoint_selection_picks_the_best_step(tmp_path):
    model, result, snaps = _selection_run(tmp_path, {1: 0.1, 2: 0.3, 3: 0.9, 4: 0.2, 5: 0.5})
    assert [e["step"] for e in result.evals] == [1, 2, 3, 4, 5]
    assert [e["selected"] for e in result.evals] == [False, False, True, False, False]
    assert [e["extra"] for e in result.evals] == [1, 2, 3, 4, 5]  # evaluator fields are kept
    assert result.final_dir == tmp_path / "final"
    final = weights(result.final_dir)
    assert_same_weights(final, snaps[3], atol=0)
    assert any(not torch.equal(final[k], snaps[5][k]) for k in final)  # and not the last step
    # every interval checkpoint stays in the work dir (a resume after a later crash selects again from them) until
    # the trainer's caller has stored the result and removes the work dir
    assert len(list((tmp_path / "checkpoints").iterdir())) == 5


def test_checkpoint_selection_ties_go_to_the_later_step_and_keep(tmp_path):
    _, result, snaps = _selection_run(tmp_path, {1: 0.5, 2: 0.7, 3: 0.7, 4: 0.1}, max_steps=4, keep=True)
    assert [e["selected"] for e in result.evals] == [False, False, True, False]
    assert_same_weights(weights(result.final_dir), snaps[3], atol=0)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-000001", "step-000002", "step-000003", "step-000004"]


def test_eval_every_evaluates_on_the_interval_and_at_the_end(tmp_path):
    _, result, snaps = _selection_run(tmp_path, {2: 0.2, 4: 0.8, 5: 0.4}, eval_every=2, max_steps=5)
    assert [e["step"] for e in result.evals] == [2, 4, 5]
    assert_same_weights(weights(result.final_dir), snaps[4], atol=0)


# ---------------------------------------------------------------- what a loss sees


def test_collate_aligns_cached_signals_with_packed_rows(tmp_path):
    """Signals gathered for a batch line up row by row with the policy's Packed rows (checked with the policy being
    the very model that produced the signals), and values carry vseg/vpos with one extra state per sequence."""
    from bench.signals.cache import SignalEntry, write_entry
    from bench.signals.compute import compute_side_signals
    from bench.train.trainer import collate, loss_batch

    teacher = tiny_model(seed=3).eval()
    data = make_data(n=6, equal=False)
    pairs = data.sides["chosen"]
    path = write_entry(tmp_path / "sig", {}, lambda w: compute_side_signals(
        teacher, pairs, w, k=5, tau=2.0, pad_id=PAD, batch_size=4, model_key="t", desc="t"), shard_size=4)
    entry = SignalEntry(path)
    data.signals = {f"dpo_teacher.{kind}.chosen": (entry, kind, "chosen") for kind in ("topk", "logps", "values")}
    idx = [4, 1, 5]
    batches, signals = collate(data, idx, PAD)
    with torch.no_grad():
        lb = loss_batch(teacher, None, batches, signals, torch.device("cpu"))
    p = lb.policy["chosen"]
    lengths = [len(pairs[i][1]) for i in idx]
    assert p.labels.tolist() == [t for i in idx for t in pairs[i][1]]

    topk = lb.signal("dpo_teacher", "topk", "chosen")
    vals, ids = torch.log_softmax(p.dense_logits(), -1).topk(5, -1)
    assert torch.equal(topk["topk_ids"].long(), ids)
    torch.testing.assert_close(topk["topk_logps"].float(), vals, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(lb.signal("dpo_teacher", "logps", "chosen")["logps"], p.token_logps(), atol=1e-5,
                               rtol=0)

    v = lb.signal("dpo_teacher", "values", "chosen")
    assert v["vseg"].tolist() == [b for b, T in enumerate(lengths) for _ in range(T + 1)]
    assert v["vpos"].tolist() == [t for T in lengths for t in range(T + 1)]
    T_of_row = torch.tensor(lengths)[v["vseg"]]
    inner = v["vpos"] < T_of_row
    assert torch.isnan(v["z_label"][~inner]).all() and not torch.isnan(v["z_label"][inner]).any()
    torch.testing.assert_close(v["z_label"][inner], p.dense_logits().gather(-1, p.labels[:, None]).squeeze(-1),
                               atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(v["v_lse"][inner], torch.logsumexp(p.dense_logits(), -1), atol=1e-4, rtol=1e-5)
