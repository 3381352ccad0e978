"""Registry of the embedded suite's task families (name -> family object), in a fixed order."""
from __future__ import annotations

from .common import FAILURE_TYPES, FORMAT_MISS, Family, normalize, number_words
from .fmt import AllCaps, JsonLongest
from .numeric import Arithmetic, CountKind, NumberWords
from .words import PickWord, ReverseWord, SortWords

FAMILIES: dict[str, Family] = {
    fam.name: fam
    for fam in (NumberWords(), Arithmetic(), CountKind(), SortWords(), ReverseWord(), PickWord(), AllCaps(),
                JsonLongest())
}

__all__ = ["FAILURE_TYPES", "FAMILIES", "FORMAT_MISS", "Family", "normalize", "number_words"]
