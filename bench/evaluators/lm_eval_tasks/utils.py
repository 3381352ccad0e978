"""Helpers of the shipped embedded-suite lm-eval tasks (copied next to the materialized task YAMLs)."""
from __future__ import annotations

import json


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """`suite_score`: the embedded suite's checker on the generation; `exact_match`: generation == answer."""
    from bench.data.suite import score_response

    response = (results[0] if results else "").strip()
    meta = json.loads(doc["meta_json"])
    return {
        "suite_score": float(score_response(meta, response)),
        "exact_match": float(response == str(doc["answer"]).strip()),
    }
