"""A DPO teacher served elsewhere (`--set teacher.server=URL`, preset section `teacher:`): its top-k and log-prob
signals come from a server speaking TRL's get_sequence_logprobs protocol (bench.signals.remote) instead of a local
pass, and the pipeline neither trains nor loads it. Its identity in every cache key is what the server reports
(/info/: the model's content hash), or its URL for a server without /info/ (trl vllm-serve).

What a served teacher cannot give fails before any work, in one error line: value signals (TVKD: raw logits),
generations or samples of it (SeqKD, DistiLLM-2's teacher side: TRL's /generate/ is not spoken here), its top-k on
another tokenizer's text (ULD, GOLD), AlignDistil's composed target, a student initialised from it.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from bench.errors import BenchError
from bench.signals.remote import NO_VALUES, TeacherClient

SERVED_ROLE = "dpo_teacher"
SETTINGS = {"server": str, "timeout": (int, float), "retries": int, "batch_size": int}


def public_url(url: str) -> str:
    """scheme://host:port of a URL (credentials and paths never reach a manifest)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class ServedTeacher:
    def __init__(self, section: dict, tokenizer, k: int):
        unknown = sorted(set(section) - set(SETTINGS))
        if unknown:
            raise BenchError(f"teacher.{unknown[0]} is not a setting of a served teacher; known: "
                             f"{', '.join(SETTINGS)}")
        for name, typ in SETTINGS.items():
            v = section.get(name)
            if v is not None and (not isinstance(v, typ) or isinstance(v, bool) or (name != "server" and v <= 0)
                                  and not (name == "retries" and v == 0)):
                raise BenchError(f"teacher.{name}={v!r} is invalid; it must be a "
                                 f"{'URL' if name == 'server' else 'positive number'}")
        kw = {n: section[n] for n in ("timeout", "retries", "batch_size") if section.get(n) is not None}
        self.client = TeacherClient(section["server"], **kw)
        self.tok, self.k = tokenizer, k
        self._key: dict | None = None

    def key(self) -> dict:
        """The served model's identity (checked once: reachable, same vocabulary, k within the server's limit)."""
        if self._key is None:
            probe = self.tok("probe text", add_special_tokens=False)["input_ids"][:4] or [0, 1]
            self._key = {"served": self.client.check(self.tok, self.k, probe if len(probe) > 1 else [*probe, 0])}
        return self._key

    def check_method(self, method, mcfg) -> None:
        name = method.name
        for spec in method.signals(mcfg):
            if SERVED_ROLE not in (spec.model, *spec.args):
                continue
            if spec.kind == "values":
                raise BenchError(f"{name}: {NO_VALUES}")
            if spec.kind not in ("topk", "logps"):
                raise BenchError(f"{name} needs '{spec.kind}' signals of the DPO teacher, which a teacher server does "
                                 "not give (top-k and log-probs of the student's tokens only); drop teacher.server")
        for side in method.sides(mcfg):
            if side.startswith((f"gen:{SERVED_ROLE}", f"sample:{SERVED_ROLE}:")):
                raise BenchError(f"{name} trains on the DPO teacher's generations; a served teacher gives log-probs "
                                 "only (TRL's /generate/ is not spoken here): drop teacher.server")
        if method.init_from(mcfg) == SERVED_ROLE:
            raise BenchError(f"{name} starts the student from the DPO teacher's weights, which a served teacher keeps "
                             "on its server; drop teacher.server")

    def fill(self, pairs, desc: str):
        """`fill` for bench.signals.cache.write_entry: the entry's topk and logps kinds from the server."""
        def fill(writers):
            import time

            t0 = time.perf_counter()
            got = self.client.fill(pairs, writers, k=self.k, desc=desc)
            return {"cost": {"seconds": time.perf_counter() - t0, "tokens": got["tokens"], "forward_passes": 0,
                             "server_requests": got["requests"], "server": public_url(self.client.url),
                             "role": SERVED_ROLE}}
        return fill


def served_teacher(section, tokenizer, k: int) -> ServedTeacher | None:
    """The preset's `teacher:` section as a ServedTeacher, or None when it names no server."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise BenchError(f"teacher={section!r} is invalid; the preset's teacher section is a mapping, e.g. --set "
                         "teacher.server=http://127.0.0.1:8000")
    return ServedTeacher(section, tokenizer, k) if section.get("server") else None
