"""Registry of the embedded suite's task families (name -> family object), in a fixed order."""
from __future__ import annotations

from .common import FAILURE_TYPES, FORMAT_MISS, Family, normalize, number_words
from .fmt import AllCaps
from .numeric import Addition, Largest, NumberWords, SortNumbers, Successor
from .words import LastWord, ReverseList

FAMILIES: dict[str, Family] = {
    fam.name: fam
    for fam in (Addition(), Successor(), SortNumbers(), ReverseList(), AllCaps(), NumberWords(), Largest(), LastWord())
}

__all__ = ["FAILURE_TYPES", "FAMILIES", "FORMAT_MISS", "Family", "normalize", "number_words"]
