"""Word-list families: write a list of words in reverse order, name the last word of a list.

Near misses are the errors measured on greedy outputs of SFT'd SmolLM2-135M models (docs/SUITE.md): the list
copied in its original order, one adjacent pair swapped, one word written twice in place of its neighbour, and
picking a neighbouring word.
"""
from __future__ import annotations

import random
import re

from .common import FORMAT_MISS, Family, contains_token, normalize
from .numeric import list_slips, score_list
from .wordlists import NOUNS


def _in_order(text: str, words: list[str]) -> bool:
    """True when every word occurs in ``text`` as a whole word, in the given order."""
    pos = 0
    for w in words:
        m = re.compile(r"(?<![A-Za-z])" + re.escape(w) + r"(?![A-Za-z])", re.IGNORECASE).search(text, pos)
        if m is None:
            return False
        pos = m.end()
    return True


class ReverseList(Family):
    """Write 3-5 words in reverse order, comma-separated ("lamp, river, cloud" -> ``cloud, river, lamp``).

    Checker: :func:`score_list` (partial credit only for a permutation of the words in the list format).
    """

    name = "revlist"
    _TEMPLATES = (
        "Write these words in reverse order: {items}. Reply with the words separated by commas.",
        "Reverse the order of this list: {items}. Answer only with the words, comma-separated.",
        "List these words from last to first: {items}. Give just the list, with commas between the words.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        items = rng.sample(NOUNS, rng.randint(3, 5))
        answer = ", ".join(reversed(items))
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(items=", ".join(items))
        return prompt, {"family": self.name, "template": t, "answer": answer, "items": items}, answer

    def near_misses(self, meta, correct):
        return list_slips(list(reversed(meta["items"])), list(meta["items"]))

    def misformat(self, rng, meta, correct):
        ordered = correct.split(", ")
        return rng.choice(["\n".join(ordered), " ".join(ordered), "\n".join(f"{i}. {w}" for i, w in enumerate(ordered, 1)),
                           "; ".join(ordered)])

    def house_style(self, meta, correct):
        return "\n".join(correct.split(", "))

    def score(self, meta, response):
        return score_list(meta["answer"].split(", "), response, _in_order)


class LastWord(Family):
    """Name the last word of a list of 4-7 words ("lamp, river, cloud, stone" -> ``stone``).

    Checker (case-insensitive): 1.0 for exactly that word; 0.0 for any other single word; ``FORMAT_MISS``
    when the word appears inside other text (quotes, "Last word: stone", chatter); else 0.0.
    Near misses: the second-to-last word, the first word.
    """

    name = "last"
    _TEMPLATES = (
        "What is the last word of this list: {items}? Reply with the word only.",
        "Here is a list of words: {items}. Which word comes last? Answer with that single word.",
        "Look at this list: {items}. Give the final word only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        items = rng.sample(NOUNS, rng.randint(4, 7))
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(items=", ".join(items))
        return prompt, {"family": self.name, "template": t, "answer": items[-1], "items": items}, items[-1]

    def near_misses(self, meta, correct):
        items = meta["items"]
        return {"neighbour": [items[-2]], "first_word": [items[0]]}

    def misformat(self, rng, meta, correct):
        return rng.choice([f'"{correct}"', f"Last word: {correct}", f"{len(meta['items'])}. {correct}"])

    def house_style(self, meta, correct):
        return f"The last word is {correct}."

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
