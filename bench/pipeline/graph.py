"""The papers' pipeline as cached stages: SFT teacher → DPO teacher → teacher signals → student rollouts →
SFT student → method training (shared trainer) → checkpoint selection. Every stage is content-addressed, so a
second method on the same pair and data recomputes nothing it can reuse.

Model roles (see bench/method.py): ref_teacher, dpo_teacher, rdpo_teacher, chosen_teacher, sft_student, run:<method>,
and
"reference" = the frozen reference of whatever is being trained (sft_student for students, ref_teacher for the
DPO teacher).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench import dist
from bench.config import RunConfig, data_seed, load_run_preset, resolve_models
from bench.data.bundle import DatasetBundle
from bench.errors import BenchError
from bench.method import Method
from bench.modeling.encoding import Encoder
from bench.modeling.generate import check_backend
from bench.modeling.models import (
    check_embedding_sizes,
    default_teacher_for,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_preset,
    same_vocab,
)
from bench.paths import cache_root
from bench.pipeline.costs import PeakMemory
from bench.pipeline.selection import make_validator, resolve_select_by
from bench.pipeline.signal_stages import TEACHER_ROLES, SignalStages, check_cross_tokenizer
from bench.pipeline.student_data import TEACHER_PREF, StudentPairs, student_pairs_apply
from bench.pipeline.served import SERVED_ROLE, served_teacher
from bench.registry import get_method
from bench.signals.xtok import XTopkView
from bench.signals.compute import SIGNAL_FORMAT, check_k
from bench.store.identity import method_code_version
from bench.store.stages import build_stage, content_key, remove_owned, stage_path
from bench.train.trainer import TrainConfig, TrainData, result_preset, train

TEACHER_STAGES = set(TEACHER_ROLES)


class Pipeline(SignalStages):
    def __init__(self, cfg: RunConfig):
        from bench.data.resolve import cap_splits, merge_bundles, resolve_dataset, sft_from_chosen

        dist.check_engine()  # a sharding engine the trainer would not engage: one error line before any work
        self.preset = load_run_preset(cfg.preset, cfg.stage_overrides)
        # the models a preset names only choose defaults; the run is identified by the models' content
        self.cfg = cfg = resolve_models(cfg, self.preset.pop("models", None))
        self.student_preset = resolve_preset(cfg.student)
        self.teacher = cfg.teacher or default_teacher_for(cfg.student)
        if self.teacher is None:
            raise BenchError(f"no default teacher for student '{cfg.student}'; pass --teacher NAME_OR_PATH")
        self.teacher_preset = resolve_preset(self.teacher)
        sizes = self.preset.get("sizes") or None
        # The data (splits, test prompts, caps) comes from the preset's fixed `data_seed`, never the run's seed: the
        # seeds of one table share the teacher stages, the signals and the test prompts; `--seed` seeds the student.
        self.data_seed = data_seed(self.preset)
        bundle = resolve_dataset(cfg.dataset, seed=self.data_seed, sizes=sizes, families=self.preset.get("families"))
        if self.preset.get("sft_dataset") and not bundle.split("sft"):
            bundle = merge_bundles(bundle, resolve_dataset(self.preset["sft_dataset"], seed=self.data_seed,
                                                           sizes=sizes))
        if not bundle.split("pref_train"):
            raise BenchError(f"dataset '{bundle.name}' has no preference pairs; `bench run` trains on prompt/chosen/"
                             "rejected rows (a file of SFT rows can serve as --set sft_dataset=FILE)")
        self.notices: list[str] = []  # defaults chosen for this data; `bench run` prints them (one line each)
        if not bundle.split("sft"):
            bundle = cap_splits(sft_from_chosen(bundle), {"sft": (sizes or {}).get("sft")}, self.data_seed)
            self.notices.append(f"dataset '{bundle.name}' has no SFT split: the SFT stages train on the chosen "
                                f"responses of its {len(bundle.split('sft'))} training pairs (--set sft_dataset=FILE "
                                "to use your own)")
        self.bundle: DatasetBundle = bundle
        select_by, selection_notice = resolve_select_by(self.preset, bundle, "select_by" in cfg.stage_overrides)
        self.preset["select_by"] = select_by
        if selection_notice:
            self.notices.append(selection_notice)
        self.tok = load_tokenizer(cfg.student)
        self.enc = self._encoder(self.tok, self.student_preset)
        self.tenc = self.enc  # the teacher stages' encoder: another one when the teacher tokenizes differently
        teacher_tok = load_tokenizer(self.teacher)
        if same_vocab(teacher_tok, self.tok):
            check_embedding_sizes(self.teacher, cfg.student, len(self.tok))
        else:
            check_cross_tokenizer(cfg.method, self.teacher, cfg.student, cfg.method_settings)
            self.tenc = self._encoder(teacher_tok, self.teacher_preset)
        self.k = self.preset.get("k", 50)
        check_k(self.k, len(self.tok))
        self.tau = float(self.preset.get("tau", 2.0))
        self.infer_bs = int(self.preset.get("infer_batch_size", 16))
        check_backend((self.preset.get("generation") or {}).get("backend", "hf"))
        for role in (*TEACHER_STAGES, "sft_student", "student"):  # fail before any work, not mid-pipeline
            if role in self.preset:
                self._train_cfg(self.stage_cfg(role)).validate()
        # the student's own pairs (bench.pipeline.student_data): the teacher stages keep the dataset's pairs
        self.student_pairs: StudentPairs | None = None
        self.teacher_pref = "pref_train"
        if student_pairs_apply(self.preset, bundle, cfg.stage_overrides, self.notices):
            bundle.splits[TEACHER_PREF], bundle.splits["pref_train"] = bundle.split("pref_train"), []
            self.teacher_pref = TEACHER_PREF
            self.student_pairs = StudentPairs(self, self.preset["student_pairs"])
        # a DPO teacher served elsewhere (--set teacher.server=URL): its signals come from the server
        self.served = served_teacher(self.preset.get("teacher"), self.tok, self.k)
        if self.served is not None:
            method = get_method(cfg.method)
            self.served.check_method(method, method.make_config(cfg.method_settings))
        self.timings: dict[str, float] = {}
        self._encoded: dict[str, list] = {}
        self._identities: dict[str, dict] = {}
        self.run_cost: dict = {}

    # ------------------------------------------------------------------ data
    def split_rows(self, split: str) -> list[dict]:
        if split == "pref_train" and self.student_pairs is not None and not self.bundle.split(split):
            self.bundle.splits[split] = self.student_pairs.rows()
        rows = self.bundle.split(split)
        if not rows:
            raise BenchError(f"dataset '{self.bundle.name}' has no '{split}' rows; this stage needs them")
        return rows

    def _encoder(self, tok, preset) -> Encoder:
        return Encoder(tok, int(self.preset.get("max_prompt_len", preset.max_prompt_len)),
                       int(self.preset.get("max_response_len", preset.max_response_len)),
                       system_prompt=self.preset.get("system_prompt"))

    def prompts(self, split: str, enc: Encoder | None = None) -> list[list[int]]:
        enc = enc or self.enc
        return [enc.prompt_ids(r["prompt"], r["id"]) for r in self.split_rows(split)]

    def side_pairs(self, split: str, side: str, alias: dict[str, str], enc: Encoder | None = None
                   ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) of a side as `enc` (default: the student's) encodes it. A generation by a model
        of another tokenizer reaches it as text, re-tokenized."""
        enc = enc or self.enc
        key = f"{split}/{side}/{sorted(alias.items())}/{id(enc)}"
        if key in self._encoded:
            return self._encoded[key]
        rows = self.split_rows(split)
        if side.startswith("gen:"):
            role = alias.get(side[4:], side[4:])
            if self.enc_for(role) is enc:
                resp = [enc.cap_response(g) for g in self.generations(role, split)]
            else:
                resp = [enc.text_response_ids(t) for t in self.generation_texts(role, split)]
            pairs = [(enc.prompt_ids(r["prompt"], r["id"]), g) for r, g in zip(rows, resp)]
        elif side.startswith("sample:"):  # sampled responses, kept as text
            pairs = [(enc.prompt_ids(r["prompt"], r["id"]), enc.text_response_ids(t))
                     for r, t in zip(rows, self.side_texts(split, side, alias))]
        else:
            field = "response" if split == "sft" else side
            if field not in ("chosen", "rejected", "response"):
                raise BenchError(f"unknown side '{side}'")
            pairs = [(enc.prompt_ids(r["prompt"], r["id"]), enc.response_ids(r[field], r["id"])) for r in rows]
        self._encoded[key] = pairs
        return pairs

    # ------------------------------------------------------------------ model roles
    def base_key(self, name: str) -> dict:
        if name not in self._identities:
            self._identities[name] = {"model": resolve_preset(name).name if not Path(name).is_dir() else "local",
                                      "identity": model_identity(name)}
        return self._identities[name]

    def data_key(self, split: str, encoder: Encoder | None = None) -> dict:
        """What a stage trained on `split` depends on: its rows' hash (the student's own pairs: their recipe)."""
        enc = content_key((encoder or self.enc).fingerprint())
        if split == "pref_train" and self.student_pairs is not None:
            return {"split": split, "pairs": content_key(self.student_pairs.key()), "enc": enc}
        label = "pref_train" if split == TEACHER_PREF else split  # the teachers' pairs, as without student pairs
        return {"split": label, "hash": self.bundle.split_hash(split), "enc": enc}

    def stage_cfg(self, role: str) -> dict:
        """A stage's preset section. The reverse-DPO teacher defaults to the DPO teacher's recipe (on swapped pairs).
        A `path:` (a prebuilt model) must be a directory."""
        if role == "rdpo_teacher" and role not in self.preset and "dpo_teacher" in self.preset:
            return self.preset["dpo_teacher"]
        if role not in self.preset:
            raise BenchError(f"run preset '{self.cfg.preset}' has no '{role}' section")
        sc = self.preset[role]
        if sc.get("path") and not Path(str(sc["path"])).is_dir():
            raise BenchError(f"{role}.path={sc['path']} is not a model directory; pass a saved model's directory "
                             f"(--set {role}.path=DIR) or remove the setting to train the stage")
        return sc

    def model_key(self, role: str) -> dict:
        if self.served is not None and role == SERVED_ROLE:
            return self.served.key()
        if role in TEACHER_STAGES or role == "sft_student":
            sc = self.stage_cfg(role)
            if sc.get("path"):
                return {"path_content": self.base_key(str(sc["path"]))}
            init = {"ref_teacher": self.base_key(self.teacher), "sft_student": self.base_key(self.cfg.student)}.get(role)
            if init is None:
                init = self.model_key("ref_teacher")
            split = {"ref_teacher": "sft", "sft_student": "sft"}.get(role, self.teacher_pref)
            code = method_code_version(get_method(sc.get("method", "sft")))
            return {"stage": role, "init": init, "data": self.data_key(split, self.enc_for(role)), "train": result_preset({"s": sc})["s"], "code": code}
        if role.startswith("run:"):
            return {"stage": role, "student": self.student_key_for(role[4:], {})}
        raise BenchError(f"unknown model role '{role}' (known: ref_teacher, dpo_teacher, rdpo_teacher, chosen_teacher, "
                         "sft_student, run:<method>)")

    def student_key_for(self, method_name: str, settings: dict) -> dict:
        method = get_method(method_name)
        mcfg = method.make_config(settings)
        init = method.init_from(mcfg)
        p = self.preset
        return {"method": method_name, "settings": mcfg.to_dict(), "code": method_code_version(method),
                "init": self.model_key("sft_student" if init == "reference" else init),
                "teacher": self.model_key("dpo_teacher"), "data": self.data_key("pref_train"),
                "train": result_preset({"s": self.stage_cfg("student")})["s"], "seed": self.cfg.seed, "k": self.k,
                "tau": self.tau, "signal_format": SIGNAL_FORMAT,
                "select": {"by": p.get("select_by"), "n": p.get("val_prompts"), "rm": p.get("rm_model"),
                           "val": self.data_key("pref_val")},
                "generation": p.get("generation")}

    def model_dir(self, role: str) -> Path:
        """Local directory of a role's model, training (and caching) it first if needed."""
        if self.served is not None and role == SERVED_ROLE:
            raise BenchError("the DPO teacher is served (teacher.server): this step needs its weights here; drop "
                             "teacher.server")
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

    def stage_inputs(self, role: str):
        """(method, its settings, training data, init role) of a trained stage (teachers, SFT student)."""
        sc = self.stage_cfg(role)
        method = get_method(sc.get("method", "sft"))
        mcfg = method.make_config(sc.get("settings", {}))
        if role == "ref_teacher":
            init, split, alias = "teacher_base", "sft", {}
        elif role == "sft_student":
            init, split, alias = "student_base", "sft", {}
        else:  # dpo_teacher, rdpo_teacher (pairs swapped), chosen_teacher start from the reference teacher
            init, split, alias = "ref_teacher", self.teacher_pref, {"reference": "ref_teacher"}
        data = self.train_data(method, mcfg, split, alias, self.stage_precision(role), self.enc_for(role),
                               swap=role == "rdpo_teacher")
        if init == "ref_teacher":
            self.model_dir(init)
        return method, mcfg, data, init

    def _train_stage(self, role: str, out: Path) -> dict:
        sc = self.stage_cfg(role)
        method, mcfg, data, init = self.stage_inputs(role)
        t0 = time.perf_counter()  # this stage alone, not the stages it needed
        model = self.load(init)
        key = self.model_key(role)
        work = stage_path(role, key).with_suffix(".work")  # ours alone: the caller holds this stage's lock
        result = train(model, method, mcfg, data, self._train_cfg(sc), pad_id=self.enc_for(role).tokenizer.pad_token_id,
                       work_dir=work,
                       resume=True, desc=role, fingerprint={"stage": content_key(key)})
        self._keep_final(result.final_dir, out, work, self.enc_for(role).tokenizer)
        self.timings[role] = time.perf_counter() - t0
        return {"steps": result.steps, "seconds": result.seconds, "tokens_per_s": result.tokens_per_s,
                "final_loss": result.history[-1]["loss"] if result.history else None,
                "cost": {"seconds": self.timings[role], "tokens": result.tokens, "role": role}}

    def _keep_final(self, final: Path, out: Path, work: Path, tok=None) -> None:
        """The trained model (and tokenizer) into the stage's temp dir; process 0 alone writes (bench.dist)."""
        if dist.is_main():
            shutil.copytree(final, out, dirs_exist_ok=True)
            (tok or self.tok).save_pretrained(out)
            remove_owned(work, cache_root(), None)

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
        work = stage_path("student_run", self.model_key(f"run:{method_name}")).with_suffix(".work")
        final, result, _ = sub.train_student(work, resume=True)  # ours alone: the caller holds the stage lock
        self._keep_final(final, out, work)
        self.timings.update({f"{method_name}:{k}": v for k, v in sub.timings.items()})
        return {"method": method_name, "steps": result.steps,
                "cost": {"seconds": result.seconds, "tokens": result.tokens, "role": f"run:{method_name}"}}

    def train_data(self, method: Method, mcfg, split: str, alias: dict[str, str],
                   precision: str | None = None, enc: Encoder | None = None, swap: bool = False) -> TrainData:
        """What the trainer reads, encoded by `enc` (the student's by default; a teacher stage's own); `swap` trades
        the chosen and rejected responses (the reverse-DPO teacher)."""
        real = (lambda side: {"chosen": "rejected", "rejected": "chosen"}.get(side, side)) if swap else (lambda s: s)
        sides = {side: self.side_pairs(split, real(side), alias, enc) for side in method.sides(mcfg)}
        signals = {}
        for spec in method.signals(mcfg):
            role = alias.get(spec.model, spec.model)
            if spec.side not in sides:
                sides[spec.side] = self.side_pairs(split, real(spec.side), alias, enc)
            if spec.kind == "contrast":
                entry = self.contrast_entry(role, alias.get(spec.args[0], spec.args[0]), spec.side, split, alias,
                                            *spec.args[1:])
            elif spec.kind == "xtok":
                entry = self.xtok_entry(role, spec.side, split, alias, precision)
            elif (spec.kind in ("topk", "values", "logps") and role in TEACHER_ROLES and self.tenc is not self.enc
                  and enc in (None, self.enc)):  # the student reads a teacher of another tokenizer
                labels = self.side_pairs(split, spec.side, alias)
                entry = XTopkView(self.xtok_entry(role, spec.side, split, alias, precision), lambda i, p=labels: p[i][1])
            else:
                entry = self.signal_entry(role, real(spec.side), split, alias, precision, enc)
            signals[spec.name] = (entry, spec.kind, spec.side)
        n = len(next(iter(sides.values())))
        # sides the loss does not run the policy on are only needed for signal alignment
        keep = set(method.sides(mcfg))
        return TrainData(n=n, sides={s: p for s, p in sides.items() if s in keep}, signals=signals)

    # ------------------------------------------------------------------ student training
    def student_inputs(self):
        """(method, its settings, training data, init role) of the run's student, every model it needs built."""
        method = get_method(self.cfg.method)
        mcfg = method.make_config(self.cfg.method_settings)
        if getattr(mcfg, "tau", None) is not None and float(mcfg.tau) != self.tau:
            self.tau = float(mcfg.tau)  # values are cached at the method's temperature
        alias = {"reference": "sft_student"}
        init = method.init_from(mcfg)
        init = alias.get(init, init)
        for role in sorted(method.required_models(mcfg)):  # build dependencies before loading anything
            role = alias.get(role, role)
            if self.served is None or role != SERVED_ROLE:  # a served teacher is neither trained nor loaded here
                self.model_dir(role)
        return method, mcfg, self.train_data(method, mcfg, "pref_train", alias), init

    def train_student(self, work_dir: Path, resume: bool = False, tracking=None):
        method, mcfg, data, init = self.student_inputs()
        t0 = time.perf_counter()
        model = self.load(init)
        ref = self.load("sft_student") if method.reference(mcfg) == "online" else None
        validator = make_validator(self, method)
        with PeakMemory() as peak:
            result = train(model, method, mcfg, data, self._train_cfg(self.stage_cfg("student"), self.cfg.seed),
                           pad_id=self.tok.pad_token_id, work_dir=work_dir, ref_model=ref, evaluate=validator,
                           resume=resume, desc=f"train {method.name}", tracking=tracking,
                           fingerprint={"student": content_key(self.student_key_for(self.cfg.method,
                                                                                     self.cfg.method_settings))})
        self.timings[f"train:{method.name}"] = time.perf_counter() - t0
        self.run_cost = {"train_seconds": round(result.seconds, 3), "train_tokens": result.tokens,
                         "tokens_per_s": round(result.tokens_per_s, 1), "peak_rss_bytes": peak.rss,
                         "peak_gpu_bytes": peak.gpu}
        return result.final_dir, result, mcfg
