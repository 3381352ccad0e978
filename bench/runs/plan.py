"""`bench run --dry-run`: the resolved configuration and, for every cached stage the run needs, whether it is
already in the cache. Nothing is trained, generated or converted: it walks the same model roles, stage keys and
signal/generation keys as the pipeline (bench.pipeline.graph.Pipeline.model_key / signal_key / generation_key) and
asks `bench.store.stages.is_done` about each `stage_path`. Only the tokenizer is loaded (it defines the token keys).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.modeling.models import MODEL_MARKER, converted_model_path
from bench.pipeline.graph import TEACHER_STAGES, Pipeline
from bench.registry import get_method
from bench.signals.cache import MARKER as SIGNAL_MARKER
from bench.store.stages import is_done, stage_path

ALIAS = {"reference": "sft_student"}


@dataclass
class Step:
    what: str  # e.g. "sft_student stage", "signals dpo_teacher.topk on pref_train/chosen"
    path: Path | None  # None: keyed by something not built yet (generated tokens)
    cached: bool


class Planner:
    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self.steps: list[Step] = []
        self._seen: set[str] = set()

    def _add(self, what: str, path: Path | None, cached: bool) -> None:
        if what not in self._seen:
            self._seen.add(what)
            self.steps.append(Step(what, path, cached))

    def base(self, name: str) -> None:
        path = converted_model_path(name)
        if path is not None:
            self._add(f"model {name}", path, is_done(path, MODEL_MARKER))

    def model(self, role: str) -> None:
        """A model role and, when it is not cached, everything building it needs (in build order)."""
        pipe = self.pipe
        if role in ("teacher_base", "student_base"):
            return self.base(pipe.teacher if role == "teacher_base" else pipe.cfg.student)
        if role in TEACHER_STAGES or role == "sft_student":
            sc = pipe.stage_cfg(role)
            if sc.get("path"):
                return self._add(f"{role} (given: {sc['path']})", Path(sc["path"]), Path(sc["path"]).is_dir())
            path = stage_path(role, pipe.model_key(role))
            if not is_done(path) and f"{role} stage" not in self._seen:
                method = get_method(sc.get("method", "sft"))
                mcfg = method.make_config(sc.get("settings", {}))
                if role in ("ref_teacher", "sft_student"):
                    self.model("teacher_base" if role == "ref_teacher" else "student_base")
                    self.data(method, mcfg, "sft", {})
                else:
                    self.model("ref_teacher")
                    self.data(method, mcfg, pipe.teacher_pref, {"reference": "ref_teacher"})
            return self._add(f"{role} stage", path, is_done(path))
        if role.startswith("run:"):
            path = stage_path("student_run", pipe.model_key(role))
            return self._add(f"{role} (a default-settings {role[4:]} run, trained first if missing)", path,
                             is_done(path))
        raise ValueError(role)

    def generations(self, role: str, split: str) -> list[list[int]] | None:
        self.model(role)
        path = stage_path("generations", self.pipe.generation_key(role, split))
        done = is_done(path)
        self._add(f"generations of {role} on {split}", path, done)
        if not done:
            return None
        from bench.store.files import read_jsonl

        return [r["token_ids"] for r in read_jsonl(path / "generations.jsonl")]

    def pairs(self) -> bool:
        """The student's own pairs stage (bench.pipeline.student_data), if the preset has one: True once built."""
        sp = self.pipe.student_pairs
        self.model(sp.policy)
        built = sp.is_built()
        self._add(f"pairs of {sp.policy} for the student ({sp.describe()})", sp.path(), built)
        return built

    def side(self, split: str, side: str, alias: dict) -> list | None:
        if split == "pref_train" and self.pipe.student_pairs is not None and not self.pairs():
            return None
        if side.startswith("gen:"):
            gens = self.generations(alias.get(side[4:], side[4:]), split)
            if gens is None:
                return None
        return self.pipe.side_pairs(split, side, alias)

    def data(self, method, mcfg, split: str, alias: dict) -> None:
        """What Pipeline.train_data builds for `method` on `split`."""
        for side in method.sides(mcfg):
            self.side(split, side, alias)
        for spec in method.signals(mcfg):
            role = alias.get(spec.model, spec.model)
            self.model(role)
            pairs = self.side(split, spec.side, alias)
            what = f"signals of {role} on {split}/{spec.side}"
            if pairs is None:
                self._add(what + " (keyed by the pairs or generations above)", None, False)
            else:
                path = stage_path("signals", self.pipe.signal_key(role, pairs))
                self._add(what, path, is_done(path, SIGNAL_MARKER))

    def student(self) -> list[Step]:
        """Pipeline.train_student's dependencies, in the order it builds them."""
        pipe = self.pipe
        method = get_method(pipe.cfg.method)
        mcfg = method.make_config(pipe.cfg.method_settings)
        if getattr(mcfg, "tau", None) is not None:
            pipe.tau = float(mcfg.tau)
        for role in sorted(method.required_models(mcfg)):
            self.model(ALIAS.get(role, role))
        if method.reference(mcfg) == "online":
            self.model("sft_student")
        self.data(method, mcfg, "pref_train", ALIAS)
        return self.steps


