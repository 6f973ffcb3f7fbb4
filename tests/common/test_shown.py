"""common/shown.py: every long list a message prints names a few, then counts the rest."""

from __future__ import annotations

from common.shown import MISMATCHES_SHOWN, shown_inline, shown_lines


def test_lines_name_the_first_few_then_count_the_rest():
    items = [f"key{i}" for i in range(MISMATCHES_SHOWN + 3)]
    assert shown_lines(items) == [f"  key{i}" for i in range(MISMATCHES_SHOWN)] + ["  … and 3 more"]
    assert shown_lines(items[:MISMATCHES_SHOWN]) == [f"  key{i}" for i in range(MISMATCHES_SHOWN)]  # nothing to count
    assert shown_lines(["a", "b", "c"], indent="    ", limit=2, where=" (see the sidecars)") == [
        "    a", "    b", "    … and 1 more (see the sidecars)"]
    assert shown_lines([]) == []


def test_inline_names_the_first_few_then_counts_the_rest():
    assert shown_inline(["chb01_03", "chb01_04", "chb02_16"], 2) == "chb01_03, chb01_04, … and 1 more"
    assert shown_inline(["a", "b"], 2) == "a, b"
    assert shown_inline([3, 4]) == "3, 4"  # not only strings: keys of any kind
    assert shown_inline([]) == ""
