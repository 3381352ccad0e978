"""The method plugin API. A plugin is one short file in `methods/`: a config dataclass with typed, sourced
defaults, the sides and teacher signals it declares, and its loss as a pure function of tensors.

Models a method can refer to (pipeline stages, each cached by content hash):
  "reference"     the frozen reference of the model being trained: π_sref (the SFT student) when training a
                  student, π_ref when the DPO plugin trains the DPO teacher. It is also the default init of π_θ.
  "ref_teacher"   π_ref, the SFT teacher
  "dpo_teacher"   π_dpo, π_ref after DPO
  "rdpo_teacher"  π_ref after DPO on the pairs with chosen and rejected swapped (AlignDistil's reverse model;
                  its recipe defaults to the DPO teacher's)
  "chosen_teacher" π_ref further SFT'd on the preference chosen responses (DCKD "w/o DPO teacher" ablation)
  "sft_student"   π_sref, the SFT student (also the default initialisation of π_θ)
  "run:<method>"  the final student of another method's run on the same pair, data and seed (built if missing)
Sides (sequences of a training example): "chosen", "rejected", "gen:<model>" = that model's greedy
generation for the example's prompt (e.g. "gen:sft_student" = student rollouts, "gen:dpo_teacher" = SeqKD data), and
"sample:<model>:<K>:<T>:<j>" = the j-th of K samples at temperature T (a cached stage; PAD's responses).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bench.errors import BenchError
from bench.tensors import Packed

SIGNAL_KINDS = ("topk", "values", "logps", "xtok", "contrast")


def setting(default, source: str, help: str = "", choices: tuple | None = None, min: float | None = None,
            max: float | None = None, above: float | None = None):
    """A typed method setting with the source of its default (paper, code, or our choice); `min`/`max` are
    inclusive bounds, `above` an exclusive lower bound (a temperature must be > 0)."""
    meta = {"source": source, "help": help, "choices": choices, "min": min, "max": max, "above": above}
    return field(default=default, metadata=meta)


def token_mean(x: torch.Tensor, side: str, batch: "LossBatch | None" = None) -> torch.Tensor:
    """The mean of per-token values `x` of `side`: over the global step's tokens of that side under the trainer
    (LossBatch.token_mean), over x alone without a batch (a loss helper called on its own)."""
    return x.sum() / max(x.numel(), 1) if batch is None else batch.token_mean(x, side)


def global_mean(x: torch.Tensor, count=None, batch: "LossBatch | None" = None) -> torch.Tensor:
    """LossBatch.mean for helpers that may be called without a batch (then: Σ x / count, no scaling)."""
    if batch is not None:
        return batch.mean(x, count)
    if count is None:
        return x.sum() / max(x.numel(), 1)
    return x.sum() / (count.to(x.dtype).clamp(min=1.0) if torch.is_tensor(count) else max(float(count), 1.0))


def sample_side(role: str, k: int, temperature: float, j: int) -> str:
    """The side name of the j-th of k samples per prompt from `role` at `temperature` (PAD's responses)."""
    return f"sample:{role}:{k}:{temperature}:{j}"


def parse_sample_side(side: str) -> tuple[str, int, float, int]:
    try:
        _, role, k, temperature, j = side.split(":")
        return role, int(k), float(temperature), int(j)
    except ValueError:
        raise BenchError(f"bad sample side '{side}'; expected sample:ROLE:K:TEMPERATURE:J") from None


@dataclass(frozen=True)
class SignalSpec:
    """A cached per-token signal: `kind` of `model` on `side` (see module docstring)."""

    model: str
    side: str
    kind: str  # "topk" | "values" | "logps" | "xtok" (teacher rows projected onto the student's: bench.signals.xtok)
    #            | "contrast" (AlignDistil's target from `model` and args[0]: bench.signals.contrast)
    args: tuple = ()  # contrast: (reverse model, β₂, temperature)

    @property
    def name(self) -> str:
        base = f"{self.model}.{self.kind}.{self.side}"
        return base + "." + ",".join(map(str, self.args)) if self.args else base


@dataclass
class MethodConfig:
    """Base for method settings. Subclasses add fields made with `setting(...)`."""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v, meta = getattr(self, f.name), f.metadata
            if isinstance(v, float) and not math.isfinite(v):
                raise BenchError(f"{f.name}={v} is invalid; it must be a finite number")
            if meta.get("choices") and v not in meta["choices"]:
                raise BenchError(f"{f.name}={v!r} is invalid; choose one of {', '.join(map(str, meta['choices']))}")
            if meta.get("min") is not None and v < meta["min"]:
                raise BenchError(f"{f.name}={v} is invalid; it must be >= {meta['min']}")
            if meta.get("above") is not None and not v > meta["above"]:
                raise BenchError(f"{f.name}={v} is invalid; it must be > {meta['above']}")
            if meta.get("max") is not None and v > meta["max"]:
                raise BenchError(f"{f.name}={v} is invalid; it must be <= {meta['max']}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StepNorm:
    """What makes a loss's means global: one mean over the items of the whole optimizer step (every process, every
    gradient-accumulation micro-batch), whatever the number of processes. Set by the trainer on every LossBatch.

    DDP averages the processes' gradients and accelerate divides each micro-batch's loss by the accumulation count,
    so a local term Σ_local / N_global · `scale` (`scale` = processes × micro-batches) adds up to Σ_global / N_global.
    """

    scale: float  # processes × micro-batches of the step
    counts: dict[str, float]  # "tokens:<side>" (response tokens of that side), "examples": over the global step
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # Method.step_stats, concatenated over the step

    def count(self, key: str) -> float:
        try:
            return self.counts[key]
        except KeyError:
            raise KeyError(f"no global count '{key}'; known: {', '.join(sorted(self.counts))}") from None


@dataclass
class LossBatch:
    """Everything a loss may read. `policy[side]` carries gradients; the rest are constants.

    signals[spec.name] is a dict of tensors aligned with policy[spec.side] rows:
      topk:   topk_ids [N,k] int, topk_logps [N,k], tail [N]
      logps:  logps [N]
      values: v_soft, v_lse, v_max, v_expect, v_margin, z_label: [N+B]; vseg [N+B] (sequence), vpos [N+B]
              (0..T; vpos == T is the state after the last response token)
      xtok:   the teacher's rows on its own tokenization, projected onto these rows (bench.signals.xtok)
    ref[side]: online frozen-student-reference Packed (only when the method asks for reference="online").
    norm: the step's global counts (trainer); None when a loss is called on one batch alone (tests, references).

    Reductions: a mean over the batch's *examples* may be `x.mean()` (every process holds the same number of
    examples); a mean over tokens, or over any subset whose size varies, goes through `token_mean` or `mean`, so
    that it is one mean over the global step's items (tests/train/test_global_means.py runs every method).
    """

    policy: dict[str, Packed]
    signals: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    ref: dict[str, Packed] = field(default_factory=dict)
    norm: StepNorm | None = None

    def mean(self, x: torch.Tensor, count=None) -> torch.Tensor:
        """Σ x / `count`, where x holds this batch's share of the items and `count` is their number over the global
        step (a number, or a tensor derived from `stat`); under the trainer the result is scaled so that the
        processes' and micro-batches' terms add up to the one global mean. `count=None`: the mean of x alone, right
        for per-example values (every process and micro-batch holds the same number of examples). An empty x gives
        0, not NaN."""
        if count is None or self.norm is None:
            return global_mean(x, count)
        n = count.to(x.dtype).clamp(min=1.0) if torch.is_tensor(count) else max(float(count), 1.0)
        return x.sum() * (self.norm.scale / n)

    def token_mean(self, x: torch.Tensor, side: str) -> torch.Tensor:
        """The mean of per-token values `x` [N] of `side` over every token of that side in the global step."""
        return self.mean(x, None if self.norm is None else self.norm.count(f"tokens:{side}"))

    def stat(self, name: str, local: torch.Tensor) -> torch.Tensor:
        """The method's step statistic `name` (Method.step_stats) over the global step; `local` (this batch's own
        value, computed the same way) when the loss runs on one batch alone."""
        if self.norm is None:
            return local
        return self.norm.stats[name].to(local.device)

    def signal(self, model: str, kind: str, side: str, args: tuple = ()) -> dict[str, torch.Tensor]:
        return self.signals[SignalSpec(model, side, kind, args).name]


class Method:
    """Base class of a method plugin."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: its teacher `topk` signals may come from a teacher of another tokenizer, read through the vocabulary map
    #: (bench.signals.xtok.topk_from_xtok; sound for forward-KL losses only)
    cross_tokenizer_topk: ClassVar[bool] = False
    #: its teacher `values` signals may come from a teacher of another tokenizer, as potentials at the shared
    #: boundaries held in between (bench.signals.xtok.values_from_xtok; sound for telescoping state potentials)
    cross_tokenizer_values: ClassVar[bool] = False
    #: it reads teacher `logps` signals only as per-sequence sums, which a teacher of another tokenizer gives as the
    #: log-prob of the same text (bench.signals.xtok.logps_from_xtok)
    cross_tokenizer_sequence_logps: ClassVar[bool] = False

    def cross_tokenizer_problem(self, cfg) -> str | None:
        """Why these settings cannot run across tokenizers although the method can (one line naming the fix)."""
        return None

    # ---- declarations (may depend on settings) ----
    def sides(self, cfg) -> tuple[str, ...]:
        """Sides the student runs on with gradients."""
        return ("chosen",)

    def signals(self, cfg) -> list[SignalSpec]:
        return []

    def reference(self, cfg) -> str | None:
        """Frozen student reference π_sref: None, "online" (full distributions, run each step)."""
        return None

    def init_from(self, cfg) -> str:
        """Which model initialises π_θ."""
        return "reference"

    def required_models(self, cfg) -> set[str]:
        """Every model this method needs built (inits, generators, signal sources)."""
        models = {self.init_from(cfg)}
        for spec in self.signals(cfg):
            models.add(spec.model)
            if spec.kind == "contrast":
                models.add(spec.args[0])
        for side in self.sides(cfg):
            if side.startswith("gen:"):
                models.add(side[4:])
            elif side.startswith("sample:"):
                models.add(side.split(":")[1])
        return models

    def step_stats(self, cfg, batch: "LossBatch", lengths: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """1-D tensors the loss needs over the whole optimizer step, computed from one micro-batch before any
        forward: `batch` holds its signals (no policy rows), `lengths[side]` its response lengths [B]. The trainer
        concatenates them over micro-batches and processes into LossBatch.stat: for batch-level statistics (ATKD's
        median) and the sizes of data-dependent subsets (GOLD's span starts). Default: none."""
        return {}

    # ---- the loss ----
    def loss(self, batch: LossBatch, cfg) -> tuple[torch.Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError

    # ---- settings ----
    def make_config(self, overrides: dict[str, Any] | None = None):
        return build_config(self.config_cls, overrides or {}, self.name)


def _coerce(value: Any, typ: Any, key: str, method: str):
    if not isinstance(value, str):
        return value
    t = typ if isinstance(typ, type) else {"float": float, "int": int, "bool": bool, "str": str}.get(str(typ), str)
    try:
        if t is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return t(value)
    except ValueError:
        raise BenchError(f"setting {key}={value!r} of method '{method}' must be a {t.__name__}") from None


def build_config(cls, overrides: dict[str, Any], method: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in overrides.items():
        if key not in fields:
            raise BenchError(f"method '{method}' has no setting '{key}'; its settings: {', '.join(fields) or 'none'}"
                             " (see `bench methods`)")
        kwargs[key] = _coerce(value, fields[key].type, key, method)
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def describe(method: Method) -> dict[str, Any]:
    """JSON-able description for `bench methods`: declarations at the default settings, every setting with its
    default, range and source, and the plugin module's docstring (equation, deviations, ablations)."""
    import inspect

    cfg = method.config_cls()
    settings = []
    for f in dataclasses.fields(cfg):
        meta = f.metadata
        settings.append({
            "name": f.name, "type": f.type if isinstance(f.type, str) else f.type.__name__,
            "default": getattr(cfg, f.name), "source": meta.get("source", ""), "help": meta.get("help", ""),
            **({"choices": list(meta["choices"])} if meta.get("choices") else {}),
            **({k: meta[k] for k in ("min", "max", "above") if meta.get(k) is not None}),
        })
    module = inspect.getmodule(type(method))
    return {
        "name": method.name, "display_name": method.display_name or method.name, "citation": method.citation,
        "sides": list(method.sides(cfg)), "signals": [s.name for s in method.signals(cfg)],
        "reference": method.reference(cfg), "init_from": method.init_from(cfg), "settings": settings,
        "doc": (type(method).__doc__ or "").strip().splitlines()[0] if type(method).__doc__ else "",
        "module_doc": inspect.cleandoc(module.__doc__) if module is not None and module.__doc__ else "",
    }
