"""TRL as an independent oracle (trl is a test-only dependency), on identical random inputs, float64, 1e-6.

How TRL is invoked (no full trainer is constructed — a trainer needs a real model, tokenizer and datasets):
  * DPO / WPO / RPO: the real `trl.DPOTrainer._compute_loss(model, inputs)` on `object.__new__(DPOTrainer)` with the
    attributes that method reads (beta, loss_types=["sigmoid"], use_weighting, precompute_ref_logps=True so the
    reference log-probs come from `inputs`, a CPU accelerator stub whose gather is the identity, metric dicts).
    In TRL 1.16 the policy is called as `model(..., labels=labels, fused_lm_head=True)` and must return a
    `FusedCausalLMOutput` of per-token fields (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) from a
    chunked fused LM-head kernel whose accumulators are float32 only. To stay in float64 the test model returns
    those fields computed in float64 by their documented definitions from our logits; a separate test runs TRL's
    real kernel (`trl.kernels.ChunkedLogProbFunction`, float32, identity LM head) and checks it agrees with that
    float64 stand-in to float32 precision. The padded [prompt | response | pad] layout, shifting and masking are
    TRL's own.
  * SimPO: the real `trl.experimental.cpo.CPOTrainer.get_batch_loss_metrics(model, batch)` (concatenation,
    `get_batch_logps(average_log_prob=True)`, `cpo_loss` with loss_type="simpo", cpo_alpha=0) on
    `object.__new__(CPOTrainer)`; the model returns our float64 logits in the padded layout.
  * GKD: the static `GKDTrainer.generalized_jsd_loss` called directly (per token with reduction="none" summed over
    the vocabulary, and "batchmean" with labels), and the real `GKDTrainer.compute_loss` on
    `object.__new__(GKDTrainer)` with student/teacher stubs returning float64 logits (shift + label masking are
    TRL's). Our side uses the cached-signal form with k = V−1, which is exact.
"""
from __future__ import annotations

import types
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl")
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.gkd import GKDTrainer  # noqa: E402
from trl.trainer.utils import FusedCausalLMOutput  # noqa: E402

from bench.method import LossBatch, SignalSpec  # noqa: E402
from bench.tensors import Packed  # noqa: E402
from methods.dpo import DPO  # noqa: E402
from methods.gkd import GKD, gkd_token_loss  # noqa: E402
from methods.rpo import RPO  # noqa: E402
from methods.simpo import SimPO  # noqa: E402
from methods.wpo import WPO, wpo_log_weight, wpo_weights  # noqa: E402

D = torch.float64
TOL = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- random pairs in packed and padded layouts
class Pairs:
    """B preference pairs with random logits, kept both as our Packed rows and as TRL's padded batch."""

    def __init__(self, B=3, V=11, seed=0, scale=3.0):
        g = torch.Generator().manual_seed(seed)
        self.B, self.V = B, V
        self.len = {"chosen": torch.randint(1, 6, (B,), generator=g).tolist(),
                    "rejected": torch.randint(1, 6, (B,), generator=g).tolist()}
        self.prompt_len = torch.randint(1, 4, (B,), generator=g).tolist()
        self.packed = {}
        for side in ("chosen", "rejected"):
            n = sum(self.len[side])
            logits = (torch.randn(n, V, generator=g, dtype=D) * scale).requires_grad_(True)
            labels = torch.randint(0, V, (n,), generator=g)
            seg = torch.repeat_interleave(torch.arange(B), torch.tensor(self.len[side]))
            self.packed[side] = Packed(logits, labels, seg, B)
        self.ref = {side: -torch.rand(self.packed[side].labels.numel(), generator=g, dtype=D) * 5
                    for side in ("chosen", "rejected")}
        self.L = max(p + max(self.len["chosen"][b], self.len["rejected"][b]) for b, p in enumerate(self.prompt_len)) + 1
        self.junk = torch.randn(2 * B, self.L, V, generator=g, dtype=D) * scale  # fills non-response positions

    def batch(self) -> LossBatch:
        sig = {SignalSpec("reference", s, "logps").name: {"logps": self.ref[s]} for s in ("chosen", "rejected")}
        return LossBatch(policy=dict(self.packed), signals=sig)

    def padded(self, side):
        """input_ids [B, L], completion_mask [B, L] and full-length logits [B, L, V] (position j predicts j+1)."""
        p = self.packed[side]
        ids = torch.zeros(self.B, self.L, dtype=torch.long)
        mask = torch.zeros(self.B, self.L, dtype=torch.long)
        attn = torch.zeros(self.B, self.L, dtype=torch.long)
        off = 0 if side == "chosen" else self.B
        rows_logits = []
        start = 0
        for b in range(self.B):
            P, T = self.prompt_len[b], self.len[side][b]
            ids[b, :P] = 1 + b  # arbitrary prompt tokens
            ids[b, P:P + T] = p.labels[start:start + T]
            mask[b, P:P + T] = 1
            attn[b, :P + T] = 1
            row = self.junk[off + b].clone()
            row = torch.cat([row[:P - 1], p.logits[start:start + T], row[P - 1 + T:]], dim=0)
            rows_logits.append(row)
            start += T
        return ids, mask, attn, torch.stack(rows_logits)


