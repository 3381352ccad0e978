"""Atomic, pickle-free training state: model weights (safetensors via save_pretrained), optimizer moments
(safetensors), scheduler/step/RNG (JSON + safetensors). A killed run resumes from the last complete state."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.rundir import atomic_write_json


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(directory: Path, model, opt, sched, step: int, extra: dict) -> None:
    """Write the state into a temp dir, then swap it in, so `directory` is always a complete state."""
    directory = Path(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tensors, meta = _optimizer_tensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    atomic_write_json(tmp / "state.json", {"step": step, "optimizer": meta, "scheduler": sched.state_dict(),
                                           "extra": extra})
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_state(directory: Path, model, opt, sched) -> tuple[int, dict]:
    directory = Path(directory)
    meta = json.loads((directory / "state.json").read_text())
    weights = {}
    for f in sorted((directory / "model").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied heads are not saved
    if real_missing or unexpected:
        raise RuntimeError(f"checkpoint {directory} does not match the model: missing {real_missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    _load_optimizer(opt, load_file(str(directory / "optimizer.safetensors")), meta["optimizer"])
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(directory / "rng.safetensors"))["cpu"])
    return int(meta["step"]), meta.get("extra", {})


def has_state(directory: Path) -> bool:
    return (Path(directory) / "state.json").exists()
