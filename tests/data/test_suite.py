"""Tests for the embedded benchmark suite (bench.data.suite): generation, determinism, and the checkers."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from bench.data.bundle import DatasetBundle
from bench.errors import BenchError
from bench.data.suite import FAILURE_TYPES, FAMILIES, SUITE_VERSION, build_suite, error_kind, score_response
from bench.scoring.metrics import verified_scores
from bench.data.suite.families import number_words

SPLITS = ("sft", "pref_train", "pref_val", "test")
DEFAULTS = {"sft": 256, "pref_train": 256, "pref_val": 64, "test": 256}


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
    assert set(FAILURE_TYPES) == {"near_miss", "verbose", "ignored_format", "house_style"}
    assert SUITE_VERSION.startswith("2.")


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
        assert ("error" in row["meta"]) == (row["meta"].get("failure") == "near_miss")
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
            styled = meta["template"] == FAMILIES[meta["family"]].styled_template
            assert score_response(meta, row["response"]) == (0.2 if styled else 1.0), row
        elif split != "test":
            assert score_response(meta, row["chosen"]) == 1.0, row
            rej = score_response(meta, row["rejected"])
            assert rej < 1.0, row
            assert row["rejected"].strip() != row["chosen"].strip()
            if meta["failure"] == "verbose":
                assert rej <= 0.25, row
                assert len(row["rejected"]) > len(row["chosen"])
            elif meta["failure"] in ("ignored_format", "house_style"):
                assert rej <= 0.25, row


def test_every_family_failure_kind_directly():
    """All three failures of many generated items, per family (not only the one kept in a row)."""
    for name, fam in FAMILIES.items():
        rng = random.Random(f"direct/{name}")
        for _ in range(60):
            prompt, meta, correct = fam.generate(rng)
            assert meta["family"] == name and prompt.strip()
            assert fam.score(meta, correct) == 1.0 and error_kind(meta, correct) is None
            fails = fam.failures(rng, meta, correct)
            assert set(fails) == set(FAILURE_TYPES)
            assert fam.score(meta, fails["near_miss"]) < 1.0
            assert error_kind(meta, fails["near_miss"]) is not None
            assert fam.score(meta, fails["verbose"]) <= 0.25
            assert fam.score(meta, fails["ignored_format"]) <= 0.25
            assert fam.score(meta, fails["house_style"]) == 0.2 and fails["house_style"] == fam.house_style(meta, correct)
            assert score_response(meta, "") == 0.0 and error_kind(meta, "") is None
            for kind, texts in fam.near_misses(meta, correct).items():  # every listed slip is wrong or dropped
                for t in texts:
                    assert t.strip() == "" or fam.score(meta, t) < 1.0 or t.strip(". ") == correct, (name, kind, t)


def test_near_misses_are_in_the_requested_format(bundle):
    """A near miss is a wrong value in the right format: numbers are bare digits, lists keep ", " between items."""
    for row in bundle.split("pref_train") + bundle.split("pref_val"):
        if row["meta"]["failure"] != "near_miss":
            continue
        fam, rej = row["meta"]["family"], row["rejected"]
        assert row["meta"]["error"] == error_kind(row["meta"], rej)
        if fam in ("add", "succ", "numword", "max"):
            assert rej.isdigit(), row
        elif fam in ("sortnum", "revlist"):
            assert len(rej.split(", ")) == len(row["chosen"].split(", ")), row
        elif fam == "caps":
            assert rej != row["chosen"] and rej.upper() in {rej, rej.upper()}


def test_all_failure_types_present(bundle):
    for split in ("pref_train", "pref_val"):
        rows = bundle.split(split)
        kinds = Counter(r["meta"]["failure"] for r in rows)
        assert set(kinds) == set(FAILURE_TYPES), (split, kinds)
        styled = [r for r in rows if r["meta"]["template"] == FAMILIES[r["meta"]["family"]].styled_template]
        assert {r["meta"]["failure"] for r in styled} == {"house_style"} and kinds["house_style"] == len(styled)
        # the rest follow the shuffled cycle: three quarters near misses
        assert kinds["near_miss"] / (len(rows) - len(styled)) == pytest.approx(0.75, abs=0.1)
        per_family = Counter(r["meta"]["family"] for r in rows if r["meta"]["failure"] == "near_miss")
        assert set(per_family) == set(FAMILIES), (split, per_family)  # not tied to a family's slot in the cycle
    small = build_suite(0, {"sft": 0, "pref_train": 64, "pref_val": 0, "test": 0})
    assert {r["meta"]["failure"] for r in small.split("pref_train")} == set(FAILURE_TYPES)


def test_sft_demonstrator_has_a_house_style_only_the_preferences_correct(bundle):
    """SFT responses on each family's last template are the demonstrator's house style (right value, unwanted
    format); preference rows on those prompts reject exactly that style; test prompts use every template."""
    for split in SPLITS:
        rows = bundle.split(split)
        styled = [r for r in rows if r["meta"]["template"] == FAMILIES[r["meta"]["family"]].styled_template]
        assert 0.2 < len(styled) / len(rows) < 0.45, split
        for r in styled:
            fam, meta = FAMILIES[r["meta"]["family"]], r["meta"]
            if split == "sft":
                assert r["response"] == fam.house_style(meta, meta["answer"]) != meta["answer"]
            elif split.startswith("pref"):
                assert r["rejected"] == fam.house_style(meta, r["chosen"]) and r["chosen"] == meta["answer"]
    assert {r["meta"]["template"] for r in bundle.split("test") if r["meta"]["family"] == "add"} == {0, 1, 2, 3}


def test_house_style_is_recognised_only_on_styled_prompts(bundle):
    """is_house_style: the demonstrator's answer to a styled prompt (after normalisation) and nothing else: not the
    correct answer, not a near miss, not the same text on a prompt of another template; verified_scores reports
    the share over the styled prompts only."""
    rows = bundle.split("test")
    styled = [r for r in rows if FAMILIES[r["meta"]["family"]].is_styled(r["meta"])]
    plain = [r for r in rows if not FAMILIES[r["meta"]["family"]].is_styled(r["meta"])]
    for r in styled:
        fam, meta = FAMILIES[r["meta"]["family"]], r["meta"]
        habit = fam.house_style(meta, meta["answer"])
        assert fam.is_house_style(meta, "  " + habit + " \n") and not fam.is_house_style(meta, meta["answer"])
        assert not fam.is_house_style(meta, fam.near_miss(random.Random(0), meta, meta["answer"])[1])
    for r in plain:
        fam, meta = FAMILIES[r["meta"]["family"]], r["meta"]
        assert not fam.is_house_style(meta, fam.house_style(meta, meta["answer"]))
    caps = next(r["meta"] for r in styled if r["meta"]["family"] == "caps")
    assert not FAMILIES["caps"].is_house_style(caps, caps["answer"].lower())  # the checker keeps case here
    habits = [FAMILIES[r["meta"]["family"]].house_style(r["meta"], r["meta"]["answer"]) for r in styled[:3]]
    responses = {id(r): h for r, h in zip(styled[:3], habits)}
    res = verified_scores(rows, [responses.get(id(r), r["meta"]["answer"]) for r in rows])
    assert res["styled_n"] == len(styled) and res["house_style"] == pytest.approx(3 / len(styled))
    assert verified_scores(plain, [r["meta"]["answer"] for r in plain])["house_style"] is None


def test_error_kinds_recognise_measured_slips():
    add = {"family": "add", "answer": "85", "a": 47, "b": 38}
    assert error_kind(add, "75") == "carry" and error_kind(add, "47") == "copied_operand"
    assert error_kind(add, "86") == "off_by_one" and error_kind(add, "85") is None and error_kind(add, "12") is None
    succ = {"family": "succ", "answer": "1300", "n": 1299}
    assert error_kind(succ, "1299") == "copied_input" and error_kind(succ, "12910") == "carry"
    assert error_kind(succ, "1290") == "zeroed_tail"
    srt = {"family": "sortnum", "answer": "17, 63, 73, 85", "items": [63, 17, 85, 73]}
    assert error_kind(srt, "17, 17, 63, 85") is None  # not a neighbour written twice in place (17 twice, 73 lost)
    assert error_kind(srt, "17, 63, 63, 85") == "duplicated_item"
    assert error_kind(srt, "17, 63, 85, 73") == "swapped_pair" and error_kind(srt, "63, 17, 85, 73") == "copied_input"
    caps = {"family": "caps", "answer": "QUIET RIVER STONE", "phrase": "quiet river stone"}
    assert error_kind(caps, "QUIET RIVER stone") == "word_not_upper"
    assert error_kind(caps, "QUIET RIVER") == "dropped_or_repeated_word"
    assert error_kind(caps, "QUIET RIVER STON") == "misspelt_word"


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


def test_exhausted_family_raises_bench_error(monkeypatch):
    import bench.data.suite.build as build

    class TwoPrompts(FAMILIES["last"].__class__):
        def generate(self, rng):
            items = ["lamp", rng.choice(["river", "cloud"])]
            return f"Last word of {', '.join(items)}?", {"family": "last", "answer": items[-1], "items": items}, items[-1]

    monkeypatch.setattr(build, "FAMILIES", {"last": TwoPrompts()})
    assert len(build_suite(0, {"sft": 2, "pref_train": 0, "pref_val": 0, "test": 0}).split("sft")) == 2
    with pytest.raises(BenchError, match="ran out of distinct prompts"):
        build_suite(0, {"sft": 3, "pref_train": 0, "pref_val": 0, "test": 0})


# ---------------------------------------------------------------- checker edge cases


def test_number_words():
    assert number_words(73) == "seventy-three"
    assert number_words(105) == "one hundred and five"
    assert number_words(3412) == "three thousand four hundred and twelve"
    assert number_words(2005) == "two thousand and five"
    assert number_words(40) == "forty"


def test_integer_checker_edges():
    meta = {"family": "add", "answer": "42", "a": 17, "b": 25}
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
    succ = {"family": "succ", "answer": "1300", "n": 1299}
    assert score_response(succ, "1300") == 1.0 and score_response(succ, "1299") == 0.0
    assert score_response(succ, "1299 + 1 = 1300") == 0.2
    big_max = {"family": "max", "answer": "82", "items": [47, 82, 19, 65]}
    assert score_response(big_max, "82") == 1.0 and score_response(big_max, "65") == 0.0


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


def test_list_checkers_partial_credit_only_with_format():
    meta = {"family": "sortnum", "answer": "17, 63, 73, 85", "items": [63, 17, 85, 73]}
    assert score_response(meta, "17, 63, 73, 85") == 1.0
    assert score_response(meta, "17,63 , 73,85.") == 1.0
    assert score_response(meta, "63, 17, 73, 85") == 0.5
    assert score_response(meta, "17, 17, 63, 85") == 0.0  # a repeated item is not a permutation: no credit
    assert score_response(meta, "17\n63\n73\n85") == 0.2
    assert score_response(meta, "Here you go: 17, 63, 73, 85") == 0.2
    assert score_response(meta, "17, 63, 73") == 0.0
    assert score_response(meta, "117, 63, 73, 85") == 0.0
    rev = {"family": "revlist", "answer": "kiwi, apple, fig, pear", "items": ["pear", "fig", "apple", "kiwi"]}
    assert score_response(rev, "kiwi, apple, fig, pear") == 1.0
    assert score_response(rev, "Kiwi, Apple, Fig, Pear") == 1.0
    assert score_response(rev, "pear, fig, apple, kiwi") == 0.0  # copied: no word in its place
    assert score_response(rev, "kiwi, fig, apple, pear") == 0.5
    assert score_response(rev, "kiwi apple fig pear") == 0.2
    assert score_response(rev, "kiwi, apple, fig") == 0.0


def test_word_checkers():
    last = {"family": "last", "answer": "cloud", "items": ["lamp", "river", "cloud"]}
    assert score_response(last, "cloud") == 1.0
    assert score_response(last, " Cloud. ") == 1.0
    assert score_response(last, "river") == 0.0
    assert score_response(last, '"cloud"') == 0.2
    assert score_response(last, "The last word is cloud!") == 0.2


def test_score_response_rejects_bad_meta():
    with pytest.raises(BenchError):
        score_response({"family": "nope", "answer": "1"}, "1")
    with pytest.raises(BenchError):
        score_response({"answer": "1"}, "1")
