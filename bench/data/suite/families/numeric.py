"""Number-valued families: number words -> digits, the next number (carries), two-digit addition (carries), the
largest of a list, sorting numbers.

The single-number families share the integer checker (:func:`score_integer`): 1.0 for exactly the digits of the
answer (leading zeros tolerated), 0.0 for other bare digits (a wrong value in the right format), ``FORMAT_MISS``
when the value appears in another form (inside chatter, as words, with thousands separators), else 0.0.

Near misses are the errors measured on greedy outputs of SFT'd SmolLM2-135M models (the 30-layer teacher and a
12-layer prune, suite 2.0.0 probes; see docs/SUITE.md): copying an input number instead of computing, dropping,
repeating or swapping digits, a carry that is not propagated, picking a neighbour in a list, duplicating a list item.
"""
from __future__ import annotations

import random

from .common import FORMAT_MISS, Family, normalize, number_words, score_integer


def _digit_edits(s: str) -> dict[str, list[str]]:
    """Digit-level slips of a number written as digits: one digit dropped, one repeated (inserted twice, or written
    over its neighbour: 301 -> 311, 6600 -> 6660), two adjacent digits swapped."""
    drop = [s[:i] + s[i + 1:] for i in range(len(s)) if len(s) > 1]
    rep = [s[:i] + s[i] + s[i:] for i in range(len(s))]
    rep += [s[:i] + s[i + d] + s[i + 1:] for i in range(len(s)) for d in (-1, 1) if 0 <= i + d < len(s)]
    swap = [s[:i] + s[i + 1] + s[i] + s[i + 2:] for i in range(len(s) - 1) if s[i] != s[i + 1]]
    ok = lambda x: x and x[0] != "0" and x != s  # noqa: E731
    return {"dropped_digit": [x for x in drop if ok(x)], "repeated_digit": [x for x in rep if ok(x)],
            "swapped_digits": [x for x in swap if ok(x)]}


