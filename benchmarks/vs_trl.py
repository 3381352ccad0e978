"""This project's training step against TRL's on the same work, speed and memory side by side.

    python benchmarks/vs_trl.py [--tasks dpo,kd] [--batches 4,8] [--repeats 8] [--threads N] [--defaults-only]

DPO  the full SmolLM2-135M (the embedded teacher) as the policy, the embedded preference pairs tokenized by this
     project's encoder; TRL 1.16 `DPOTrainer` (its collator, `training_step` with its fused LM head, its optimizer)
     against our DPO step (`bench.train.trainer`'s step: chunked head, cached reference log-probs). Reference log-probs
     are precomputed for both: TRL's by `DPOTrainer.compute_ref_log_probs`, ours by the signal precompute into a
     cache entry on disk.
KD   the embedded student (smollm2-135m-l12) distilled from the embedded teacher on the chosen responses: TRL's
     `DistillationTrainer` (chunked JSD, teacher run online; its on-policy generation bypassed, the batch is the
     dataset's responses) and TRL's experimental `GKDTrainer` (lmbda = 0: dataset responses only; full logits,
     teacher online), both at JSD β = 0.5, against our GKD step (same β, the teacher's top-k from the cache, k = 50).
Settings: TRL at its real defaults (`bf16=True` where the machine has bf16, `gradient_checkpointing=True`) and in
fp32, with and without checkpointing; ours at the embedded preset's student settings (`precision`, `grad_ckpt`),
fp32, and each checkpointing mode. Time: every configuration of one precision in ONE process (accelerate allows one
mixed-precision state per process), steps interleaved round-robin after a warm-up, medians; tokens/s counts the
batch's non-pad tokens (prompt + response, every sequence). Memory: peak RSS of a fresh process per configuration
that loads what it needs, precomputes its reference/teacher signals, and takes 3 steps; "steady" is its resident
memory after the third step (weights, optimizer state, the runtime and the allocator's retained heap), so peak -
steady is the step's transient (gradients, activations, logits).
The last line is a JSON object: dpo_/kd_ tokens_per_s_ratio and peak_rss_ratio (ours at the preset default / TRL
at its default), per batch size, and every measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.harness import (OurStep, child_rss, current_rss_bytes, gb, interleaved, load_avg, median,  # noqa: E402
                                peak_rss_bytes, set_threads)

HERE = Path(__file__).resolve()
KD_BETA = 0.5


def preset_student_settings() -> dict:
    from bench.config import load_run_preset
    from bench.modeling.precision import resolve_precision

    train = load_run_preset("embedded", {}).get("student", {}).get("train", {})
    return {"precision": resolve_precision(train.get("precision", "auto")), "grad_ckpt": train.get("grad_ckpt", "off")}


def configs(task: str) -> dict[str, dict]:
    """name -> {side, precision, ckpt}; the first 'ours' and first 'trl' entries are the defaults."""
    from bench.modeling.precision import bf16_supported

    d = preset_student_settings()
    trl_default = "bf16" if bf16_supported("cpu") or torch.cuda.is_available() else "fp32"
    out = {"ours default": {"side": "ours", **d},
           f"trl default ({trl_default}+ckpt)": {"side": "trl", "precision": trl_default, "grad_ckpt": "full"}}
    for prec in dict.fromkeys([trl_default, "fp32"]):
        for ck in ("off", "selective", "full"):
            if (prec, ck) != (d["precision"], d["grad_ckpt"]):
                out[f"ours {prec}/{ck}"] = {"side": "ours", "precision": prec, "grad_ckpt": ck}
        for ck in ("full", "off"):
            if (prec, ck) != (trl_default, "full"):
                out[f"trl {prec}/{'ckpt' if ck == 'full' else 'no ckpt'}"] = {"side": "trl", "precision": prec,
                                                                              "grad_ckpt": ck}
    if task == "kd":
        out = {k.replace("trl", "trl-distill", 1) if k.startswith("trl") else k: v for k, v in out.items()}
        out.update({"trl-gkd default": {"side": "trl-gkd", "precision": trl_default, "grad_ckpt": "full"}})
    if os.environ.get("VS_TRL_CONFIGS") == "defaults":  # --defaults-only (children inherit it)
        out = {k: v for k, v in out.items() if "default" in k}
    return out


# ---------------------------------------------------------------- workloads (one process each)


class Work:
    """The models, batches and step functions of one task in this process."""

    def __init__(self, task: str, batch: int, n_batches: int = 1):
        from benchmarks import workloads as W

        self.W, self.task, self.batch = W, task, batch
        self.tok, pairs = W.embedded(batch * n_batches)
        self.pairs = pairs if task == "dpo" else {"chosen": pairs["chosen"]}
        self.idx = list(range(batch))
        self.tmp = Path(tempfile.mkdtemp(prefix="vs_trl-"))

    # ---- ours
    def ours(self, precision: str, steps: list[str]) -> dict:
        from bench.registry import get_method

        W, pad = self.W, self.tok.pad_token_id
        if self.task == "dpo":
            model = W.model(W.TEACHER)
            data = W.dpo_data(model, self.pairs, self.tmp, pad, precision)
            method = get_method("dpo")
            mcfg = method.make_config({})
        else:
            model = W.model(W.STUDENT)
            teacher = W.model(W.TEACHER)
            data = W.kd_data(teacher, self.pairs, self.tmp, pad, precision)
            del teacher  # the teacher's signals are in the cache; it is not needed while training
            method = get_method("gkd")
            mcfg = method.make_config({"lmbda": 0.0, "beta": KD_BETA})
        first = OurStep(model, method, mcfg, data, self.idx, pad, precision)
        out = {}
        for name in steps:
            s = OurStep(model, method, mcfg, data, self.idx, pad, precision, optimizer=False)
            s.opt, s.grad_ckpt = first.opt, name  # one AdamW for every mode of this precision
            out[name] = s
        return out

    # ---- TRL
    def trl(self, precision: str, which: str) -> tuple[object, dict[str, object]]:
        """(trainer, {ckpt mode: step}) for TRL's trainer at this precision."""
        from datasets import Dataset

        W, tok = self.W, self.tok
        common = dict(output_dir=str(self.tmp / "trl"), bf16=precision == "bf16", per_device_train_batch_size=self.batch,
                      report_to=[], logging_steps=10**9, save_strategy="no", use_cpu=not torch.cuda.is_available(),
                      dataloader_num_workers=0, seed=0, learning_rate=1e-7)
        text = Dataset.from_dict({"prompt": ["hi"] * 2, "chosen": ["a"] * 2, "rejected": ["b"] * 2})
        if self.task == "dpo":
            from trl import DPOConfig, DPOTrainer
            model = W.model(W.TEACHER)
            trainer = DPOTrainer(model=model, args=DPOConfig(**common, precompute_ref_log_probs=True,
                                                             max_length=None), train_dataset=text, processing_class=tok)
            inputs = self._dpo_inputs(trainer)
        elif which == "trl-gkd":
            from trl.experimental.gkd import GKDConfig, GKDTrainer
            model, teacher = W.model(W.STUDENT), W.model(W.TEACHER)
            msgs = Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "a"}]] * 2})
            trainer = GKDTrainer(model=model, teacher_model=teacher, train_dataset=msgs, processing_class=tok,
                                 args=GKDConfig(**common, lmbda=0.0, beta=KD_BETA, max_length=None))
            inputs = self._gkd_inputs()
        else:
            from trl import DistillationConfig, DistillationTrainer
            model, teacher = W.model(W.STUDENT), W.model(W.TEACHER)
            tok.padding_side = "left"
            trainer = DistillationTrainer(model=model, teacher_model=teacher, train_dataset=text.select_columns(
                ["prompt"]), processing_class=tok, args=DistillationConfig(**common, beta=KD_BETA))
            trainer._prepare_inputs = lambda batch: batch  # the dataset's responses, not on-policy generations
            inputs = self._distill_inputs()
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, read by training_step
        return trainer, {ck: _TRLStep(trainer, inputs, ck) for ck in ("full", "off")}

    def _dpo_inputs(self, trainer) -> dict:
        ex = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
              for (p, c), (_, r) in zip(self.pairs["chosen"], self.pairs["rejected"])][:self.batch]
        batch = trainer.data_collator(ex)
        with torch.no_grad():
            ref_c, ref_r = trainer.compute_ref_log_probs(trainer.model, batch)
        for e, a, b in zip(ex, ref_c.tolist(), ref_r.tolist()):
            e["ref_chosen_logps"], e["ref_rejected_logps"] = a, b
        return trainer.data_collator(ex)

    def _gkd_inputs(self) -> dict:
        pad, rows = self.tok.pad_token_id, self.pairs["chosen"][:self.batch]
        L = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((len(rows), L), pad)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for b, (p, r) in enumerate(rows):
            ids[b, :len(p) + len(r)] = torch.tensor(p + r)
            mask[b, :len(p) + len(r)] = 1
            labels[b, len(p):len(p) + len(r)] = torch.tensor(r)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def _distill_inputs(self) -> dict:
        pad, rows = self.tok.pad_token_id, self.pairs["chosen"][:self.batch]
        P, R = max(len(p) for p, _ in rows), max(len(r) for _, r in rows)
        out = {"prompt_ids": torch.full((len(rows), P), pad), "prompt_mask": torch.zeros(len(rows), P, dtype=torch.long),
               "completion_ids": torch.full((len(rows), R), pad),
               "completion_mask": torch.zeros(len(rows), R, dtype=torch.long)}
        for b, (p, r) in enumerate(rows):
            out["prompt_ids"][b, P - len(p):], out["prompt_mask"][b, P - len(p):] = torch.tensor(p), 1
            out["completion_ids"][b, :len(r)], out["completion_mask"][b, :len(r)] = torch.tensor(r), 1
        return out

    def tokens(self) -> int:
        return sum(len(p) + len(r) for side in self.pairs.values() for p, r in side[:self.batch])


