"""Format-constraint family: rewrite a phrase in ALL CAPS (the upper-case spelling of a word is other tokens than
its lower-case spelling, so the model must spell each word anew)."""
from __future__ import annotations

import random
import re

from .common import FORMAT_MISS, Family, contains_token, normalize
from .wordlists import ADJECTIVES, NOUNS


class AllCaps(Family):
    """Rewrite a 2-4 word phrase in capital letters ("quiet river stone" -> ``QUIET RIVER STONE``).

    Checker (case matters): 1.0 for exactly the upper-cased phrase. If the reply is itself all capitals and
    only letters and spaces, the format is followed and the score is the fraction of word positions that
    match (over the longer of the two). Otherwise ``FORMAT_MISS`` when the phrase appears in any case inside
    the reply (e.g. lower case, Title Case, or wrapped in chatter), else 0.0.
    """

    name = "caps"
    case_sensitive = True
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
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(p=phrase)
        return prompt, {"family": self.name, "template": t, "answer": phrase.upper(), "phrase": phrase}, phrase.upper()

    def near_misses(self, meta, correct):
        """Measured: a word replaced by a look-alike word of the same lists (SOFT -> SMOOTH, PROUD -> PURPLE: same
        first letter), a word misspelt in capitals (last letter dropped or doubled), a word dropped or written twice,
        one word left in lower case."""
        words = correct.split()
        similar = [" ".join(words[:i] + [o.upper()] + words[i + 1:]) for i, w in enumerate(words)
                   for o in (ADJECTIVES + NOUNS) if o[0] == w[0].lower() and o != w.lower()]
        misspelt = [" ".join(words[:i] + [w[:-1]] + words[i + 1:]) for i, w in enumerate(words) if len(w) > 3]
        misspelt += [" ".join(words[:i] + [w + w[-1]] + words[i + 1:]) for i, w in enumerate(words)]
        dropped = [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
        doubled = [" ".join(words[:i + 1] + [words[i]] + words[i + 1:]) for i in range(len(words))]
        lower = [" ".join(words[:i] + [w.lower()] + words[i + 1:]) for i, w in enumerate(words) if w != "AND"]
        return {"similar_word": similar, "misspelt_word": misspelt, "dropped_or_repeated_word": dropped + doubled,
                "word_not_upper": lower}

    def misformat(self, rng, meta, correct):
        phrase = meta["phrase"]
        return rng.choice([phrase, phrase.title(), phrase.capitalize()])

    def house_style(self, meta, correct):
        return meta["phrase"].title()

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
