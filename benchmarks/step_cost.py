"""What a method's training step costs next to an SFT step on the same tokens, what the chunked LM head saves at a
large vocabulary, and what the teacher-signal cache costs (bytes per token, precompute throughput).

    python benchmarks/step_cost.py [--methods dckd,adpa,tvkd] [--batch 4] [--repeats 7] [--precision auto]
                                   [--parts methods,large,signals]

methods  The embedded student (smollm2-135m-l12) takes one optimizer step (collate with cached signals read from
         a real cache entry, body under the precision's autocast, loss on the chunked head, backward, clip, AdamW)
         with each method and with SFT on the SAME sides and tokens, interleaved round-robin (`--repeats` rounds
         after a warm-up). Teacher signals are computed by the real precompute (`bench.signals.compute`) from the embedded
         teacher (smollm2-135m) for the π_dpo/π_ref roles and from the student for π_sref; a stored-rollout side
         ("gen:…") is stood in for by the rejected responses (same shapes; the cost does not depend on which
         tokens). Memory: the peak bytes of tensors live during forward + backward above what the step started with (torch's
         profiler's allocation events; not wall-clock): activations, logits chunks, gradients.
large    V = 128,256 (Llama-3 vocabulary), ~1k response tokens per side, a small random 2-layer body: SFT and
         DCKD steps with the chunked head against the dense [N, V] logits, time and tensor peak.
signals  Bytes per token of a k = 50 cache entry (and of a cross-tokenizer `xtok` entry per student token), and the
         precompute's throughput (top-k, log-probs and values of every response position, written to disk) against
         a plain teacher forward (HF `model(...)`, logits of every position) over the same tokens, interleaved.
The last line is a JSON object with every ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.modeling.forward import pad_batch  # noqa: E402
from bench.method import Method  # noqa: E402
from bench.modeling.precision import autocast, resolve_precision  # noqa: E402
from bench.registry import get_method  # noqa: E402
from bench.signals.cache import bytes_per_token  # noqa: E402
from bench.signals.compute import compute_side_signals, topk_signal  # noqa: E402
from bench.train.trainer import TrainData  # noqa: E402
from benchmarks import workloads as W  # noqa: E402
from benchmarks.harness import OurStep, interleaved, load_avg, median, set_threads  # noqa: E402
from methods.sft import sft_loss  # noqa: E402

STUDENT_ROLES = {"reference", "sft_student"}


class SFTOn(Method):
    """SFT (token-mean NLL) summed over the given sides: the baseline with the method's tokens."""

    name = "sft_on_sides"

    def __init__(self, sides):
        self._sides = tuple(sides)

    def sides(self, cfg):
        return self._sides

    def loss(self, batch, cfg):
        return sum(sft_loss(batch.policy[s]) for s in self._sides), {}


