"""What a run would build, without building anything: every stage it needs and whether it is already cached."""
from __future__ import annotations

from bench.registry import get_method
from bench.stages import is_done, stage_path

DEPENDS = {"dpo_teacher": ("ref_teacher",), "chosen_teacher": ("ref_teacher",)}


def _roles(pipe, method, mcfg, alias) -> list[str]:
    roles: list[str] = []

    def add(role: str) -> None:
        role = alias.get(role, role)
        if role in roles:
            return
        for dep in DEPENDS.get(role, ()):
            add(dep)
        if role.startswith("run:"):
            sub = get_method(role[4:])
            sub_cfg = sub.make_config({})
            for r in sorted(sub.required_models(sub_cfg)):
                add(r)
        roles.append(role)

    for r in sorted(method.required_models(mcfg)):
        add(r)
    return roles


def plan(pipe) -> list[dict]:
    """[{"stage", "status"}] for the run `pipe` describes; status is "cached", "build", or "build (after ...)"
    for stages whose key depends on a stage that does not exist yet (signals on generations)."""
    method = get_method(pipe.cfg.method)
    mcfg = method.make_config(pipe.cfg.method_settings)
    alias = {"reference": "sft_student"}
    out = []
    for role in _roles(pipe, method, mcfg, alias):
        built = pipe.built_path(role)
        out.append({"stage": f"model {role}", "status": "cached" if built else "build"})
    for spec in method.signals(mcfg):
        role = alias.get(spec.model, spec.model)
        desc = f"signals {spec.kind} of {role} on pref_train/{spec.side}"
        if spec.side.startswith("gen:"):
            gen_role = alias.get(spec.side[4:], spec.side[4:])
            gen_done = is_done(stage_path("generations", pipe.generation_key(gen_role, "pref_train")))
            gen = f"generations of {gen_role} on pref_train"
            if not any(o["stage"] == gen for o in out):
                out.append({"stage": gen, "status": "cached" if gen_done else "build"})
            if not gen_done:
                out.append({"stage": desc, "status": f"build (after the {gen_role} generations)"})
                continue
        pairs = pipe.side_pairs("pref_train", spec.side, alias)
        done = is_done(stage_path("signals", pipe.signal_key(role, pairs)), "manifest.json")
        out.append({"stage": desc, "status": "cached" if done else "build"})
    return out
