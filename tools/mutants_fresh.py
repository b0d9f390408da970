"""mutants_fresh.py - a second list of mutants for tools/mutate.py (--set fresh),
written from the library's code alone, without looking at which tests exist:
the check of how many bugs the suites catch that nobody wrote a test for."""
from __future__ import annotations

from typing import List

from mutate import Mutant

FRESH: List[Mutant] = [
]