class _TRLStep:
    """TRL's optimizer step as `Trainer.train` runs it: training_step (forward + backward), clip, optimizer step."""

    def __init__(self, trainer, inputs: dict, ckpt: str):
        self.trainer, self.inputs, self.ckpt = trainer, inputs, ckpt

    def __call__(self):
        t, model = self.trainer, self.trainer.model
        if self.ckpt == "full":  # what Trainer.train does with gradient_checkpointing=True
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=t.args.activation_checkpointing_kwargs
                                                  or None)
        elif model.is_activation_checkpointing:
            model.activation_checkpointing_disable()
        loss = t.training_step(model, dict(self.inputs), None)
        t.accelerator.clip_grad_norm_(model.parameters(), t.args.max_grad_norm)
        t.optimizer.step()
        model.zero_grad(set_to_none=True)
        return float(loss)


# ---------------------------------------------------------------- children


def time_group(task: str, batch: int, precision: str, repeats: int, log) -> dict:
    work = Work(task, batch)
    cfgs = {k: v for k, v in configs(task).items() if v["precision"] == precision}
    steps = {}
    ours_modes = [v["grad_ckpt"] for v in cfgs.values() if v["side"] == "ours"]
    ours = work.ours(precision, ours_modes) if ours_modes else {}
    trl = {}
    for name, c in cfgs.items():
        if c["side"] == "ours":
            steps[name] = ours[c["grad_ckpt"]]
        else:
            if c["side"] not in trl:
                trl[c["side"]] = work.trl(precision, c["side"])[1]
            steps[name] = trl[c["side"]][c["grad_ckpt"]]
    times = interleaved(steps, repeats, log=log)
    return {"tokens": work.tokens(), "median_s": {k: median(v) for k, v in times.items()}, "times": times,
            "load": load_avg()}


