"""mutants_fresh2.py - a third list of mutants for tools/mutate.py (--set fresh2),
written blind by someone who read the library's code but neither the tests nor
the earlier lists: the issue's "fresh set of plausible bugs made by someone
else"."""
from __future__ import annotations

from typing import List

from mutate import Mutant

FRESH2: List[Mutant] = [
]
