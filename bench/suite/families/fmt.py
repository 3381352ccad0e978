"""Format-constraint families: rewrite a phrase in ALL CAPS, answer inside a given JSON key."""
from __future__ import annotations

import json
import random
import re

from .common import FORMAT_MISS, Family, contains_token, normalize, pick_other
from .wordlists import ADJECTIVES, NOUNS


class AllCaps(Family):
    """Rewrite a 2-4 word phrase in capital letters ("quiet river stone" -> ``QUIET RIVER STONE``).

    Checker (case matters): 1.0 for exactly the upper-cased phrase. If the reply is itself all capitals and
    only letters and spaces, the format is followed and the score is the fraction of word positions that
    match (over the longer of the two). Otherwise ``FORMAT_MISS`` when the phrase appears in any case inside
    the reply (e.g. lower case, Title Case, or wrapped in chatter), else 0.0.
    """

    name = "caps"
    _TEMPLATES = (
        "Rewrite this phrase in ALL CAPS: {p}. Reply with the rewritten phrase only.",
        'Write "{p}" using only capital letters. Give nothing else.',
        "Convert to uppercase: {p}. Answer with the converted text only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        shape = rng.randrange(3)
        if shape == 0:
            words = [rng.choice(ADJECTIVES), rng.choice(NOUNS)]
        elif shape == 1:
            words = rng.sample(ADJECTIVES, 2) + [rng.choice(NOUNS)]
        else:
            words = [rng.choice(ADJECTIVES)] + rng.sample(NOUNS, 2)
            if rng.random() < 0.5:
                words.insert(2, "and")
        phrase = " ".join(words)
        prompt = rng.choice(self._TEMPLATES).format(p=phrase)
        return prompt, {"family": self.name, "answer": phrase.upper(), "phrase": phrase}, phrase.upper()

    def wrong(self, rng, meta, correct):
        words = correct.split()
        i = rng.randrange(len(words) - 1)
        swapped = words[:i] + [words[i + 1], words[i]] + words[i + 2:]
        dropped = words[:i] + words[i + 1:]
        return pick_other(rng, [" ".join(swapped), " ".join(dropped)], correct)

    def misformat(self, rng, meta, correct):
        phrase = meta["phrase"]
        return rng.choice([phrase, phrase.title(), phrase.capitalize()])

    def score(self, meta, response):
        answer = meta["answer"]
        r = normalize(response)
        if not r:
            return 0.0
        if r == answer:
            return 1.0
        if re.fullmatch(r"[A-Z]+( [A-Z]+)*", r):
            got, want = r.split(), answer.split()
            return sum(a == b for a, b in zip(got, want)) / max(len(got), len(want))
        return FORMAT_MISS if contains_token(r, answer) else 0.0


class JsonLongest(Family):
    """Name the longest of 3-4 words as a one-key JSON object (``{"answer": "lantern"}``; the key varies).

    Checker: the reply (whitespace and one trailing period tolerated) must parse as a JSON object. Exactly
    the requested key with the right word (case-insensitive) -> 1.0; the requested key with another value
    -> 0.0; the right word under another key or with extra keys -> ``FORMAT_MISS``. A reply that is not
    JSON (bare word, Python-style quotes, code fences, chatter around the object) -> ``FORMAT_MISS`` if it
    contains the word, else 0.0.
    """

    name = "json"
    _KEYS = ("answer", "word", "result", "longest")
    _TEMPLATES = (
        'Which of these words is the longest: {items}? Reply only with JSON of the form {{"{key}": "<word>"}}.',
        'Find the longest word in this list: {items}. Answer with JSON only, like {{"{key}": "..."}}.',
        'Words: {items}. Give the longest one as a JSON object with the single key "{key}", nothing else.',
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        while True:
            items = rng.sample(NOUNS, rng.randint(3, 4))
            lengths = sorted((len(w) for w in items), reverse=True)
            if lengths[0] > lengths[1]:
                break
        answer = max(items, key=len)
        key = rng.choice(self._KEYS)
        prompt = rng.choice(self._TEMPLATES).format(items=", ".join(items), key=key)
        meta = {"family": self.name, "answer": answer, "key": key, "items": items}
        return prompt, meta, json.dumps({key: answer})

    def wrong(self, rng, meta, correct):
        items = sorted(meta["items"], key=len, reverse=True)
        word = pick_other(rng, [items[1], meta["items"][0], meta["items"][-1]], meta["answer"])
        return json.dumps({meta["key"]: word})

    def misformat(self, rng, meta, correct):
        key, word = meta["key"], meta["answer"]
        return rng.choice([word, f"{{'{key}': '{word}'}}", f"{key}: {word}", f"```json\n{correct}\n```"])

    def score(self, meta, response):
        key, answer = meta["key"], meta["answer"].lower()
        r = normalize(response)
        if not r:
            return 0.0
        try:
            obj = json.loads(r)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            values = [v for v in obj.values() if isinstance(v, str)]
            if list(obj) == [key] and isinstance(obj[key], str):
                return 1.0 if obj[key].strip().lower() == answer else 0.0
            return FORMAT_MISS if any(v.strip().lower() == answer for v in values) else 0.0
        return FORMAT_MISS if contains_token(r, answer) else 0.0
