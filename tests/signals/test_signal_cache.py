"""bench/signals/compute.py + bench/signals/cache.py: cached teacher signals equal dense recomputation, read back in any order,
are written atomically and in shards."""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.signals.cache import KIND_FIELDS, PASS_KINDS, SignalEntry, bytes_per_token, write_entry
from bench.signals.compute import FORWARD_PASSES, compute_side_signals

pytestmark = pytest.mark.usefixtures("single_thread_module")

V, PAD, TAU = 64, 0, 2.0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=PAD)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharper distributions than the default init, so top-k and tail are non-trivial
        m.model.embed_tokens.weight.mul_(40)
    return m


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(5)
    lens = [(4, 3), (2, 7), (6, 1), (3, 5), (5, 2)]
    return [(torch.randint(1, V, (p,), generator=g).tolist(), torch.randint(1, V, (r,), generator=g).tolist())
            for p, r in lens]


def fill_with(model, pairs, k, batch_size=2, key="m"):
    def fill(writers):
        compute_side_signals(model, pairs, writers, k=k, tau=TAU, pad_id=PAD, batch_size=batch_size, model_key=key,
                             desc="test")
    return fill


def dense_states(model, prompt, resp):
    """[T+1, V] logits of the states s_1..s_{T+1} from an unpadded full forward pass."""
    ids = torch.tensor([prompt + resp])
    with torch.no_grad():
        z = model(input_ids=ids).logits[0]
    return z[len(prompt) - 1:].double()


@pytest.fixture(scope="module")
def entry(model, pairs, tmp_path_factory):
    path = write_entry(tmp_path_factory.mktemp("sig") / "e", {"test": 1}, fill_with(model, pairs, k=8))
    return SignalEntry(path)


def test_topk_and_logps_match_dense_log_softmax(entry, model, pairs):
    for i, (p, r) in enumerate(pairs):
        T = len(r)
        logp = torch.log_softmax(dense_states(model, p, r)[:T], -1)
        ex = entry.example("topk", i)
        assert ex["topk_ids"].dtype == torch.int32 and ex["topk_logps"].dtype == torch.float16
        assert ex["tail"].dtype == torch.float32 and ex["topk_ids"].shape == (T, 8)
        vals, ids = logp.topk(8, dim=-1)
        assert torch.equal(ex["topk_ids"].long(), ids)
        torch.testing.assert_close(ex["topk_logps"].double(), vals, atol=2e-3, rtol=1e-3)
        assert (ex["topk_logps"][:, :-1] >= ex["topk_logps"][:, 1:]).all()  # sorted descending
        tail = (1 - vals.exp().sum(-1)).clamp(min=0)
        torch.testing.assert_close(ex["tail"].double(), tail, atol=1e-5, rtol=0)
        torch.testing.assert_close(ex["tail"].double(), 1 - ex["topk_logps"].double().exp().sum(-1), atol=5e-3,
                                   rtol=0)
        assert (ex["tail"] >= 0).all() and (ex["tail"] < 1).all()
        lp = entry.example("logps", i)["logps"]
        assert lp.dtype == torch.float32 and lp.shape == (T,)
        torch.testing.assert_close(lp.double(), logp[torch.arange(T), torch.tensor(r)], atol=1e-5, rtol=0)


def test_values_match_dense_and_have_one_extra_state_per_sequence(entry, model, pairs):
    total_rows = 0
    for i, (p, r) in enumerate(pairs):
        T = len(r)
        z = dense_states(model, p, r)  # [T+1, V]
        v = entry.example("values", i)
        assert set(v) == set(KIND_FIELDS["values"])
        for name, t in v.items():
            assert t.shape == (T + 1,) and t.dtype == torch.float32, name
        ref = {
            "v_soft": TAU * torch.logsumexp(z / TAU, -1), "v_lse": torch.logsumexp(z, -1),
            "v_max": z.max(-1).values, "v_expect": (torch.softmax(z, -1) * z).sum(-1),
            "v_margin": z.topk(2, -1).values[:, 0] - z.topk(2, -1).values[:, 1],
        }
        for name, want in ref.items():
            torch.testing.assert_close(v[name].double(), want, atol=1e-4, rtol=1e-5, msg=name)
        zl = v["z_label"]
        assert torch.isnan(zl).tolist() == [False] * T + [True]  # NaN exactly at the final state
        torch.testing.assert_close(zl[:T].double(), z[torch.arange(T), torch.tensor(r)], atol=1e-4, rtol=1e-5)
        total_rows += T + 1
    N, B = sum(len(r) for _, r in pairs), len(pairs)
    assert entry.manifest["kinds"]["values"]["rows"] == N + B == total_rows
    assert entry.manifest["kinds"]["topk"]["rows"] == N == entry.manifest["kinds"]["logps"]["rows"]
    assert entry.manifest["key"] == {"test": 1}


