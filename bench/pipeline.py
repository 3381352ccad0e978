"""The papers' pipeline as cached stages: SFT teacher → DPO teacher → teacher signals → student rollouts →
SFT student → method training (shared trainer) → checkpoint selection. Every stage is content-addressed, so a
second method on the same pair and data recomputes nothing it can reuse.

Model roles (see bench/method.py): ref_teacher, dpo_teacher, chosen_teacher, sft_student, run:<method>, and
"reference" = the frozen reference of whatever is being trained (sft_student for students, ref_teacher for the
DPO teacher).
"""
from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path


from bench.config import RunConfig, data_seed, load_run_preset
from bench.data.bundle import DatasetBundle
from bench.encoding import Encoder
from bench.errors import BenchError
from bench.generate import decode, make_generator
from bench.method import Method
from bench.models import check_same_vocab, load_model, load_tokenizer, resolve_preset, default_teacher_for
from bench.registry import get_method
from bench.rundir import read_jsonl, write_jsonl
from bench.signal_cache import SignalEntry, write_entry
from bench.signals import compute_side_signals
from bench.stages import build_stage, content_key, stage_path, token_hash
from bench.trainer import TrainConfig, TrainData, train
from bench.validation import make_validator

TEACHER_STAGES = {"ref_teacher", "dpo_teacher", "chosen_teacher"}


