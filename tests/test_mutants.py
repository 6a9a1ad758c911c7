"""Every mutant of scripts/mutants.py names a real place: its text occurs exactly once in
its file, so code that moves takes its mutants along (or this fails), without running them."""

from __future__ import annotations

import pytest

from scripts.mutants import MUTANTS, ROOT


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_a_mutant_names_text_that_occurs_once(mutant):
    path = ROOT / mutant.path
    assert path.is_file(), f"{mutant.name}: no file {mutant.path}"
    assert path.read_text().count(mutant.old) == 1, f"{mutant.name}: stale in {mutant.path}"
    assert mutant.old != mutant.new
