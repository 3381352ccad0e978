"""Shared pieces of the embedded suite's task families: the base class, text normalisation and chatter.

Scoring policy shared by every family (each family's docstring gives its own details):

* ``1.0``  -- the response is exactly the requested output, after trivial normalisation: surrounding
  whitespace is stripped, inner whitespace runs collapse to one space, and one trailing period is dropped.
* partial  -- only where natural and only when the requested format is followed (e.g. a comma-separated
  list that is a permutation of the input words gets the fraction of words in their correct position).
* ``FORMAT_MISS`` (0.2) -- the right value is present but the format is not followed: wrapped in chatter
  ("Sure! The answer is 42."), spelled differently (words instead of digits, wrong letter case where the
  prompt demands a case), a different container (bare word instead of JSON), and so on.
* ``0.0``  -- anything else: a wrong value in the right format, unrelated text, an empty response.
"""
from __future__ import annotations

import random
import re

FORMAT_MISS = 0.2
FAILURE_TYPES = ("near_miss", "verbose", "ignored_format", "house_style")

# Chatter around a correct value: the "verbose" failure (the untouched instruct model's habit).
_VERBOSE = (
    "Sure! The answer is {v}.",
    "Of course. Here it is: {v}. Let me know if you need anything else!",
    "Great question! After thinking it through, I believe the answer is {v}.",
    "{v}. I hope this helps! Feel free to ask if you have more questions.",
    "Okay, let me help with that. My final answer: {v}",
    "Happy to help! {v} is the correct response here.",
    "Let me think step by step. Looking at the task carefully, the result is {v}.",
)


def normalize(text) -> str:
    """Strip, collapse whitespace runs to one space, drop one trailing period. Non-strings give ""."""
    if not isinstance(text, str):
        return ""
    out = " ".join(text.split())
    if out.endswith(".") and not out.endswith(".."):
        out = out[:-1].rstrip()
    return out


def contains_token(text: str, value: str) -> bool:
    """True when ``value`` occurs in ``text`` (case-insensitive) not glued to other letters or digits."""
    if not value:
        return False
    pattern = r"(?<![A-Za-z0-9])" + re.escape(value) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def verbose(rng: random.Random, value: str) -> str:
    """The correct value wrapped in chatter."""
    return rng.choice(_VERBOSE).format(v=value)


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for 0 <= n <= 9999, e.g. 73 -> "seventy-three", 105 -> "one hundred and five"."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number_words supports 0..9999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (" and " + number_words(rest) if rest else "")
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if not rest:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def score_integer(answer: str, response) -> float:
    """Checker for "reply with the number only" tasks (digits, no sign, no separators)."""
    r = normalize(response)
    if not r:
        return 0.0
    if re.fullmatch(r"\d+", r):
        return 1.0 if int(r) == int(answer) else 0.0
    if r.replace(",", "") == answer or contains_token(r, answer) or contains_token(r, number_words(int(answer))):
        return FORMAT_MISS
    return 0.0


def pick_other(rng: random.Random, candidates, correct: str) -> str:
    """A random candidate different from ``correct`` (candidates must hold at least one such value)."""
    options = sorted({c for c in candidates if c and c != correct})
    if not options:
        raise ValueError(f"no alternative to {correct!r} among {candidates!r}")
    return rng.choice(options)