class _Acc:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x


# ---------------------------------------------------------------- DPO / WPO through DPOTrainer._compute_loss
def fused_fields(logits, labels):
    """FusedCausalLMOutput per-token fields in float64, by the definitions in trl.trainer.utils: logits [B, L, V]
    at positions 0..L−2, labels[:, 1:] (−100 = ignored → fields 0)."""
    z = logits[:, :-1]
    lab = labels[:, 1:]
    m = lab != -100
    lse = torch.logsumexp(z, -1)
    logp = z.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) - lse
    prob = torch.softmax(z, -1)
    ent = lse - (prob * z).sum(-1)
    lssp = torch.log((prob * prob).sum(-1))  # log Σ_v p_v², computed naively (our code uses logsumexp(2z) − 2·lse)
    mean_logits = z.mean(-1)
    is_top1 = z.argmax(-1) == lab
    zero = lambda x: x.masked_fill(~m, 0)  # noqa: E731
    return dict(log_probs=zero(logp), entropy=zero(ent), log_sum_sq_probs=zero(lssp.detach()),
                mean_logits=zero(mean_logits.detach()), is_top1=is_top1 & m, label_mask=m)


class FusedStub:
    """Stands in for a model patched by trl's add_fused_lm_head; returns fields from preset float64 logits."""

    training = True

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, **kw):
        assert fused_lm_head and labels is not None
        f = fused_fields(self.logits, labels)
        loss = -f["log_probs"].sum() / f["label_mask"].sum()
        return FusedCausalLMOutput(loss=loss, **f)


def trl_dpo_loss(pairs: Pairs, beta: float, use_weighting: bool, idx=None, losses=(("sigmoid", 1.0),)):
    """Loss from the real DPOTrainer._compute_loss; `idx` selects a subset of the pairs; `losses` are TRL's
    (loss_type, loss_weight) terms."""
    idx = list(range(pairs.B)) if idx is None else idx
    parts = {s: pairs.padded(s) for s in ("chosen", "rejected")}
    cat = lambda k: torch.cat([parts["chosen"][k][idx], parts["rejected"][k][idx]])  # noqa: E731
    input_ids, completion_mask, attention_mask, logits = cat(0), cat(1), cat(2), cat(3)
    ref = {}
    for s in ("chosen", "rejected"):
        p = pairs.packed[s]
        ref[s] = torch.zeros(pairs.B, dtype=D).index_add(0, p.seg, pairs.ref[s])[idx]
    tr = object.__new__(DPOTrainer)
    model = FusedStub(logits)
    vars(tr).update(model=model, accelerator=_Acc(), aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
                    f_divergence_type="reverse_kl", loss_types=[t for t, _ in losses],
                    loss_weights=[w for _, w in losses], beta=beta,
                    use_weighting=use_weighting, label_smoothing=0.0, _total_train_tokens=0, _tp_size=1,
                    _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, args=types.SimpleNamespace())
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
                  ref_chosen_logps=ref["chosen"], ref_rejected_logps=ref["rejected"])
    return tr._compute_loss(model, inputs, return_outputs=False), tr


@pytest.mark.parametrize("seed,beta", [(0, 0.05), (1, 0.5), (2, 2.0)])
def test_dpo_sigmoid_matches_trl(seed, beta):
    pairs = Pairs(seed=seed)
    ours, _ = DPO().loss(pairs.batch(), DPO().make_config({"beta": beta}))
    theirs, tr = trl_dpo_loss(pairs, beta, use_weighting=False)
    assert theirs.dtype == D
    assert abs(ours.item() - theirs.item()) < TOL
    # gradients w.r.t. the response logits agree too (TRL's loss is a function of the same leaf tensors)
    for s in ("chosen", "rejected"):
        g_ours = torch.autograd.grad(ours, pairs.packed[s].logits, retain_graph=True)[0]
        g_theirs = torch.autograd.grad(theirs, pairs.packed[s].logits, retain_graph=True)[0]
        assert torch.allclose(g_ours, g_theirs, atol=TOL)
    assert tr._metrics["train"]["rewards/accuracies"]  # TRL's own metric path ran