def test_bytes_per_token_k50(model, pairs, tmp_path):
    e = SignalEntry(write_entry(tmp_path / "k50", {}, fill_with(model, pairs, k=50)))
    bpt = bytes_per_token(e)
    assert bpt["topk"] == 50 * 2 + -(-50 * 15 // 8)  # uint16 ids + 15-bit packed log-probs, no stored tail
    assert bpt["logps"] == 4
    assert bpt["topk"] + bpt["logps"] <= 200  # issue 12's budget at k = 50 (format 2: 308)
    N, B = sum(len(r) for _, r in pairs), len(pairs)
    assert e.manifest["kinds"]["values"]["bytes"] == 6 * 4 * (N + B)
    assert e.example("topk", 1)["topk_ids"].shape == (len(pairs[1][1]), 50)


def test_gather_in_arbitrary_order(entry, pairs):
    order = [3, 0, 4, 0, 2]
    for kind in ("topk", "logps", "values"):
        got = entry.gather(kind, order)
        for name in KIND_FIELDS[kind]:
            want = torch.cat([entry.example(kind, i)[name] for i in order])
            assert torch.equal(torch.nan_to_num(got[name], nan=-7.0), torch.nan_to_num(want, nan=-7.0)), (kind, name)
    lengths = [len(pairs[i][1]) for i in order]
    assert entry.gather("logps", order)["logps"].shape == (sum(lengths),)
    assert entry.gather("values", order)["v_soft"].shape == (sum(lengths) + len(order),)


def test_batch_size_does_not_change_the_signals(entry, model, pairs, tmp_path):
    other = SignalEntry(write_entry(tmp_path / "bs5", {}, fill_with(model, pairs, k=8, batch_size=5)))
    for kind in PASS_KINDS:
        a, b = entry.gather(kind, list(range(len(pairs)))), other.gather(kind, list(range(len(pairs))))
        for name in KIND_FIELDS[kind]:
            torch.testing.assert_close(a[name].double(), b[name].double(), atol=2e-3, rtol=1e-3, equal_nan=True)


def test_forward_passes_are_counted(model, pairs, tmp_path):
    before = FORWARD_PASSES["count-me"]
    write_entry(tmp_path / "c", {}, fill_with(model, pairs, k=4, batch_size=2, key="count-me"))
    assert FORWARD_PASSES["count-me"] - before == math.ceil(len(pairs) / 2)


def test_failed_fill_leaves_nothing(model, pairs, tmp_path):
    def fill(writers):
        fill_with(model, pairs[:2], k=4)(writers)
        writers["topk"].flush()
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="killed"):
        write_entry(tmp_path / "entry", {}, fill, shard_size=1)
    assert not (tmp_path / "entry").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]  # no temp dir left behind (lock files stay, by design)


def test_interrupt_leaves_nothing(tmp_path):
    def fill(writers):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_entry(tmp_path / "entry", {}, fill)
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


def test_complete_entry_is_not_rewritten(model, pairs, tmp_path):
    path = write_entry(tmp_path / "e", {"v": 1}, fill_with(model, pairs, k=4))
    stamp = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}

    def must_not_run(writers):
        raise AssertionError("fill called for a complete entry")

    assert write_entry(tmp_path / "e", {"v": 2}, must_not_run) == path
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == stamp
    assert json.loads((path / "manifest.json").read_text())["key"] == {"v": 1}


def test_incomplete_entry_is_refused_on_read(tmp_path):
    (tmp_path / "half").mkdir()
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="incomplete"):
        SignalEntry(tmp_path / "half")


def test_shards_read_back_identically(entry, model, pairs, tmp_path):
    sharded = SignalEntry(write_entry(tmp_path / "sh", {}, fill_with(model, pairs, k=8), shard_size=2))
    for kind in PASS_KINDS:
        files = sorted(p.name for p in sharded.path.glob(f"{kind}-*.safetensors"))
        assert files == [f"{kind}-00000.safetensors", f"{kind}-00001.safetensors", f"{kind}-00002.safetensors"]
        shards = sharded.manifest["kinds"][kind]["shards"]
        assert [s["examples"] for s in shards] == [2, 2, 1]
        order = [4, 1, 2, 3, 0, 2]
        a, b = entry.gather(kind, order), sharded.gather(kind, order)
        for name in KIND_FIELDS[kind]:
            assert torch.equal(torch.nan_to_num(a[name], nan=-7.0), torch.nan_to_num(b[name], nan=-7.0)), (kind, name)
        for i in range(len(pairs)):
            for name, t in entry.example(kind, i).items():
                assert torch.equal(torch.nan_to_num(t, nan=-7.0),
                                   torch.nan_to_num(sharded.example(kind, i)[name], nan=-7.0))
    with pytest.raises(IndexError):
        sharded.example("topk", -1)
