"""Tests for the embedded benchmark suite (bench.suite): generation, determinism, and the checkers."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from bench.data.bundle import DatasetBundle
from bench.errors import BenchError
from bench.suite import FAILURE_TYPES, FAMILIES, SUITE_VERSION, build_suite, score_response
from bench.suite.families import number_words

SPLITS = ("sft", "pref_train", "pref_val", "test")
DEFAULTS = {"sft": 256, "pref_train": 256, "pref_val": 64, "test": 64}


@pytest.fixture(scope="module")
def bundle() -> DatasetBundle:
    return build_suite(0)


def all_rows(b: DatasetBundle):
    for split in SPLITS:
        for row in b.split(split):
            yield split, row


def user_text(row: dict) -> str:
    return row["prompt"][-1]["content"]


# ---------------------------------------------------------------- shape of the bundle


def test_public_api():
    assert isinstance(SUITE_VERSION, str) and SUITE_VERSION.count(".") == 2
    assert len(FAMILIES) >= 6
    for name, fam in FAMILIES.items():
        assert fam.name == name
        for attr in ("generate", "failures", "score"):
            assert callable(getattr(fam, attr))
    assert set(FAILURE_TYPES) == {"wrong_answer", "verbose", "ignored_format"}


def test_bundle_identity_and_default_sizes(bundle):
    assert isinstance(bundle, DatasetBundle)
    assert bundle.name == "embedded" and bundle.version == SUITE_VERSION
    assert {s: len(bundle.split(s)) for s in SPLITS} == DEFAULTS


def test_row_formats(bundle):
    keys = {"sft": {"id", "prompt", "response", "meta"}, "pref_train": {"id", "prompt", "chosen", "rejected", "meta"},
            "pref_val": {"id", "prompt", "chosen", "rejected", "meta"}, "test": {"id", "prompt", "meta"}}
    ids = []
    for split, row in all_rows(bundle):
        assert set(row) == keys[split], (split, row)
        ids.append(row["id"])
        prompt = row["prompt"]
        assert isinstance(prompt, list) and prompt and prompt[-1]["role"] == "user"
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in prompt)
        assert row["meta"]["family"] in FAMILIES
        assert row["id"].startswith(row["meta"]["family"] + "-")
        assert ("failure" in row["meta"]) == split.startswith("pref")
        for side in ("response", "chosen", "rejected"):
            if side in row:
                assert isinstance(row[side], str) and row[side].strip()
        json.dumps(row)  # JSON-able
    assert len(ids) == len(set(ids))


def test_prompts_and_responses_are_short(bundle):
    for _, row in all_rows(bundle):
        assert len(user_text(row).split()) <= 40, row
        for side in ("response", "chosen"):
            if side in row:
                assert len(row[side]) <= 120, row
        if "rejected" in row:
            assert len(row["rejected"]) <= 200, row


# ---------------------------------------------------------------- responses vs the checker


def test_correct_responses_score_one_and_rejected_less(bundle):
    for split, row in all_rows(bundle):
        meta = row["meta"]
        if split == "sft":
            assert score_response(meta, row["response"]) == 1.0, row
        elif split != "test":
            assert score_response(meta, row["chosen"]) == 1.0, row
            rej = score_response(meta, row["rejected"])
            assert rej < 1.0, row
            assert row["rejected"].strip() != row["chosen"].strip()
            if meta["failure"] == "verbose":
                assert rej <= 0.25, row
                assert len(row["rejected"]) > len(row["chosen"])
            elif meta["failure"] == "ignored_format":
                assert rej <= 0.25, row


def test_every_family_failure_kind_directly():
    """All three failures of many generated items, per family (not only the one kept in a row)."""
    for name, fam in FAMILIES.items():
        rng = random.Random(f"direct/{name}")
        for _ in range(60):
            prompt, meta, correct = fam.generate(rng)
            assert meta["family"] == name and prompt.strip()
            assert fam.score(meta, correct) == 1.0
            fails = fam.failures(rng, meta, correct)
            assert set(fails) == set(FAILURE_TYPES)
            assert fam.score(meta, fails["wrong_answer"]) < 1.0
            assert fam.score(meta, fails["verbose"]) <= 0.25
            assert fam.score(meta, fails["ignored_format"]) <= 0.25
            assert score_response(meta, "") == 0.0


def test_all_failure_types_present(bundle):
    for split in ("pref_train", "pref_val"):
        kinds = Counter(r["meta"]["failure"] for r in bundle.split(split))
        assert set(kinds) == set(FAILURE_TYPES), (split, kinds)
        assert max(kinds.values()) - min(kinds.values()) <= 1
    small = build_suite(0, {"sft": 0, "pref_train": 3, "pref_val": 0, "test": 0})
    assert {r["meta"]["failure"] for r in small.split("pref_train")} == set(FAILURE_TYPES)


def test_families_evenly_mixed(bundle):
    for split in SPLITS:
        counts = Counter(r["meta"]["family"] for r in bundle.split(split))
        assert set(counts) == set(FAMILIES), split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


# ---------------------------------------------------------------- determinism and de-duplication


def test_deterministic_and_seed_sensitive(bundle):
    random.seed(12345)  # global random state must not matter
    again = build_suite(0)
    assert again.hash == bundle.hash
    assert again.splits == bundle.splits
    other = build_suite(1)
    assert other.hash != bundle.hash
    for split in SPLITS:
        assert other.split_hash(split) != bundle.split_hash(split), split


def test_test_split_independent_of_training_sizes(bundle):
    smaller = build_suite(0, {"sft": 16, "pref_train": 8, "pref_val": 8})
    assert smaller.split("test") == bundle.split("test")


def test_no_duplicate_prompts_and_no_test_leak(bundle):
    def key(row):
        return " ".join(user_text(row).lower().split())

    seen = [key(r) for _, r in all_rows(bundle)]
    assert len(seen) == len(set(seen))
    test_prompts = {key(r) for r in bundle.split("test")}
    for split in ("sft", "pref_train", "pref_val"):
        assert not test_prompts & {key(r) for r in bundle.split(split)}


# ---------------------------------------------------------------- sizes


def test_sizes_subset_and_uneven():
    b = build_suite(3, {"sft": 10, "test": 5})
    assert [len(b.split(s)) for s in SPLITS] == [10, DEFAULTS["pref_train"], DEFAULTS["pref_val"], 5]
    counts = Counter(r["meta"]["family"] for r in b.split("sft"))
    assert sum(counts.values()) == 10 and max(counts.values()) - min(counts.values()) <= 1
    empty = build_suite(0, {s: 0 for s in SPLITS})
    assert all(empty.split(s) == [] for s in SPLITS)


@pytest.mark.parametrize("sizes", [{"train": 4}, {"sft": -1}, {"sft": 2.5}, {"test": "8"}, [("sft", 3)]])
def test_bad_sizes_raise(sizes):
    with pytest.raises(BenchError):
        build_suite(0, sizes)


def test_large_split_has_distinct_prompts():
    b = build_suite(0, {"sft": 2000, "pref_train": 0, "pref_val": 0, "test": 0})
    assert len({user_text(r) for r in b.split("sft")}) == 2000


def test_exhausted_family_raises_bench_error():
    with pytest.raises(BenchError, match="ran out of distinct prompts"):
        build_suite(0, {"sft": 8 * 1500, "pref_train": 0, "pref_val": 0, "test": 0})


# ---------------------------------------------------------------- checker edge cases


def test_number_words():
    assert number_words(73) == "seventy-three"
    assert number_words(105) == "one hundred and five"
    assert number_words(3412) == "three thousand four hundred and twelve"
    assert number_words(2005) == "two thousand and five"
    assert number_words(40) == "forty"


def test_integer_checker_edges():
    meta = {"family": "arith", "answer": "42", "a": 17, "b": 25, "op": "+"}
    assert score_response(meta, "42") == 1.0
    assert score_response(meta, "  42 \n") == 1.0
    assert score_response(meta, "42.") == 1.0
    assert score_response(meta, "43") == 0.0
    assert score_response(meta, "") == 0.0
    assert score_response(meta, "   ") == 0.0
    assert score_response(meta, None) == 0.0
    assert 0 < score_response(meta, "Sure! The answer is 42.") <= 0.25
    assert 0 < score_response(meta, "forty-two") <= 0.25
    assert score_response(meta, "142") == 0.0
    assert score_response(meta, "The answer is 142.") == 0.0
    big = {"family": "numword", "answer": "3412", "words": number_words(3412)}
    assert score_response(big, "3412") == 1.0
    assert score_response(big, "3,412") <= 0.25


def test_caps_checker_case_matters():
    meta = {"family": "caps", "answer": "QUIET RIVER STONE", "phrase": "quiet river stone"}
    assert score_response(meta, "QUIET RIVER STONE") == 1.0
    assert score_response(meta, "  QUIET   RIVER STONE. ") == 1.0
    assert score_response(meta, "quiet river stone") <= 0.25
    assert score_response(meta, "Quiet River Stone") <= 0.25
    assert score_response(meta, "QUIET STONE RIVER") == pytest.approx(1 / 3)
    assert score_response(meta, "Sure! QUIET RIVER STONE") <= 0.25
    assert score_response(meta, "LOUD SEA") == 0.0
    assert score_response(meta, "") == 0.0


def test_sort_checker_partial_credit_only_with_format():
    meta = {"family": "sort", "answer": "apple, fig, kiwi, pear", "items": ["pear", "fig", "apple", "kiwi"]}
    assert score_response(meta, "apple, fig, kiwi, pear") == 1.0
    assert score_response(meta, "apple,fig , kiwi,pear.") == 1.0
    assert score_response(meta, "Apple, Fig, Kiwi, Pear") == 1.0
    assert score_response(meta, "fig, apple, kiwi, pear") == 0.5
    assert score_response(meta, "apple\nfig\nkiwi\npear") == 0.2
    assert score_response(meta, "Here you go: apple, fig, kiwi, pear") == 0.2
    assert score_response(meta, "apple, fig, kiwi") == 0.0  # missing word, not in full order
    assert score_response(meta, "pear fig apple kiwi") == 0.0


def test_json_checker():
    meta = {"family": "json", "answer": "lantern", "key": "word", "items": ["lamp", "lantern", "kite"]}
    assert score_response(meta, '{"word": "lantern"}') == 1.0
    assert score_response(meta, '{ "word" : "Lantern" }\n') == 1.0
    assert score_response(meta, '{"word": "lamp"}') == 0.0
    assert score_response(meta, '{"answer": "lantern"}') == 0.2
    assert score_response(meta, '{"word": "lantern", "length": 7}') == 0.2
    assert score_response(meta, "{'word': 'lantern'}") == 0.2
    assert score_response(meta, 'Sure! {"word": "lantern"}') == 0.2
    assert score_response(meta, "lantern") == 0.2
    assert score_response(meta, "[1, 2]") == 0.0


def test_word_checkers():
    rev = {"family": "reverse", "answer": "enots", "word": "stone"}
    assert score_response(rev, "enots") == 1.0
    assert score_response(rev, "ENOTS.") == 1.0
    assert score_response(rev, "stone") == 0.0
    assert score_response(rev, "e-n-o-t-s") == 0.2
    assert score_response(rev, "The word backwards is enots.") == 0.2
    pick = {"family": "pick", "answer": "cloud", "items": ["lamp", "river", "cloud"], "position": 3}
    assert score_response(pick, "cloud") == 1.0
    assert score_response(pick, " Cloud. ") == 1.0
    assert score_response(pick, "river") == 0.0
    assert score_response(pick, '"cloud"') == 0.2
    assert score_response(pick, "The third word is cloud!") == 0.2


def test_score_response_rejects_bad_meta():
    with pytest.raises(BenchError):
        score_response({"family": "nope", "answer": "1"}, "1")
    with pytest.raises(BenchError):
        score_response({"answer": "1"}, "1")