@pytest.mark.parametrize("seed,beta,alpha", [(5, 0.1, 1.0), (6, 0.5, 0.3)])
def test_rpo_tokens_matches_trl_sigmoid_plus_sft(seed, beta, alpha):
    """RPO with nll_mean=tokens is TRL's loss_type=["sigmoid", "sft"], loss_weights=[1, α] (formerly rpo_alpha)."""
    pairs = Pairs(seed=seed, B=4)
    cfg = RPO().make_config({"beta": beta, "alpha": alpha, "nll_mean": "tokens"})
    ours, _ = RPO().loss(pairs.batch(), cfg)
    theirs, _ = trl_dpo_loss(pairs, beta, False, losses=(("sigmoid", 1.0), ("sft", alpha)))
    assert abs(ours.item() - theirs.item()) < TOL
    g_ours = torch.autograd.grad(ours, pairs.packed["chosen"].logits, retain_graph=True)[0]
    g_theirs = torch.autograd.grad(theirs, pairs.packed["chosen"].logits)[0]
    assert torch.allclose(g_ours, g_theirs, atol=TOL)
    # the paper's per-response mean is a different number whenever the chosen lengths differ
    assert len(set(pairs.len["chosen"])) > 1
    paper, _ = RPO().loss(pairs.batch(), RPO().make_config({"beta": beta, "alpha": alpha}))
    assert abs(paper.item() - theirs.item()) > 10 * TOL


@pytest.mark.parametrize("seed", [3, 4])
def test_wpo_weights_and_loss_match_trl_use_weighting(seed):
    pairs = Pairs(seed=seed, B=4, scale=4.0)
    beta = 0.3
    # per-pair weights: TRL's weighted / unweighted loss on one-pair batches = that pair's weight
    w_ours = wpo_weights(wpo_log_weight(pairs.packed["chosen"]), wpo_log_weight(pairs.packed["rejected"]), clamp=False)
    for b in range(pairs.B):
        lw, _ = trl_dpo_loss(pairs, beta, True, idx=[b])
        lu, _ = trl_dpo_loss(pairs, beta, False, idx=[b])
        assert abs((lw / lu).item() - w_ours[b].item()) < TOL * max(1.0, w_ours[b].item())
    # the whole-batch loss: TRL does not clamp, so compare with clamp_weight=False
    ours, _ = WPO().loss(pairs.batch(), WPO().make_config({"beta": beta, "clamp_weight": False}))
    theirs, _ = trl_dpo_loss(pairs, beta, True)
    assert abs(ours.item() - theirs.item()) < TOL
    g_ours = torch.autograd.grad(ours, pairs.packed["chosen"].logits)[0]
    g_theirs = torch.autograd.grad(theirs, pairs.packed["chosen"].logits)[0]
    assert torch.allclose(g_ours, g_theirs, atol=TOL)  # both treat the weight as a constant
    # our default clamps at 1: that is min(1, TRL's weight) per pair
    assert torch.allclose(wpo_weights(wpo_log_weight(pairs.packed["chosen"]),
                                      wpo_log_weight(pairs.packed["rejected"])), w_ours.clamp(max=1))


def test_fused_stub_matches_trl_kernel_float32():
    """The float64 stand-in computes what TRL's real chunked LM-head kernel computes (at float32 precision)."""
    from trl.kernels import ChunkedLogProbFunction

    g = torch.Generator().manual_seed(7)
    N, V = 9, 13
    z = torch.randn(N, V, generator=g, dtype=D) * 3
    labels = torch.randint(0, V, (N,), generator=g)
    outs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    logp, ent, lssp, mean_logits, top1 = ChunkedLogProbFunction.apply(
        z.float(), torch.eye(V), None, labels, 1.0, 5, None, 1.0, outs)
    ref = fused_fields(torch.cat([z, z[:1]])[None], torch.cat([labels[:1], labels])[None])
    assert torch.allclose(logp.double(), ref["log_probs"][0], atol=1e-5)
    assert torch.allclose(ent.double(), ref["entropy"][0], atol=1e-5)
    assert torch.allclose(lssp.double(), ref["log_sum_sq_probs"][0], atol=1e-5)
    assert torch.allclose(mean_logits.double(), ref["mean_logits"][0], atol=1e-5)
    assert torch.equal(top1, ref["is_top1"][0])
    from methods.wpo import log_sum_sq_probs
    assert torch.allclose(log_sum_sq_probs(z), ref["log_sum_sq_probs"][0], atol=1e-12)


# ---------------------------------------------------------------- SimPO through CPOTrainer.get_batch_loss_metrics
class LogitsStub:
    training = True

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, input_ids=None, attention_mask=None, **kw):
        assert input_ids.shape[:2] == self.logits.shape[:2]
        return types.SimpleNamespace(logits=self.logits)

    def eval(self):
        return self


