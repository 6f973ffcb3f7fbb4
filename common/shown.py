"""How a message lists many things: a few named, then how many more. One rule for every list an
error, a note or a summary prints, in lines or inline:

    shown_lines(["a.weight (3, 4) vs (4, 3)", ...])  ->  ["  a.weight ...", ..., "  … and 12 more"]
    shown_inline(["chb01_03", "chb01_04", ...], 2)  ->  "chb01_03, chb01_04, … and 7 more"

A leaf module (no project imports), so that every module that lists things can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

# how many of a list an error names before it gives the count of the rest
MISMATCHES_SHOWN = 5
# how many a long job's summary or survey names (a partial download: a CHB-MIT summary lists ~40)
SUMMARY_SHOWN = 20


def _more(items: Sequence, limit: int) -> str:
    return f"… and {len(items) - limit} more" if len(items) > limit else ""


def shown_lines(lines: Sequence[str], indent: str = "  ", limit: int = MISMATCHES_SHOWN, where: str = "") -> list[str]:
    """The first `limit` of `lines`, indented, then a line counting the rest (`where`: where the
    rest can be read, appended to it)."""
    more = _more(lines, limit)
    return [f"{indent}{line}" for line in lines[:limit]] + ([f"{indent}{more}{where}"] if more else [])


def shown_inline(items: Sequence, limit: int = MISMATCHES_SHOWN) -> str:
    """The first `limit` of `items`, comma-separated, then how many more."""
    return ", ".join([*map(str, items[:limit]), *filter(None, [_more(items, limit)])])


def plural(count: int, noun: str) -> str:
    """'1 event', '3 events' (a regular plural: nouns that take -s)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