def describe_run(pipe: Pipeline, run_path: Path, run_state: str) -> list[tuple[str, str]]:
    """(label, value) lines of the resolved configuration."""
    cfg = pipe.cfg
    method = get_method(cfg.method)
    mcfg = method.make_config(cfg.method_settings)
    sizes = ", ".join(f"{s} {len(pipe.bundle.split(s))}" for s in ("sft", pipe.teacher_pref, "pref_val", "test"))
    given = set(cfg.method_settings)
    settings = " ".join(f"{k}={v}" for k, v in mcfg.to_dict().items()) or "none"
    train = pipe.stage_cfg("student").get("train", {})
    lines = [
        ("run", f"{run_path} ({run_state})"),
        ("method", f"{cfg.method} ({method.display_name or cfg.method}); settings: {settings}"
                   + (f"; given: {', '.join(sorted(given))}" if given else "")),
        ("student", f"{cfg.student}  (max prompt {pipe.enc.max_prompt_len}, response {pipe.enc.max_response_len} "
                    "tokens)"),
        ("teacher", pipe.teacher),
        ("dataset", f"{cfg.dataset} [{pipe.bundle.version}]: {sizes} rows"),
        ("preset", f"{cfg.preset}" + (f"; --set {', '.join(f'{k}={v}' for k, v in cfg.stage_overrides.items())}"
                                       if cfg.stage_overrides else "")),
        ("training", " ".join(f"{k}={v}" for k, v in train.items())),
        ("selection", f"{pipe.preset.get('select_by')} on up to {pipe.preset.get('val_prompts')} validation rows"),
        ("seed", str(cfg.seed)),
    ]
    if pipe.student_pairs is not None:
        lines.append(("pairs", f"the student's pref_train: {pipe.student_pairs.describe()}; the teachers train on "
                               f"the dataset's pairs ({pipe.teacher_pref})"))
    if cfg.eval_suite:
        lines.append(("evaluate", ", ".join(cfg.eval_suite)))
    return lines


def dry_run(cfg) -> list[str]:
    """The lines `bench run --dry-run` prints (nothing is built; the runs folder is not even created)."""
    from bench.paths import cache_root
    from bench.runs.run import default_run_name, run_identity
    from bench.store.rundir import RunDir, validate_run_name

    if cfg.run_name is not None:
        validate_run_name(cfg.run_name)
    pipe = Pipeline(cfg)
    cfg = pipe.cfg
    identity, _ = run_identity(pipe, cfg)
    run = RunDir(Path(cfg.runs_dir).expanduser() / (cfg.run_name or default_run_name(cfg, identity)))
    marker = run.marker() if run.marker_path.exists() else None
    if marker is None:
        state = "exists, not a run: refused" if run.path.exists() and any(run.path.iterdir()) else "new"
    elif marker.get("identity") != identity:
        state = "holds a run of another configuration: refused; pass another --name"
    elif marker.get("state") == "finished":
        state = "finished: `bench run` reuses it"
    else:
        state = "unfinished: --resume continues it, otherwise it starts over"
    steps = Planner(pipe).student()
    described = describe_run(pipe, run.path, state)
    width = max(len(label) for label, _ in described)
    lines = [f"{label:<{width}}  {value}" for label, value in described]
    lines.append(f"{'cache':<{width}}  {cache_root()}")
    lines += [f"notice: {line}" for line in pipe.notices]
    todo = sum(not s.cached for s in steps)
    lines.append(f"stages the run needs, in build order ({len(steps) - todo} cached, {todo} to build):")
    root = cache_root()
    for s in steps:
        where = "" if s.path is None else f"  {s.path.relative_to(root) if root in s.path.parents else s.path}"
        lines.append(f"  {'cached' if s.cached else 'build '}  {s.what}{where}")
    train = pipe.stage_cfg("student").get("train", {})
    length = f"{train['max_steps']} steps" if train.get("max_steps") else f"{train.get('epochs', 1)} epochs"
    lines.append(f"  {'done  ' if state.startswith('finished') else 'train '}  student: {cfg.method} ({length}), "
                 f"then test generations and scores -> {run.path}")
    lines.append("dry run: nothing was trained, generated or converted (the tokenizer is loaded, and cached if new)")
    return lines