def trl_simpo_loss(pairs: Pairs, beta: float, gamma: float):
    batch = {}
    logits = []
    for s in ("chosen", "rejected"):
        ids, mask, attn, lg = pairs.padded(s)
        batch[f"{s}_input_ids"], batch[f"{s}_attention_mask"] = ids, attn
        batch[f"{s}_labels"] = ids.masked_fill(mask == 0, -100)
        logits.append(lg)
    tr = object.__new__(CPOTrainer)
    vars(tr).update(accelerator=_Acc(), is_encoder_decoder=False, pad_token_id=0, aux_loss_enabled=False,
                    cpo_alpha=0.0, loss_type="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=0.0, alpha=0.0)
    loss, metrics = tr.get_batch_loss_metrics(LogitsStub(torch.cat(logits)), batch)
    return loss, metrics


@pytest.mark.parametrize("seed,beta,gamma", [(10, 2.0, 1.0), (11, 0.5, 0.25), (12, 10.0, 3.0)])
def test_simpo_matches_trl_cpo_simpo(seed, beta, gamma):
    pairs = Pairs(seed=seed)
    ours, _ = SimPO().loss(pairs.batch(), SimPO().make_config({"beta": beta, "gamma": gamma}))
    theirs, metrics = trl_simpo_loss(pairs, beta, gamma)
    assert abs(ours.item() - theirs.item()) < TOL
    for s in ("chosen", "rejected"):
        g_ours = torch.autograd.grad(ours, pairs.packed[s].logits, retain_graph=True)[0]
        g_theirs = torch.autograd.grad(theirs, pairs.packed[s].logits, retain_graph=True)[0]
        assert torch.allclose(g_ours, g_theirs, atol=TOL)
    assert metrics["nll_loss"] == 0.0  # cpo_alpha = 0: no SFT term


# ---------------------------------------------------------------- GKD vs GKDTrainer.generalized_jsd_loss
def topk_signal(t_logits, k):
    logp = F.log_softmax(t_logits, dim=-1)
    vals, ids = logp.topk(k, dim=-1)
    return {"topk_ids": ids, "topk_logps": vals, "tail": (1.0 - vals.exp().sum(-1)).clamp(min=0.0)}


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gkd_per_token_matches_trl(beta):
    g = torch.Generator().manual_seed(20)
    N, V = 12, 9
    s = (torch.randn(N, V, generator=g, dtype=D) * 3).requires_grad_(True)
    t = torch.randn(N, V, generator=g, dtype=D) * 3
    sig = topk_signal(t, V - 1)
    ours = gkd_token_loss(s, sig["topk_ids"], sig["topk_logps"], sig["tail"], beta)
    theirs = GKDTrainer.generalized_jsd_loss(s[None], t[None], beta=beta, reduction="none").sum(-1)[0]
    assert torch.allclose(ours, theirs, atol=TOL)
    g1 = torch.autograd.grad(ours.sum(), s)[0]
    g2 = torch.autograd.grad(theirs.sum(), s)[0]
    assert torch.allclose(g1, g2, atol=TOL)
    labels = torch.randint(0, V, (1, N), generator=g)
    labels[0, :3] = -100
    mean_theirs = GKDTrainer.generalized_jsd_loss(s[None], t[None], labels=labels, beta=beta)
    assert abs(ours[3:].mean().item() - mean_theirs.item()) < TOL


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_gkd_loss_matches_trl_compute_loss(beta):
    """Whole-batch GKD on dataset responses (λ = 0) vs GKDTrainer.compute_loss on the padded batch."""
    pairs = Pairs(seed=30, B=3, V=8)
    ids, mask, attn, s_logits = pairs.padded("chosen")
    g = torch.Generator().manual_seed(31)
    t_logits = torch.randn(s_logits.shape, generator=g, dtype=D) * 3
    labels = ids.masked_fill(mask == 0, -100)
    tr = object.__new__(GKDTrainer)
    vars(tr).update(teacher_model=LogitsStub(t_logits), beta=beta)
    theirs = tr.compute_loss(LogitsStub(s_logits), {"input_ids": ids, "attention_mask": attn, "labels": labels})
    # the teacher's rows aligned with our packed rows: position j predicts token j+1
    rows = torch.cat([t_logits[b, pairs.prompt_len[b] - 1: pairs.prompt_len[b] - 1 + pairs.len["chosen"][b]]
                      for b in range(pairs.B)])
    p = pairs.packed["chosen"]
    batch = LossBatch(policy={"chosen": p}, signals={"dpo_teacher.topk.chosen": topk_signal(rows, pairs.V - 1)})
    ours, _ = GKD().loss(batch, GKD().make_config({"beta": beta, "lmbda": 0.0}))
    assert abs(ours.item() - theirs.item()) < TOL
    g1 = torch.autograd.grad(ours, p.logits, retain_graph=True)[0]
    g2 = torch.autograd.grad(theirs, p.logits)[0]
    assert torch.allclose(g1, g2, atol=TOL)
