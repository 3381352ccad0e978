"""Word lists for the embedded suite (written for this project; all lowercase ASCII)."""
from __future__ import annotations

NOUNS = tuple("""
anchor basket bell bridge bottle bread brick button cabin candle canyon carpet castle chain chalk cloud
coin comet desert drum eagle engine feather fence field flag flute forest garden ghost glass globe hammer
harbor helmet hill island jungle kettle kite ladder lake lamp letter magnet marble meadow mirror moon
needle nest ocean orbit paddle palace paper pencil pepper piano pillow planet pocket pond puzzle quilt
ribbon river rocket saddle shadow shell shovel spoon stone storm sugar table ticket tower tunnel valley
violin wagon window winter yarn zebra acorn blanket cactus dragon folder lantern parrot turtle
""".split())

ADJECTIVES = tuple("""
quiet bright gentle silver brave cold early golden happy hidden little lucky misty narrow noisy proud
rapid rusty shiny silent sleepy smooth soft sunny tiny warm wild windy young ancient
""".split())

# Categories for the counting family; no word belongs to two categories.
CATEGORIES = {
    "animals": tuple("cat dog horse goat sheep mouse tiger wolf bear deer fox frog duck lion camel otter".split()),
    "fruits": tuple("apple pear banana grape mango peach plum cherry melon kiwi fig apricot".split()),
    "colors": tuple("red blue green yellow purple pink brown gray black white".split()),
    "vehicles": tuple("bus truck bicycle train boat van taxi tram scooter tractor".split()),
    "clothing items": tuple("shirt sock hat coat scarf glove boot skirt jacket sweater".split()),
}

# Words to spell backwards: every list above (none is a palindrome; checked below).
REVERSE_WORDS = tuple(sorted(set(NOUNS) | set(ADJECTIVES) | {w for ws in CATEGORIES.values() for w in ws}))

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")


def _check() -> None:
    assert len(set(NOUNS)) == len(NOUNS), "duplicate noun"
    assert len(set(ADJECTIVES)) == len(ADJECTIVES), "duplicate adjective"
    seen: set[str] = set()
    for words in CATEGORIES.values():
        assert not seen & set(words), "category overlap"
        seen |= set(words)
    for w in NOUNS + ADJECTIVES + tuple(seen):
        assert w.isascii() and w.isalpha() and w.islower(), w
    assert all(w != w[::-1] for w in REVERSE_WORDS), "palindrome in REVERSE_WORDS"


_check()