def method_part(args, log) -> dict:
    precision = resolve_precision(args.precision)
    tok, pairs = W.embedded(args.batch)
    pairs["gen"] = pairs["rejected"]  # stand-in for a stored-rollout side (see module docstring)
    tmp = Path(tempfile.mkdtemp(prefix="step_cost-"))
    student, teacher = W.model(W.STUDENT), W.model(W.TEACHER)
    entries: dict[tuple[str, str], object] = {}

    def entry(role, side):
        src = "student" if role in STUDENT_ROLES else "teacher"
        if (src, side) not in entries:
            entries[(src, side)] = W.signal_entry(student if src == "student" else teacher, pairs[side],
                                                  tmp / f"{src}-{side}", pad_id=tok.pad_token_id, precision=precision)
        return entries[(src, side)]

    side_of = lambda s: "gen" if s.startswith("gen:") else s  # noqa: E731
    idx = list(range(args.batch))
    out = {}
    log(f"{'method':<12}{'step s':>8}{'SFT s':>8}{'time ×':>8}{'step MB':>9}{'SFT MB':>8}{'mem ×':>7}{'fwd MB':>8}"
        f"{'SFT fwd':>8}{'fwd ×':>7}{'tokens':>7}   ({precision}, batch {args.batch}, {args.repeats} rounds)")
    for name in args.methods.split(","):
        method = get_method(name)
        mcfg = method.make_config({})
        sides = {s: pairs[side_of(s)] for s in method.sides(mcfg)}
        sig = {spec.name: (entry(spec.model, side_of(spec.side)), spec.kind, spec.side) for spec in method.signals(mcfg)}
        data = TrainData(n=args.batch, sides=sides, signals=sig)
        ref = W.model(W.STUDENT).eval() if method.reference(mcfg) == "online" else None
        sft = SFTOn(sides)
        steps = {name: OurStep(student, method, mcfg, data, idx, tok.pad_token_id, precision, ref_model=ref),
                 "sft": OurStep(student, sft, None, TrainData(n=args.batch, sides=sides), idx, tok.pad_token_id,
                                precision)}
        times = interleaved(steps, args.repeats)
        mem = {k: s.peaks() for k, s in steps.items()}
        t_m, t_s = median(times[name]), median(times["sft"])
        (m_step, m_fwd), (s_step, s_fwd) = mem[name], mem["sft"]
        out[name] = {"time_ratio": round(t_m / t_s, 3), "mem_ratio": round(m_step / s_step, 3),
                     "fwd_mem_ratio": round(m_fwd / s_fwd, 3), "step_s": round(t_m, 3), "sft_s": round(t_s, 3),
                     "step_peak_mb": round(m_step / 1e6, 1), "sft_step_peak_mb": round(s_step / 1e6, 1),
                     "fwd_peak_mb": round(m_fwd / 1e6, 1), "sft_fwd_peak_mb": round(s_fwd / 1e6, 1),
                     "tokens": steps["sft"].tokens}
        r = out[name]
        log(f"{name:<12}{t_m:>8.2f}{t_s:>8.2f}{r['time_ratio']:>8.2f}{m_step / 1e6:>9.0f}{s_step / 1e6:>8.0f}"
            f"{r['mem_ratio']:>7.2f}{m_fwd / 1e6:>8.0f}{s_fwd / 1e6:>8.0f}{r['fwd_mem_ratio']:>7.2f}{r['tokens']:>7}"
            f"   {load_avg()}")
        del steps, ref
    return out


