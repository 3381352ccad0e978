"""The embedded benchmark suite: short, seed-generated, fully verifiable instruction-following tasks.

Public API::

    from bench.data.suite import SUITE_VERSION, FAMILIES, build_suite, score_response

Each family (see :mod:`bench.data.suite.families`) generates a prompt whose user text states the exact output
format, a correct short response, and three realistic failures: a near miss (a wrong answer in the right format,
of a kind measured on small models' outputs: a dropped carry, a duplicated list item, ...), the right value
wrapped in chatter, the right value in the wrong format. Its checker scores 1.0 only for the exact format
(trivial whitespace and one trailing period tolerated), partial credit only where natural (list order), at most
``FORMAT_MISS`` (0.2) for a right value in the wrong format or buried in chatter, and 0.0 for a wrong value or an
empty response. Design and measurements: docs/SUITE.md.
"""
from __future__ import annotations

from .build import DEFAULT_SIZES, FAILURE_CYCLE, SUITE_NAME, SUITE_VERSION, build_suite, error_kind, score_response
from .families import FAILURE_TYPES, FAMILIES, FORMAT_MISS, Family

__all__ = ["DEFAULT_SIZES", "FAILURE_CYCLE", "error_kind", "FAILURE_TYPES", "FAMILIES", "FORMAT_MISS", "Family", "SUITE_NAME", "SUITE_VERSION",
           "build_suite", "score_response"]