def rss_child(task: str, batch: int, name: str) -> dict:
    c = configs(task)[name]
    work = Work(task, batch)
    if c["side"] == "ours":
        step = work.ours(c["precision"], [c["grad_ckpt"]])[c["grad_ckpt"]]
    else:
        step = work.trl(c["precision"], c["side"])[1][c["grad_ckpt"]]
    for _ in range(3):
        step()
    return {"peak_rss": peak_rss_bytes(), "steady_rss": current_rss_bytes()}


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="dpo,kd")
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-rss", action="store_true", help="skip the per-configuration memory processes")
    ap.add_argument("--defaults-only", action="store_true",
                    help="only ours and TRL's at their defaults (the targets' ratios), not every precision/ckpt mode")
    ap.add_argument("--child", choices=("time", "rss"))
    ap.add_argument("--task")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--precision")
    ap.add_argument("--config")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    if args.defaults_only:
        os.environ["VS_TRL_CONFIGS"] = "defaults"
    if args.child == "time":
        res = time_group(args.task, args.batch, args.precision, args.repeats, lambda s: print(s, file=sys.stderr))
        print(json.dumps(res))
        return
    if args.child == "rss":
        print(json.dumps(rss_child(args.task, args.batch, args.config)))
        return
    print(f"{load_avg()}; torch threads {threads}", flush=True)
    result = {}
    for task in args.tasks.split(","):
        cfgs = configs(task)
        ours0, trl0 = next(k for k in cfgs if cfgs[k]["side"] == "ours"), next(k for k in cfgs if cfgs[k]["side"] != "ours")
        for batch in (int(b) for b in args.batches.split(",")):
            med, rss, steady, tokens, loads = {}, {}, {}, 0, []
            for prec in dict.fromkeys(c["precision"] for c in cfgs.values()):
                r = child_rss(HERE, ["--child", "time", "--task", task, "--batch", str(batch), "--precision", prec,
                                     "--repeats", str(args.repeats), "--threads", str(threads)])
                med.update(r["median_s"])
                tokens, loads = r["tokens"], loads + [r["load"]]
            if not args.no_rss:
                for name in cfgs:
                    r = child_rss(HERE, ["--child", "rss", "--task", task, "--batch", str(batch), "--config", name,
                                         "--threads", str(threads)])
                    rss[name], steady[name] = r["peak_rss"], r["steady_rss"]
            print(f"\n{task.upper()} batch {batch} ({tokens} tokens/step, {args.repeats} interleaved rounds; "
                  f"{'; '.join(loads)})")
            print(f"{'configuration':<34}{'s/step':>8}{'tokens/s':>10}{'peak RSS':>11}{'steady':>10}{'speed vs TRL':>14}"
                  f"{'RSS vs TRL':>12}")
            for name in cfgs:
                sp = med[trl0] / med[name]
                line = f"{name:<34}{med[name]:>8.2f}{tokens / med[name]:>10.1f}"
                line += (f"{gb(rss[name]):>11}{gb(steady[name]):>10}{sp:>13.2f}×{rss[name] / rss[trl0]:>11.2f}×" if rss
                         else f"{'-':>11}{'-':>10}{sp:>13.2f}×")
                print(line)
            key = f"{task}_b{batch}"
            result[key] = {"tokens": tokens, "median_s": med, "peak_rss": rss, "steady_rss": steady, "ours": ours0,
                           "trl": trl0,
                           "tokens_per_s_ratio": med[trl0] / med[ours0],
                           "peak_rss_ratio": rss[ours0] / rss[trl0] if rss else None}
    summary = {}
    for task in args.tasks.split(","):
        per = {k: v for k, v in result.items() if k.startswith(task + "_")}
        summary[f"{task}_tokens_per_s_ratio"] = round(min(v["tokens_per_s_ratio"] for v in per.values()), 3)
        rr = [v["peak_rss_ratio"] for v in per.values() if v["peak_rss_ratio"] is not None]
        summary[f"{task}_peak_rss_ratio"] = round(max(rr), 3) if rr else None
    print(f"\n{load_avg()}")
    print(json.dumps({**summary, "worst_case_over": args.batches, "threads": threads, "details": result}))


if __name__ == "__main__":
    main()
