"""Named fault points for the crash-safety tests: `BENCH_FAULT=<name>` makes the process kill itself with SIGKILL
(no clean-up handlers run, exactly like `kill -9` or a power loss) the first time it reaches that point.
`BENCH_FAULT=<name>:<n>` kills it at the n-th time instead; `BENCH_FAULT=<name>:<n>:sigint` sends it SIGINT (a
Ctrl-C) instead. Unset (always, outside tests) it does nothing."""
from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("stage-build", "state-save", "final-copy", "test-generation", "signal-write", "run-publish")
_SEEN: Counter = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("BENCH_FAULT")
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    nth, _, how = rest.partition(":")
    _SEEN[name] += 1
    if _SEEN[name] == int(nth or 1) or (_SEEN[name] > int(nth or 1) and how != "sigint"):
        os.kill(os.getpid(), signal.SIGINT if how == "sigint" else signal.SIGKILL)
