"""Word-manipulation families: alphabetical sorting, reversing a word, picking the n-th word of a list."""
from __future__ import annotations

import random
import re

from .common import FORMAT_MISS, Family, contains_token, normalize, pick_other
from .wordlists import NOUNS, ORDINALS, REVERSE_WORDS


def _in_order(text: str, words: list[str]) -> bool:
    """True when every word occurs in ``text`` as a whole word, in the given order."""
    pos = 0
    for w in words:
        m = re.compile(r"(?<![A-Za-z])" + re.escape(w) + r"(?![A-Za-z])", re.IGNORECASE).search(text, pos)
        if m is None:
            return False
        pos = m.end()
    return True


class SortWords(Family):
    """Sort 4-5 words alphabetically; reply as a comma-separated list.

    Checker: the reply is split on commas (spaces around commas are free, case is ignored). If the pieces
    are exactly a permutation of the input words the format is followed and the score is the fraction of
    words in their sorted position (1.0 only when fully sorted). Otherwise -- other separators, numbering,
    chatter, missing or extra words -- the score is ``FORMAT_MISS`` if the sorted words all appear in order
    anywhere in the reply, else 0.0. Partial credit is never given when the format is ignored.
    """

    name = "sort"
    _TEMPLATES = (
        "Sort these words in alphabetical order: {items}. Reply with the sorted words separated by commas, "
        "nothing else.",
        "Put these words in A to Z order: {items}. Answer only with the words, comma-separated.",
        "Arrange alphabetically: {items}. Give just the sorted list, with commas between the words.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        words = rng.sample(NOUNS, rng.randint(4, 5))
        ordered = sorted(words)
        while words == ordered:
            rng.shuffle(words)
        prompt = rng.choice(self._TEMPLATES).format(items=", ".join(words))
        answer = ", ".join(ordered)
        return prompt, {"family": self.name, "answer": answer, "items": words}, answer

    def wrong(self, rng, meta, correct):
        ordered = correct.split(", ")
        i = rng.randrange(len(ordered) - 1)
        swapped = ordered[:i] + [ordered[i + 1], ordered[i]] + ordered[i + 2:]
        cands = [", ".join(swapped), ", ".join(reversed(ordered)), ", ".join(meta["items"])]
        return pick_other(rng, cands, correct)

    def misformat(self, rng, meta, correct):
        ordered = correct.split(", ")
        return rng.choice([
            "\n".join(ordered),
            " ".join(ordered),
            "\n".join(f"{i}. {w}" for i, w in enumerate(ordered, 1)),
            "; ".join(ordered),
        ])

    def score(self, meta, response):
        target = [w.lower() for w in meta["answer"].split(", ")]
        r = normalize(response)
        if not r:
            return 0.0
        pieces = [p.strip().lower() for p in r.split(",")]
        if sorted(pieces) == sorted(target):
            return sum(a == b for a, b in zip(pieces, target)) / len(target)
        return FORMAT_MISS if _in_order(r, target) else 0.0


class ReverseWord(Family):
    """Reverse the letters of a word ("stone" -> ``enots``).

    Checker (case-insensitive): 1.0 for exactly the reversed word; 0.0 for any other single word (wrong
    value, right format); ``FORMAT_MISS`` when the reversed letters are split up by spaces, hyphens or
    commas, or the reversed word sits inside other text; else 0.0.
    """

    name = "reverse"
    _TEMPLATES = (
        "Write the word '{w}' backwards. Reply with the reversed word only.",
        'Reverse the letters of "{w}". Answer with just the reversed letters as one word.',
        "Spell {w} in reverse order. Give only the result, with no spaces.",
        "What is {w} written from right to left? Reply with the reversed word only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        word = rng.choice(REVERSE_WORDS)
        prompt = rng.choice(self._TEMPLATES).format(w=word)
        return prompt, {"family": self.name, "answer": word[::-1], "word": word}, word[::-1]

    def wrong(self, rng, meta, correct):
        cands = [meta["word"]]  # forgot to reverse
        for i in range(len(correct) - 1):
            cands.append(correct[:i] + correct[i + 1] + correct[i] + correct[i + 2:])  # adjacent letters swapped
        cands.append(correct[:-1])  # dropped the last letter
        return pick_other(rng, cands, correct)

    def misformat(self, rng, meta, correct):
        return rng.choice(["-".join(correct), " ".join(correct.upper()), ", ".join(correct)])

    def score(self, meta, response):
        answer = meta["answer"].lower()
        r = normalize(response).lower()
        if not r:
            return 0.0
        if r == answer:
            return 1.0
        if re.fullmatch(r"[a-z]+", r):
            return 0.0
        if re.sub(r"[\s,\-]", "", r) == answer or contains_token(r, answer):
            return FORMAT_MISS
        return 0.0


class PickWord(Family):
    """Name the word at a given position of a list ("third word" -> ``cloud``).

    Checker (case-insensitive): 1.0 for exactly that word; 0.0 for any other single word; ``FORMAT_MISS``
    when the word appears inside other text (quotes, "Word 3: cloud", chatter); else 0.0.
    """

    name = "pick"
    _TEMPLATES = (
        "Here is a list of words: {items}. What is word number {k}? Reply with that word only.",
        "Which word is {ordinal} in this list: {items}? Answer with the single word, nothing else.",
        "Look at this list: {items}. Give the {ordinal} word only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        items = rng.sample(NOUNS, rng.randint(5, 7))
        k = rng.randint(1, len(items))
        prompt = rng.choice(self._TEMPLATES).format(items=", ".join(items), k=k, ordinal=ORDINALS[k - 1])
        answer = items[k - 1]
        return prompt, {"family": self.name, "answer": answer, "items": items, "position": k}, answer

    def wrong(self, rng, meta, correct):
        items, k = meta["items"], meta["position"]
        return pick_other(rng, [items[j - 1] for j in (k - 1, k + 1) if 1 <= j <= len(items)], correct)

    def misformat(self, rng, meta, correct):
        k = meta["position"]
        return rng.choice([f'"{correct}"', f"Word {k}: {correct}", f"{k}. {correct}"])

    def score(self, meta, response):
        answer = meta["answer"].lower()
        r = normalize(response).lower()
        if not r:
            return 0.0
        if r == answer:
            return 1.0
        if re.fullmatch(r"[a-z]+", r):
            return 0.0
        return FORMAT_MISS if contains_token(r, answer) else 0.0