def random_llama(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def large_part(args, log) -> dict:
    V, n_seq, prompt, resp = 128256, 4, 32, 256
    precision = resolve_precision(args.precision)
    g = torch.Generator().manual_seed(0)
    pairs = {s: [(torch.randint(1, V, (prompt,), generator=g).tolist(), torch.randint(1, V, (resp,), generator=g)
                  .tolist()) for _ in range(n_seq)] for s in ("chosen", "rejected")}
    model, teacher = random_llama(V), random_llama(V, seed=1).eval()

    class Mem:  # an in-memory signal entry: the teacher's top-k of each side
        def __init__(self, side):
            with torch.no_grad():
                b = pad_batch(pairs[side], 0)
                h = teacher.model(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
                z = teacher.lm_head(h[b.row_b, b.row_pos])
            self.sig = topk_signal(z, 50)
            self.rows = [resp] * n_seq

        def gather(self, kind, idx):
            return {k: torch.cat([v[i * resp:(i + 1) * resp] for i in idx]) for k, v in self.sig.items()}

    sig = {f"dpo_teacher.topk.{s}": (Mem(s), "topk", s) for s in ("chosen", "rejected")}
    dckd = get_method("dckd")
    data = TrainData(n=n_seq, sides=pairs, signals=sig)
    sft_data = TrainData(n=n_seq, sides=pairs)
    idx = list(range(n_seq))
    steps = {}
    for head in ("chunked", "dense"):
        chunked = head == "chunked"
        steps[f"sft/{head}"] = OurStep(model, SFTOn(("chosen", "rejected")), None, sft_data, idx, 0, precision,
                                       chunked=chunked)
        steps[f"dckd/{head}"] = OurStep(model, dckd, dckd.make_config({}), data, idx, 0, precision, chunked=chunked)
    times = interleaved(steps, max(3, args.repeats // 2))
    mem = {k: s.peaks()[0] for k, s in steps.items()}
    log(f"\nlarge vocabulary: V={V}, {n_seq}×{resp} response tokens per side, 2 sides, 2-layer random body ({precision})")
    log(f"{'step':<14}{'time s':>8}{'peak MB':>9}")
    for k in steps:
        log(f"{k:<14}{median(times[k]):>8.2f}{mem[k] / 1e6:>9.0f}")
    log(load_avg())
    return {m: {"time_dense_over_chunked": round(median(times[f"{m}/dense"]) / median(times[f"{m}/chunked"]), 3),
                "mem_dense_over_chunked": round(mem[f"{m}/dense"] / mem[f"{m}/chunked"], 3),
                "peak_mb_chunked": round(mem[f"{m}/chunked"] / 1e6, 1), "peak_mb_dense": round(mem[f"{m}/dense"] / 1e6, 1)}
            for m in ("sft", "dckd")}


def signals_part(args, log) -> dict:
    precision = resolve_precision(args.precision)
    tok, pairs = W.embedded(args.signal_examples, sides=("chosen",))
    teacher = W.model(W.TEACHER).eval()
    p = pairs["chosen"]
    tmp = Path(tempfile.mkdtemp(prefix="signal_cost-"))
    entry = W.signal_entry(teacher, p, tmp / "probe", pad_id=tok.pad_token_id, precision=precision)
    bpt = bytes_per_token(entry)
    bs = 8
    batches = [pad_batch(p[i:i + bs], tok.pad_token_id) for i in range(0, len(p), bs)]
    tokens = sum(b.n_tokens for b in batches)

    class Null:
        def add(self, **_):
            pass

    def precompute():
        compute_side_signals(teacher, p, {"topk": Null(), "logps": Null(), "values": Null()}, k=50, tau=2.0,
                             pad_id=tok.pad_token_id, batch_size=bs, model_key="bench", desc="signals",
                             autocast=lambda L: autocast(precision, seq_len=L))

    @torch.no_grad()
    def plain():
        for b in batches:
            with autocast(precision, seq_len=b.input_ids.shape[1]):
                teacher(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()

    xtok = bytes_per_token(W.xtok_entry(teacher, p, tmp / "xtok", pad_id=tok.pad_token_id, precision=precision))
    times = interleaved({"precompute": precompute, "plain forward": plain}, max(3, args.repeats // 2))
    ratio = median(times["plain forward"]) / median(times["precompute"])
    log("\nsignal cache (k=50): " + ", ".join(f"{k} {v:.1f} B/token" for k, v in bpt.items())
        + f"; top-k + logps = {bpt['topk'] + bpt['logps']:.1f} B/token")
    log(f"cross-tokenizer entry (xtok, k=50, a teacher of another tokenizer projected onto the student's rows): "
        f"{xtok['xtok']:.1f} B per student token")
    log(f"precompute {tokens / median(times['precompute']):.0f} tokens/s vs plain teacher forward "
        f"{tokens / median(times['plain forward']):.0f} tokens/s: {ratio:.2f}× ({precision}, {len(p)} sequences)")
    log(load_avg())
    return {"bytes_per_token": {k: round(v, 1) for k, v in bpt.items()},
            "topk_plus_logps_bytes_per_token": round(bpt["topk"] + bpt["logps"], 1),
            "xtok_bytes_per_student_token": round(xtok["xtok"], 1),
            "precompute_over_plain_forward_throughput": round(ratio, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="dckd,adpa,tvkd")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--parts", default="methods,large,signals")
    ap.add_argument("--signal-examples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.repeats < 7:
        ap.error("--repeats must be at least 7 (medians of interleaved rounds)")
    torch.manual_seed(0)
    print(f"{load_avg()}; torch threads {set_threads(args.threads)}", flush=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    parts = {"methods": method_part, "large": large_part, "signals": signals_part}
    result = {name: parts[name](args, log) for name in args.parts.split(",")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