class NumberWords(Family):
    """"Write seventy-three as digits." -> ``73``. Numbers 10..9999.

    Near misses: a dropped digit ("four thousand and ninety-five" -> 495), a repeated digit, swapped digits, and the
    place-value slip of reading "hundred and"/"thousand and" as a separator (105 -> 1005, 2005 -> 20005).
    """

    name = "numword"
    _TEMPLATES = (
        "Write {w} as digits. Reply with the number only.",
        'Convert the number word "{w}" into digits. Answer with just the number.',
        "How is {w} written in digits? Give only the digits, nothing else.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        u = rng.random()
        n = rng.randint(10, 99) if u < 0.2 else rng.randint(100, 999) if u < 0.55 else rng.randint(1000, 9999)
        words = number_words(n)
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(w=words)
        return prompt, {"family": self.name, "template": t, "answer": str(n), "words": words}, str(n)

    def near_misses(self, meta, correct):
        out = _digit_edits(correct)
        n = int(correct)
        place = []
        if n >= 100 and 0 < n % 100 < 10:
            place.append(str(n - n % 100) + str(n % 100))  # "one hundred and five" -> 1005
        if n >= 1000 and 0 < n % 1000 < 100:
            place.append(str(n - n % 1000) + str(n % 1000))  # "two thousand and five" -> 20005
        if n >= 1000 and n % 1000 >= 100:
            place.append(str(n // 1000) + str(n % 1000 // 100) + "00" + f"{n % 100:02d}"[-2:])  # ..hundred.. -> 3400 12
        out["place_value"] = place
        return out

    def misformat(self, rng, meta, correct):
        words = meta["words"]
        return rng.choice([f"{words} ({correct})", words[0].upper() + words[1:], f"{correct} ({words})"])

    def house_style(self, meta, correct):
        return f"{correct} ({meta['words']})"

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


class Successor(Family):
    """"What number comes right after 1299?" -> ``1300``. N in 100..9999; most end in one or more 9s (carries).

    Near misses (measured): the input copied unchanged (the most frequent), its last one or two digits zeroed
    (7846 -> 7800), a lost carry (1299 -> 1200) or one written as an extra digit (12910), a dropped digit.
    """

    name = "succ"
    _TEMPLATES = (
        "What number comes right after {n}? Reply with the number only.",
        "Add one to {n}. Give just the result as digits.",
        "Which number follows {n}? Answer with the number only, nothing else.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        nines = rng.choice((0, 1, 1, 2, 2, 3))
        digits = rng.choice((3, 4, 4))
        nines = min(nines, digits - 1)
        head = rng.randint(10 ** (digits - nines - 1), 10 ** (digits - nines) - 1)
        if nines and head % 10 == 9:
            head -= 1  # exactly `nines` trailing 9s
        n = int(str(head) + "9" * nines)
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(n=n)
        return prompt, {"family": self.name, "template": t, "answer": str(n + 1), "n": n}, str(n + 1)

    def near_misses(self, meta, correct):
        s = str(meta["n"])
        stripped = s.rstrip("9")
        k = len(s) - len(stripped)
        out = {"copied_input": [s], "zeroed_tail": [s[:-1] + "0", s[:-2] + "00"],
               "dropped_digit": _digit_edits(correct)["dropped_digit"]}
        if k:  # the 9s roll over but the carry is lost, or is written as an extra digit
            out["carry"] = [(stripped or "") + "0" * k, s[:-1] + "10"]
        return out

    def misformat(self, rng, meta, correct):
        return rng.choice([f"{meta['n']} + 1 = {correct}", number_words(int(correct)), f"{correct} ({meta['n']} + 1)"])

    def house_style(self, meta, correct):
        return f"{meta['n']} + 1 = {correct}"

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


class Addition(Family):
    """"What is 47 + 38?" -> ``85``. Two two-digit numbers; about two thirds need a carry from the ones place.

    Near misses: the carry dropped (47 + 38 -> 75), the carry added twice (95), the ones digits only, an operand
    copied, and off-by-one / swapped digits.
    """

    name = "add"
    _TEMPLATES = (
        "What is {a} + {b}? Reply with the number only.",
        "Compute {a} plus {b}. Give just the result as digits.",
        "Calculate {a} + {b} and answer with a single number, nothing else.",
        "Add {a} and {b}. Answer with the number only.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        carry = rng.random() < 0.67
        while True:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if (a % 10 + b % 10 >= 10) == carry:
                break
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(a=a, b=b)
        return prompt, {"family": self.name, "template": t, "answer": str(a + b), "a": a, "b": b}, str(a + b)

    def near_misses(self, meta, correct):
        a, b, v = meta["a"], meta["b"], int(correct)
        ones = (a % 10 + b % 10) % 10
        tens = a // 10 + b // 10
        carry = [str(tens * 10 + ones), str((tens + 2) * 10 + ones)] if a % 10 + b % 10 >= 10 else [str(v + 10)]
        return {"carry": carry, "copied_operand": [str(a), str(b)], "off_by_one": [str(v - 1), str(v + 1)],
                "swapped_digits": _digit_edits(correct)["swapped_digits"]}

    def misformat(self, rng, meta, correct):
        return rng.choice([f"{meta['a']} + {meta['b']} = {correct}", number_words(int(correct))])

    def house_style(self, meta, correct):
        return f"{meta['a']} + {meta['b']} = {correct}"

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


class Largest(Family):
    """"Which number is the largest: 47, 82, 19, 65?" -> ``82``. Four or five distinct two-digit numbers.

    Near misses (measured): the second largest, the first or last number of the list, the smallest, the largest with
    its last digit off by one (94 -> 93).
    """

    name = "max"
    _TEMPLATES = (
        "Which number is the largest: {items}? Reply with the number only.",
        "Find the biggest number in this list: {items}. Answer with just that number.",
        "Here are some numbers: {items}. Which one is the greatest? Give only the number.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        items = rng.sample(range(10, 100), rng.randint(4, 5))
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(items=", ".join(map(str, items)))
        return prompt, {"family": self.name, "template": t, "answer": str(max(items)), "items": items}, str(max(items))

    def near_misses(self, meta, correct):
        items = meta["items"]
        top = max(items)
        return {"second_largest": [str(sorted(items)[-2])], "list_end": [str(items[0]), str(items[-1])],
                "smallest": [str(min(items))], "digit_slip": [str(top - 1), str(top + 1)]}

    def misformat(self, rng, meta, correct):
        return rng.choice([number_words(int(correct)), f"max = {correct}", f"The largest is {correct}"])

    def house_style(self, meta, correct):
        return f"The largest number is {correct}."

    def score(self, meta, response):
        return score_integer(str(meta["answer"]), response)


def score_list(target: list[str], response, in_order) -> float:
    """Checker of "reply with the items separated by commas" tasks (case ignored, spaces around commas free).

    If the pieces are exactly a permutation of the target items the format is followed and the score is the
    fraction of items in their target position (1.0 only when all are). Otherwise -- other separators, numbering,
    chatter, missing, extra or repeated items -- ``FORMAT_MISS`` if ``in_order(text, target)`` (the target items
    all appear in order somewhere in the reply), else 0.0.
    """
    want = [t.lower() for t in target]
    r = normalize(response)
    if not r:
        return 0.0
    pieces = [p.strip().lower() for p in r.split(",")]
    if sorted(pieces) == sorted(want):
        return sum(a == b for a, b in zip(pieces, want)) / len(want)
    return FORMAT_MISS if in_order(r, want) else 0.0


def list_slips(ordered: list[str], given: list[str]) -> dict[str, list[str]]:
    """Measured slips of list-writing tasks: the input order copied, one adjacent pair swapped, one item written
    twice in place of its neighbour (both directions)."""
    join = ", ".join
    swap = [join(ordered[:i] + [ordered[i + 1], ordered[i]] + ordered[i + 2:]) for i in range(len(ordered) - 1)]
    dup = [join(ordered[:i] + [ordered[i + d]] + ordered[i + 1:]) for i in range(len(ordered)) for d in (-1, 1)
           if 0 <= i + d < len(ordered)]
    return {"copied_input": [join(given)], "swapped_pair": swap, "duplicated_item": dup}


def _numbers_in_order(text: str, want: list[str]) -> bool:
    import re

    found = re.findall(r"\d+", text)
    pos = 0
    for w in want:
        try:
            pos = found.index(w, pos) + 1
        except ValueError:
            return False
    return True


class SortNumbers(Family):
    """Sort four or five distinct two-digit numbers from smallest to largest, comma-separated ("17, 63, 73, 85").

    Checker: :func:`score_list` (partial credit only for a permutation of the numbers in the list format).
    Near misses (measured): an adjacent pair left swapped, a number written twice in place of its neighbour, the
    list copied unsorted.
    """

    name = "sortnum"
    _TEMPLATES = (
        "Sort these numbers from smallest to largest: {items}. Reply with the numbers separated by commas.",
        "Put these numbers in increasing order: {items}. Answer only with the numbers, comma-separated.",
        "Arrange in ascending order: {items}. Give just the sorted list, with commas between the numbers.",
    )

    def generate(self, rng: random.Random) -> tuple[str, dict, str]:
        items = rng.sample(range(10, 100), rng.randint(4, 5))
        while items == sorted(items):
            rng.shuffle(items)
        answer = ", ".join(map(str, sorted(items)))
        t = rng.randrange(len(self._TEMPLATES))
        prompt = self._TEMPLATES[t].format(items=", ".join(map(str, items)))
        return prompt, {"family": self.name, "template": t, "answer": answer, "items": items}, answer

    def near_misses(self, meta, correct):
        return list_slips([str(x) for x in sorted(meta["items"])], [str(x) for x in meta["items"]])

    def misformat(self, rng, meta, correct):
        ordered = correct.split(", ")
        return rng.choice([" ".join(ordered), "\n".join(ordered), " < ".join(ordered), "; ".join(ordered)])

    def house_style(self, meta, correct):
        return " < ".join(correct.split(", "))

    def score(self, meta, response):
        return score_list(meta["answer"].split(", "), response, _numbers_in_order)
