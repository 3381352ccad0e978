"""Number-valued families: number words -> digits, small arithmetic, counting items of a kind.

All three share the integer checker (:func:`score_integer`): 1.0 for exactly the digits of the answer
(leading zeros tolerated), 0.0 for other bare digits (a wrong value in the right format), ``FORMAT_MISS``
when the value appears in another form (inside chatter, as words, with thousands separators), else 0.0.
"""
from __future__ import annotations

import random

from .common import Family, number_words, pick_other, score_integer
from .wordlists import CATEGORIES


class NumberWords(Family):
    """"Write seventy-three as digits." -> ``73``. Numbers 10..9999."""

    name = "numword"
    _TEMPLATES = (
        "Write {w} as digits. Reply with the number only.",
        'Convert the number word "{w}" into digits. Answer with just the number.',
        "How is {w} written in digits? Give only the digits, nothing else.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        u = rng.random()
        n = rng.randint(10, 99) if u < 0.35 else rng.randint(100, 999) if u < 0.8 else rng.randint(1000, 9999)
        words = number_words(n)
        prompt = rng.choice(self._TEMPLATES).format(w=words)
        return prompt, {"family": self.name, "answer": str(n), "words": words}, str(n)

    def wrong(self, rng, meta, correct):
        n = int(correct)
        cands = [n + 1, n - 1, n + 10, n - 10]
        s = str(n)
        if s[-1] != s[-2]:
            cands.append(int(s[:-2] + s[-1] + s[-2]))  # swapped last two digits
        if n >= 100 and 0 < n % 100 < 10:
            cands.append(int(str(n - n % 100) + str(n % 100)))  # "one hundred and five" -> 1005
        return pick_other(rng, [str(c) for c in cands if c >= 0], correct)

    def misformat(self, rng, meta, correct):
        words = meta["words"]
        return rng.choice([f"{words} ({correct})", words[0].upper() + words[1:], f"{correct} ({words})"])

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


class Arithmetic(Family):
    """"What is 17 + 25?" -> ``42``. Addition/subtraction of two-digit numbers, small products."""

    name = "arith"
    _OPS = {"+": "plus", "-": "minus", "*": "times"}
    _TEMPLATES = (
        "What is {a} {sym} {b}? Reply with the number only.",
        "Compute {a} {word} {b}. Give just the result as digits.",
        "Calculate {a} {sym} {b} and answer with a single number, nothing else.",
        "What do you get from {a} {word} {b}? Answer with the number only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        op = rng.choice("+-*")
        if op == "+":
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            value = a + b
        elif op == "-":
            a = rng.randint(11, 99)
            b = rng.randint(2, a - 1)
            value = a - b
        else:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            value = a * b
        prompt = rng.choice(self._TEMPLATES).format(a=a, b=b, sym=op, word=self._OPS[op])
        meta = {"family": self.name, "answer": str(value), "a": a, "b": b, "op": op}
        return prompt, meta, str(value)

    def wrong(self, rng, meta, correct):
        v, a, b, op = int(correct), meta["a"], meta["b"], meta["op"]
        cands = [v + 1, v - 1, v + 10, v - 10]
        if op == "*":
            cands += [a * (b - 1), a * (b + 1), a + b]
        elif op == "-":
            cands.append(a + b)
        else:
            cands.append(abs(a - b))
        return pick_other(rng, [str(c) for c in cands if c >= 0], correct)

    def misformat(self, rng, meta, correct):
        eq = f"{meta['a']} {meta['op']} {meta['b']} = {correct}"
        options = [eq]
        if int(correct) <= 9999:
            options.append(number_words(int(correct)))
        return rng.choice(options)

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


class CountKind(Family):
    """"How many animals are in this list: cat, lamp, fox, ...?" -> ``2``. One digit, 1..5."""

    name = "count"
    _TEMPLATES = (
        "How many {kind} are in this list: {items}? Reply with a single digit only.",
        "Count the {kind} in this list: {items}. Answer with one digit and nothing else.",
        "Here is a list: {items}. How many of them are {kind}? Give only the digit.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        kinds = sorted(CATEGORIES)
        kind = rng.choice(kinds)
        length = rng.randint(5, 8)
        count = rng.randint(1, 5)
        others = [w for k in kinds if k != kind for w in CATEGORIES[k]]
        items = rng.sample(CATEGORIES[kind], count) + rng.sample(others, length - count)
        rng.shuffle(items)
        prompt = rng.choice(self._TEMPLATES).format(kind=kind, items=", ".join(items))
        meta = {"family": self.name, "answer": str(count), "kind": kind, "items": items}
        return prompt, meta, str(count)

    def wrong(self, rng, meta, correct):
        n = int(correct)
        return pick_other(rng, [str(c) for c in (n - 1, n + 1) if 0 <= c <= len(meta["items"])], correct)

    def misformat(self, rng, meta, correct):
        words = number_words(int(correct))
        return rng.choice([words, words.capitalize(), f"{correct} of them"])

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)
