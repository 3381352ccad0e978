"""The student's preference pairs when a run preset names them apart from the teacher's data (`student_pairs:`).

Real preference distillation has two data sets: the teacher was aligned on more (or cleaner) data than the transfer
set its student learns from, and the transfer set's pairs are samples ranked by an imperfect judge, never gold
answers. A preset says so with

    student_pairs: {policy: ref_teacher, samples: 4, temperature: 1.0, judge: verified, noise: 0.25}

The teacher stages (π_ref's SFT, π_dpo's DPO, chosen_teacher) then train on the dataset's own pairs (kept under the
split name ``teacher_pref``); the student's ``pref_train`` becomes the on-policy pairs made from the same prompts by
the `policy` role (a pipeline stage: ref_teacher, dpo_teacher, chosen_teacher or sft_student) and the judge, a cached
"pairs" stage (bench.pipeline.pairs). Without the section (or with ``--set student_pairs=null``) teacher and student
share the dataset's pairs, as in suite 2.x and on user data. Validation pairs and test prompts are the dataset's.

The student's data key is the pairs stage's recipe (the policy stage's key, prompts, settings, judge), so run
identities and `--dry-run` never need the pairs built; the rows are read (or built) the first time a stage needs them.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from bench.errors import BenchError
from bench.pipeline.pairs import PairSpec, make_judge, pairs_key, pairs_stage, sample_responses

TEACHER_PREF = "teacher_pref"
POLICY_ROLES = ("ref_teacher", "dpo_teacher", "chosen_teacher", "sft_student")


def pair_spec(section, max_new_tokens: int, infer_batch_size: int) -> tuple[str, PairSpec, int | None]:
    """(policy role, validated PairSpec, prompt cap) from a preset's `student_pairs` section; one error line
    otherwise. `prompts: N` samples on the first N prompts of the teachers' pairs only (all by default)."""
    if not isinstance(section, dict):
        raise BenchError(f"student_pairs must be a mapping like {{policy: ref_teacher, samples: 4, temperature: 1.0, "
                         f"judge: verified, noise: 0.25}} (or null for the dataset's own pairs), got {section!r}")
    known = {f.name for f in fields(PairSpec)} | {"policy", "prompts"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise BenchError(f"student_pairs: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    policy = section.get("policy", "ref_teacher")
    if policy not in POLICY_ROLES:
        raise BenchError(f"student_pairs.policy={policy!r}: the pairs are sampled from a pipeline stage; choose one "
                         f"of {', '.join(POLICY_ROLES)}")
    cap = section.get("prompts")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise BenchError(f"student_pairs.prompts={cap!r} must be a positive integer (the first N prompts of the "
                         "teachers' pairs) or null for all of them")
    values = {"max_new_tokens": max_new_tokens, "batch_size": infer_batch_size,
              **{k: v for k, v in section.items() if k not in ("policy", "prompts")}}
    if "judge" in section and section["judge"] is None:
        raise BenchError("student_pairs.judge is missing: pass verified (the suite's checker) or rm (a reward model)")
    try:
        spec = PairSpec(**values)
    except TypeError as e:
        raise BenchError(f"student_pairs: {e}") from None
    spec.validate()
    return policy, spec, cap


def student_pairs_apply(preset: dict, bundle, overrides: dict, notices: list[str]) -> bool:
    """Whether the run makes the student's own pairs. A preset's checker-judged pairs need the embedded suite's
    checkers: on other data (your own pairs) the student trains on the dataset's pairs, with one notice, unless the
    command line asked for student pairs (then the judge's own error says what to change)."""
    from bench.pipeline.selection import has_checkers

    section = preset.get("student_pairs")
    if section is None:
        return False
    asked = any(k == "student_pairs" or k.startswith("student_pairs.") for k in overrides)
    if (not asked and isinstance(section, dict) and section.get("judge", "verified") == "verified"
            and not has_checkers(bundle.split("pref_train"))):
        notices.append(f"dataset '{bundle.name}' has no checkers: the student trains on its own pairs, not on "
                       "checker-judged samples (--set student_pairs.judge=rm --set student_pairs.rm_model=RM makes "
                       "on-policy pairs with a reward model)")
        return False
    return True


class StudentPairs:
    """The on-policy pairs of one pipeline (`pipe`): prompts from the dataset's training pairs."""

    def __init__(self, pipe, section):
        self.pipe = pipe
        self.policy, self.spec, cap = pair_spec(section, pipe.enc.max_response_len, pipe.infer_bs)
        self.prompt_rows = [{"id": r["id"], "prompt": r["prompt"], **({"meta": r["meta"]} if "meta" in r else {})}
                            for r in pipe.bundle.split(TEACHER_PREF)[:cap]]
        self.judge = make_judge(self.spec, self.prompt_rows)  # a missing RM, or checker-less prompts: fail now
        self._rows: list[dict] | None = None
        self.counts: dict | None = None

    def prompt_ids(self) -> list[list[int]]:
        enc = self.pipe.enc_for(self.policy)  # the policy's own tokenizer (a teacher's may differ)
        return [enc.prompt_ids(r["prompt"], r["id"]) for r in self.prompt_rows]

    def key(self) -> dict:
        return pairs_key(self.pipe.model_key(self.policy), self.prompt_ids(), self.prompt_rows, self.spec, self.judge)

    def path(self) -> Path:
        from bench.store.stages import stage_path

        return stage_path("pairs", self.key())

    def is_built(self) -> bool:
        from bench.store.stages import is_done

        return is_done(self.path())

    def describe(self) -> str:
        s = self.spec
        return (f"{s.samples} samples per prompt from {self.policy} at T={s.temperature}, judge {s.judge}"
                + (f" (label noise {s.noise})" if s.judge == "verified" else f" ({s.rm_model})")
                + f", on {len(self.prompt_rows)} of the {len(self.pipe.bundle.split(TEACHER_PREF))} prompts of the "
                "teachers' pairs")

    def rows(self) -> list[dict]:
        """The pairs (built first if missing: trains the policy stage if needed, then samples and judges)."""
        if self._rows is None:
            from bench.store.files import read_jsonl

            pipe, prompt_ids = self.pipe, self.prompt_ids()

            def sample() -> list[list[str]]:
                model = pipe.load(self.policy)
                return sample_responses(model, pipe.enc_for(self.policy).tokenizer, prompt_ids, self.spec,
                                        desc=f"sample {self.spec.samples}x {self.policy}")

            self.pipe.model_dir(self.policy)  # every process: the policy stage first, outside the pairs' lock
            path, self.counts = pairs_stage(self.key(), sample, self.prompt_rows, self.spec, self.judge)
            self._rows = read_jsonl(path)
            if not self._rows:
                raise BenchError(f"the student's pairs stage made no pairs ({self.counts}): every prompt's "
                                 f"{self.spec.samples} samples scored the same; raise student_pairs.samples or "
                                 "temperature")
        return self._rows

    def summary(self) -> dict:
        """What the manifest records: the recipe, the counts and the pairs' true quality (verified score of each
        side, where the prompts have checkers)."""
        from bench.pipeline.selection import has_checkers
        from bench.scoring.metrics import pair_side_scores

        rows = self.rows()
        out = {"policy": self.policy, "spec": {k: getattr(self.spec, k) for k in ("samples", "temperature", "seed",
                                                                                  "judge", "noise")},
               "stage": self.path().name, "counts": self.counts}
        if has_checkers(rows):
            out.update({f"{side}_verified": v["score"] for side, v in pair_side_scores(rows).items()})
        return out