class Pipeline:
    def __init__(self, cfg: RunConfig):
        from bench.data.resolve import merge_bundles, resolve_dataset

        self.cfg = cfg
        self.preset = load_run_preset(cfg.preset, cfg.stage_overrides)
        self.student_preset = resolve_preset(cfg.student)
        self.teacher = cfg.teacher or default_teacher_for(cfg.student)
        if self.teacher is None:
            raise BenchError(f"no default teacher for student '{cfg.student}'; pass --teacher NAME_OR_PATH")
        self.teacher_preset = resolve_preset(self.teacher)
        sizes = self.preset.get("sizes") or None
        # The data (splits, test prompts, caps) comes from the preset's fixed `data_seed`, never the run's seed: the
        # seeds of one table share the teacher stages, the signals and the test prompts; `--seed` seeds the student.
        self.data_seed = data_seed(self.preset)
        bundle = resolve_dataset(cfg.dataset, seed=self.data_seed, sizes=sizes)
        if self.preset.get("sft_dataset") and not bundle.split("sft"):
            bundle = merge_bundles(bundle, resolve_dataset(self.preset["sft_dataset"], seed=self.data_seed,
                                                           sizes=sizes))
        self.bundle: DatasetBundle = bundle
        self.tok = load_tokenizer(cfg.student)
        check_same_vocab(load_tokenizer(self.teacher), self.tok, self.teacher, cfg.student)
        self.enc = Encoder(self.tok, int(self.preset.get("max_prompt_len", self.student_preset.max_prompt_len)),
                           int(self.preset.get("max_response_len", self.student_preset.max_response_len)))
        self.k = int(self.preset.get("k", 50))
        self.tau = float(self.preset.get("tau", 2.0))
        self.infer_bs = int(self.preset.get("infer_batch_size", 16))
        for role in (*TEACHER_STAGES, "sft_student", "student"):  # fail before any work, not mid-pipeline
            if role in self.preset:
                self._train_cfg(self.preset[role]).validate()
        self.timings: dict[str, float] = {}
        self._encoded: dict[str, list] = {}

    # ------------------------------------------------------------------ data
    def split_rows(self, split: str) -> list[dict]:
        rows = self.bundle.split(split)
        if not rows:
            raise BenchError(f"dataset '{self.bundle.name}' has no '{split}' rows; this stage needs them")
        return rows

    def prompts(self, split: str) -> list[list[int]]:
        return [self.enc.prompt_ids(r["prompt"], r["id"]) for r in self.split_rows(split)]

    def side_pairs(self, split: str, side: str, alias: dict[str, str]) -> list[tuple[list[int], list[int]]]:
        key = f"{split}/{side}/{sorted(alias.items())}"
        if key in self._encoded:
            return self._encoded[key]
        rows = self.split_rows(split)
        if side.startswith("gen:"):
            gens = self.generations(alias.get(side[4:], side[4:]), split)
            pairs = [(self.enc.prompt_ids(r["prompt"], r["id"]), self.enc.cap_response(g)) for r, g in zip(rows, gens)]
        else:
            field = "response" if split == "sft" else side
            if field not in ("chosen", "rejected", "response"):
                raise BenchError(f"unknown side '{side}'")
            pairs = [(self.enc.prompt_ids(r["prompt"], r["id"]), self.enc.response_ids(r[field], r["id"])) for r in rows]
        self._encoded[key] = pairs
        return pairs

    # ------------------------------------------------------------------ model roles
    def base_key(self, name: str) -> dict:
        p = resolve_preset(name)
        return {"model": p.name, "source": p.source, "hf_id": p.hf_id}

    def data_key(self, split: str) -> dict:
        return {"split": split, "hash": self.bundle.split_hash(split), "enc": content_key(self.enc.fingerprint())}

    def stage_cfg(self, role: str) -> dict:
        if role not in self.preset:
            raise BenchError(f"run preset '{self.cfg.preset}' has no '{role}' section")
        return self.preset[role]

    def model_key(self, role: str) -> dict:
        if role in TEACHER_STAGES or role == "sft_student":
            sc = self.stage_cfg(role)
            if sc.get("path"):
                return {"path": sc["path"]}
            init = {"ref_teacher": self.base_key(self.teacher), "sft_student": self.base_key(self.cfg.student)}.get(role)
            if init is None:
                init = self.model_key("ref_teacher")
            split = {"ref_teacher": "sft", "sft_student": "sft"}.get(role, "pref_train")
            return {"stage": role, "init": init, "data": self.data_key(split), "train": sc}
        if role.startswith("run:"):
            return {"stage": role, "student": self.student_key_for(role[4:], {})}
        raise BenchError(f"unknown model role '{role}' (known: ref_teacher, dpo_teacher, chosen_teacher, "
                         "sft_student, run:<method>)")

    def student_key_for(self, method_name: str, settings: dict) -> dict:
        method = get_method(method_name)
        mcfg = method.make_config(settings)
        init = method.init_from(mcfg)
        p = self.preset
        return {"method": method_name, "settings": mcfg.to_dict(),
                "init": self.model_key("sft_student" if init == "reference" else init),
                "teacher": self.model_key("dpo_teacher"), "data": self.data_key("pref_train"),
                "train": self.stage_cfg("student"), "seed": self.cfg.seed, "k": self.k, "tau": self.tau,
                "select": {"by": p.get("select_by"), "n": p.get("val_prompts"), "rm": p.get("rm_model"),
                           "val": self.data_key("pref_val")},
                "generation": p.get("generation")}

    def model_dir(self, role: str) -> Path:
        """Local directory of a role's model, training (and caching) it first if needed."""
        if role in TEACHER_STAGES or role == "sft_student":
            sc = self.stage_cfg(role)
            if sc.get("path"):
                return Path(sc["path"])
            return build_stage(role, self.model_key(role), lambda tmp: self._train_stage(role, tmp))
        if role.startswith("run:"):
            return build_stage("student_run", self.model_key(role),
                               lambda tmp: self._train_dependency_run(role[4:], tmp))
        raise BenchError(f"unknown model role '{role}'")

    def built_path(self, role: str) -> str | None:
        """The role's model directory if it is already built (never trains)."""
        sc = self.preset.get(role, {})
        if sc.get("path"):
            return str(sc["path"])
        kind = "student_run" if role.startswith("run:") else role
        path = stage_path(kind, self.model_key(role))
        return str(path) if (path / "stage.json").exists() else None

    def load(self, role: str):
        if role in ("teacher_base", "student_base"):
            return load_model(self.teacher if role == "teacher_base" else self.cfg.student)
        return load_model(self.model_dir(role), dtype=self._dtype(role))

    def _dtype(self, role: str) -> str:
        return (self.teacher_preset if role in TEACHER_STAGES else self.student_preset).dtype

    def _train_stage(self, role: str, out: Path) -> dict:
        sc = self.stage_cfg(role)
        method = get_method(sc.get("method", "sft"))
        mcfg = method.make_config(sc.get("settings", {}))
        if role == "ref_teacher":
            init, split, alias = "teacher_base", "sft", {}
        elif role == "sft_student":
            init, split, alias = "student_base", "sft", {}
        else:  # dpo_teacher, chosen_teacher start from the reference teacher
            init, split, alias = "ref_teacher", "pref_train", {"reference": "ref_teacher"}
        data = self.train_data(method, mcfg, split, alias)
        if init == "ref_teacher":
            self.model_dir(init)
        t0 = time.perf_counter()  # this stage alone, not the stages it needed
        model = self.load(init)
        work = stage_path(role, self.model_key(role)).with_suffix(".work")
        result = train(model, method, mcfg, data, self._train_cfg(sc), pad_id=self.tok.pad_token_id, work_dir=work,
                       resume=True, desc=role)
        shutil.copytree(result.final_dir, out, dirs_exist_ok=True)
        self.tok.save_pretrained(out)
        shutil.rmtree(work, ignore_errors=True)
        self.timings[role] = time.perf_counter() - t0
        return {"steps": result.steps, "seconds": result.seconds, "tokens_per_s": result.tokens_per_s,
                "final_loss": result.history[-1]["loss"] if result.history else None}

    def _train_cfg(self, sc: dict, seed: int = 0) -> TrainConfig:
        """Shared stages (teachers, SFT student) train with seed 0 unless their section sets one, so one cached
        stage serves every student seed; the student itself trains with the run's seed."""
        fields = dict(sc.get("train", {}))
        fields.setdefault("seed", seed)
        try:
            return TrainConfig(**fields)
        except TypeError as e:
            raise BenchError(f"bad training settings {fields}: {e}") from None

    def _train_dependency_run(self, method_name: str, out: Path) -> dict:
        sub = Pipeline(RunConfig(**{**self.cfg.to_dict(), "method": method_name, "method_settings": {},
                                    "eval_suite": ()}))
        final, result, _ = sub.train_student(out.parent / f".{out.name}.work")
        shutil.copytree(final, out, dirs_exist_ok=True)
        self.tok.save_pretrained(out)
        self.timings.update({f"{method_name}:{k}": v for k, v in sub.timings.items()})
        return {"method": method_name, "steps": result.steps}

    # ------------------------------------------------------------------ generations and signals
    def generations(self, role: str, split: str) -> list[list[int]]:
        prompts = self.prompts(split)
        max_new = self.enc.max_response_len
        gen_cfg = self.preset.get("generation", {})
        key = {"model": self.model_key(role), "prompts": token_hash(prompts), "max_new": max_new, "gen": gen_cfg}

        def build(tmp: Path) -> dict:
            self.model_dir(role)  # train the generator first, outside this stage's timer
            t0 = time.perf_counter()
            model = self.load(role)
            gen = make_generator(gen_cfg.get("backend", "hf"), model, self.tok, batch_size=self.infer_bs)
            outs = gen.generate(prompts, max_new, desc=f"generate {role} on {split}")
            rows = self.split_rows(split)
            write_jsonl(tmp / "generations.jsonl", [{"id": r["id"], "token_ids": o, "text": decode(self.tok, o)}
                                                   for r, o in zip(rows, outs)])
            self.timings[f"generate:{role}:{split}"] = time.perf_counter() - t0
            del model
            gc.collect()
            return {"n": len(outs)}

        path = build_stage("generations", key, build)
        return [r["token_ids"] for r in read_jsonl(path / "generations.jsonl")]

    def signal_entry(self, role: str, side: str, split: str, alias: dict[str, str]) -> SignalEntry:
        pairs = self.side_pairs(split, side, alias)
        key = {"model": self.model_key(role), "tokens": token_hash(pairs), "k": self.k, "tau": self.tau,
               "tokenizer": content_key(self.enc.fingerprint())}
        final = stage_path("signals", key)
        if not (final / "manifest.json").exists():
            self.model_dir(role)  # train the model first, outside this stage's timer
            t0 = time.perf_counter()
            model = self.load(role)

            def fill(writers):
                compute_side_signals(model, pairs, writers, k=self.k, tau=self.tau, pad_id=self.tok.pad_token_id,
                                     batch_size=self.infer_bs, model_key=content_key(self.model_key(role)),
                                     desc=f"signals {role} on {split}/{side}")

            write_entry(final, key, fill)
            self.timings[f"signals:{role}:{side}"] = time.perf_counter() - t0
            del model
            gc.collect()
        return SignalEntry(final)

    def train_data(self, method: Method, mcfg, split: str, alias: dict[str, str]) -> TrainData:
        sides = {side: self.side_pairs(split, side, alias) for side in method.sides(mcfg)}
        signals = {}
        for spec in method.signals(mcfg):
            role = alias.get(spec.model, spec.model)
            if spec.side not in sides:
                sides[spec.side] = self.side_pairs(split, spec.side, alias)
            entry = self.signal_entry(role, spec.side, split, alias)
            signals[spec.name] = (entry, spec.kind, spec.side)
        n = len(next(iter(sides.values())))
        # sides the loss does not run the policy on are only needed for signal alignment
        keep = set(method.sides(mcfg))
        return TrainData(n=n, sides={s: p for s, p in sides.items() if s in keep}, signals=signals)

    # ------------------------------------------------------------------ student training
    def train_student(self, work_dir: Path, resume: bool = False):
        method = get_method(self.cfg.method)
        mcfg = method.make_config(self.cfg.method_settings)
        if getattr(mcfg, "tau", None) is not None and float(mcfg.tau) != self.tau:
            self.tau = float(mcfg.tau)  # values are cached at the method's temperature
        alias = {"reference": "sft_student"}
        init = method.init_from(mcfg)
        init = alias.get(init, init)
        for role in sorted(method.required_models(mcfg)):  # build dependencies before loading anything
            role = alias.get(role, role)
            self.model_dir(role)
        data = self.train_data(method, mcfg, "pref_train", alias)
        t0 = time.perf_counter()
        model = self.load(init)
        ref = self.load("sft_student") if method.reference(mcfg) == "online" else None
        validator = make_validator(self, method)
        result = train(model, method, mcfg, data, self._train_cfg(self.stage_cfg("student"), self.cfg.seed),
                       pad_id=self.tok.pad_token_id, work_dir=work_dir, ref_model=ref, evaluate=validator,
                       resume=resume, desc=f"train {method.name}")
        self.timings[f"train:{method.name}"] = time.perf_counter() - t0
        return result.final_dir, result, mcfg
