"""Atomic, pickle-free, checksummed training state: model weights (safetensors via save_pretrained), optimizer
moments (safetensors), scheduler/step/RNG (JSON + safetensors), and the fingerprint of the training configuration.

Each save writes a new `state-<step>` directory (in a temp dir, renamed into place in one step), then deletes the
older ones: at every instant the work dir holds at least one complete state, whatever is killed when. Loading takes
the newest state whose checksums verify, and refuses one saved under a different configuration, naming what
changed. Temp dirs of a failed write (disk full, kill) are removed by the next save; callers hold the lock of the
work dir's owner (run or stage), so no other process can be writing there.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.errors import BenchError
from bench.faults import fault_point
from bench.store.files import atomic_write_json
from bench.store.identity import diff_parts
from bench.store.integrity import check_files, record_files
from bench.store.stages import remove_owned

PREFIX = "state-"


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


def _named_optimizer_tensors(osd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A full optimizer state dict keyed by parameter names (torch.distributed.checkpoint's format) as files."""
    tensors, scalars = {}, {}
    for fqn, st in osd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{fqn}//{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{fqn}//{name}"] = v.item() if torch.is_tensor(v) else v
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars, "named": True}


def read_state(state: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(meta, full model weights, full optimizer state dict keyed by parameter name) of a state written with
    `full`, for a sharded model to load (every process reads the same files)."""
    meta = _read_meta(Path(state))
    if meta is None or not meta["optimizer"].get("named"):
        raise BenchError(f"training state {state} was not written by a sharded run (or is corrupt); rerun without "
                         "--resume, or resume it with the engine that wrote it")
    weights = {}
    for f in sorted((Path(state) / "model").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    osd: dict = {"state": {}, "param_groups": meta["optimizer"]["param_groups"]}
    for key, t in load_file(str(Path(state) / "optimizer.safetensors")).items():
        fqn, name = key.split("//", 1)
        osd["state"].setdefault(fqn, {})[name] = t
    for key, v in meta["optimizer"]["scalars"].items():
        fqn, name = key.split("//", 1)
        osd["state"].setdefault(fqn, {})[name] = torch.tensor(v) if name == "step" else v
    return meta, weights, osd


def _states(work_dir: Path) -> list[Path]:
    return sorted((p for p in Path(work_dir).glob(f"{PREFIX}*") if p.is_dir()), reverse=True)


def save_state(work_dir: Path, model, opt, sched, step: int, extra: dict, fingerprint: dict | None = None,
               full: tuple[dict, dict] | None = None) -> Path:
    """Write `work_dir/state-<step>` atomically, then drop older states. `full`: (model, optimizer) state dicts
    gathered whole from a sharded model (FSDP: `bench.train.parallel.Parallel.full_states`), written instead of
    the local ones; the optimizer's then keyed by parameter name."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob(f".{PREFIX}*.tmp-*"):  # a save that died (kill, disk full)
        remove_owned(stale, work_dir, None)
    final = work_dir / f"{PREFIX}{step:08d}"
    tmp = work_dir / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir()
        model.save_pretrained(tmp / "model", safe_serialization=True, **({"state_dict": full[0]} if full else {}))
        tensors, meta = _optimizer_tensors(opt) if full is None else _named_optimizer_tensors(full[1])
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "state.json", {"step": step, "optimizer": meta, "scheduler": sched.state_dict(),
                                               "extra": extra, "fingerprint": fingerprint,
                                               "files": record_files(tmp)})
        fault_point("state-write")
        if final.exists():  # the same step saved before (a resumed run re-saving): replace it
            remove_owned(final, work_dir, "state.json")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fault_point("state-save")
    for older in _states(work_dir):
        if older != final:
            remove_owned(older, work_dir, None)
    return final


def _read_meta(state: Path) -> dict | None:
    try:
        meta = json.loads((state / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or check_files(state, meta.get("files") or {"state.json": {}}):
        return None
    return meta


def latest_state(work_dir: Path) -> Path | None:
    """The newest complete state in `work_dir` whose checksums verify (corrupt ones are skipped with a warning)."""
    for state in _states(work_dir):
        if _read_meta(state) is not None:
            return state
        from bench.progress import console

        console.print(f"[yellow]warning: training state {state} is incomplete or corrupt; skipping it")
    return None


def _check_fingerprint(state: Path, meta: dict, fingerprint: dict | None) -> None:
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        changed = diff_parts(meta.get("fingerprint") or {}, fingerprint)
        raise BenchError(f"the saved training state in {state} was made with a different configuration (changed: "
                         f"{', '.join(changed[:5]) or 'unknown'}); rerun without --resume to start over with the new "
                         "settings, or restore the old ones")


def load_sharded_state(state: Path, set_full, sched, fingerprint: dict | None = None) -> tuple[int, dict]:
    """Resume a sharded model: `set_full(weights, optimizer state dict)` loads the full states into the shards
    (every process reads the same files; bench.train.parallel.Parallel.set_full_states)."""
    meta, weights, osd = read_state(Path(state))
    _check_fingerprint(state, meta, fingerprint)
    set_full(weights, osd)
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(Path(state) / "rng.safetensors"))["cpu"])
    return int(meta["step"]), meta.get("extra", {})


def load_state(state: Path, model, opt, sched, fingerprint: dict | None = None) -> tuple[int, dict]:
    meta = _read_meta(Path(state))
    if meta is None:
        raise BenchError(f"training state {state} is corrupt; rerun without --resume to start over")
    _check_fingerprint(state, meta, fingerprint)
    if meta["optimizer"].get("named"):
        raise BenchError(f"training state {state} was written by a sharded (FSDP) run; resume it under the same "
                         "launch, or rerun without --resume")
    weights = {}
    for f in sorted((Path(state) / "model").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    real_missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied heads are not saved
    if real_missing or unexpected:
        raise BenchError(f"training state {state} does not match the model (missing {real_missing[:3]}, "
                         f"unexpected {unexpected[:3]}); rerun without --resume")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    _load_optimizer(opt, load_file(str(Path(state) / "optimizer.safetensors")), meta["optimizer"])
    sched.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(Path(state) / "rng.safetensors"))["cpu"])
    return int(meta["step"]), meta.get("extra", {})