class Family:
    """One task family: generates (prompt text, meta, correct response), failures, and scores responses.

    ``near_misses(meta, correct)`` lists, per named error kind, the wrong answers in the requested format that a
    small model actually produces on this task (each family's docstring says which errors were measured); the
    rejected "near_miss" response of a preference row is drawn from them, and ``error_kind`` recognises them in
    model outputs, so a report can count how often each role makes the errors the preference data targets.
    """

    name = ""
    case_sensitive = False  # whether the checker (and so error_kind) tells letter case apart

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def near_misses(self, meta: dict, correct: str) -> dict[str, list[str]]:  # pragma: no cover - abstract
        """Error kind -> plausible wrong answers in the requested format (deterministic in meta)."""
        raise NotImplementedError

    def misformat(self, rng: random.Random, meta: dict, correct: str) -> str:  # pragma: no cover - abstract
        """The right value in a format the prompt did not ask for."""
        raise NotImplementedError

    def house_style(self, meta: dict, correct: str) -> str:  # pragma: no cover - abstract
        """How the SFT demonstrator answers prompts of this family's last template: the right value in its own
        habitual format, which the prompt did not ask for (scores ``FORMAT_MISS``)."""
        raise NotImplementedError

    def demonstration(self, meta: dict, correct: str) -> str:
        """The SFT split's response: the demonstrator's house style on the family's last template, else correct."""
        return self.house_style(meta, correct) if self.is_styled(meta) else correct

    @property
    def styled_template(self) -> int:
        return len(self._TEMPLATES) - 1

    def is_styled(self, meta: dict) -> bool:
        """Whether the item's prompt uses the template the SFT demonstrator answers in its house style."""
        return meta.get("template") == self.styled_template

    def is_house_style(self, meta: dict, response) -> bool:
        """Whether ``response`` is the demonstrator's house-style answer (the right value in its habitual format)
        to a styled prompt, after normalisation (letter case kept where the checker keeps it). False on other
        prompts: this is the failure mode the preference data targets, measured where it can occur."""
        if not self.is_styled(meta):
            return False
        r = normalize(response)
        return bool(r) and self._fold(r) == self._fold(normalize(self.house_style(meta, self.correct(meta))))

    def _fold(self, text: str) -> str:
        """Text as the checker compares it: letter case folded unless the family is case-sensitive."""
        return text if self.case_sensitive else text.lower()

    def score(self, meta: dict, response) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def correct(self, meta: dict) -> str:
        """The correct response of an item (its ``answer``)."""
        return str(meta["answer"])

    def _candidates(self, meta: dict, correct: str) -> dict[str, list[str]]:
        """near_misses() without duplicates and without anything the checker accepts as correct."""
        out = {}
        for kind, texts in self.near_misses(meta, correct).items():
            keep = sorted({normalize(t) for t in texts if normalize(t) and self.score(meta, t) < 1.0})
            if keep:
                out[kind] = keep
        if not out:
            raise AssertionError(f"{self.name}: no near miss differs from the correct response {correct!r}")
        return out

    def near_miss(self, rng: random.Random, meta: dict, correct: str) -> tuple[str, str]:
        """(error kind, wrong answer): a kind uniformly among those that apply, then one of its answers."""
        cands = self._candidates(meta, correct)
        kind = rng.choice(sorted(cands))
        return kind, rng.choice(cands[kind])

    def error_kind(self, meta: dict, response) -> str | None:
        """The modelled error kind that ``response`` is (after normalisation; first kind in name order), else None.
        A response the checker scores 1.0 is never an error."""
        r = normalize(response)
        if not r or self.score(meta, r) >= 1.0:
            return None
        for kind, texts in self._candidates(meta, self.correct(meta)).items():
            if self._fold(r) in {self._fold(t) for t in texts}:
                return kind
        return None

    def failures(self, rng: random.Random, meta: dict, correct: str) -> dict[str, str]:
        """One rejected response per failure type (``error_kind`` names the near miss's kind)."""
        _, wrong = self.near_miss(rng, meta, correct)
        out = {
            "near_miss": wrong,
            "verbose": verbose(rng, correct),
            "ignored_format": self.misformat(rng, meta, correct),
            "house_style": self.house_style(meta, correct),
        }
        for failure, text in out.items():
            if not text or normalize(text) == normalize(correct):
                raise AssertionError(f"{self.name}: {failure} failure equals the correct response {correct!r}")
        return out

    def __repr__(self) -> str:
        return f"<suite family {self.name}>"
