"""How an error message lists many things: a few named, then how many more.

    shown_lines(["a.weight (3, 4) vs (4, 3)", ...])  ->  ["  a.weight ...", ..., "  … and 12 more"]

A leaf module (no project imports), so that every module naming mismatches can use it.
"""

from __future__ import annotations

# how many of a list an error names before it gives the count of the rest
MISMATCHES_SHOWN = 5


def shown_lines(lines: list[str], indent: str = "  ") -> list[str]:
    """The first MISMATCHES_SHOWN of `lines`, indented, then how many more there are."""
    more = [f"{indent}… and {len(lines) - MISMATCHES_SHOWN} more"] if len(lines) > MISMATCHES_SHOWN else []
    return [f"{indent}{line}" for line in lines[:MISMATCHES_SHOWN]] + more
