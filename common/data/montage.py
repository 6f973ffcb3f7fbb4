"""Montages: which signals the model sees, in which order, and how they come from EDF channels.

Pure Python (no numpy, no MNE) so that `common.config` can size the model from a montage name.

- `ref19`: 19 referential 10-20 electrodes in the original's order (left chain, midline, right
  chain; original_spec.md §1.1). The GNN's node order and every cache depend on it.
- `bipolar`: the 23 CHB-MIT derivations (double banana plus midline and the FT9/FT10 chain), in
  CHB-MIT's own order, T8-P8 listed twice as CHB-MIT records it. A file already recorded bipolar
  is read as is; a referential file is re-referenced (a - b) where both electrodes exist, and one
  recorded against a common reference R (CHB-MIT's chb12_27: FP1-CS2, F7-CS2, ...) as
  (a - R) - (b - R).
- `bipolar18`: the first 18 of them, without the FT9/FT10 chain, which about 30 CHB-MIT files
  lack (among them chb12_27 to chb12_29, 13 seizures): every CHB-MIT recording has these 18.
"""

from __future__ import annotations

from typing import Literal

REF19: tuple[str, ...] = (
    "Fp1", "F3", "C3", "P3", "F7", "T3", "T5", "O1",
    "Fz", "Cz", "Pz",
    "Fp2", "F4", "C4", "P4", "F8", "T4", "T6", "O2",
)

# CHB-MIT's 23 derivations, in file order (chb01..chb24 summaries). Electrode names use the
# modern T7/P7/T8/P8 spelling as CHB-MIT does; REF19's T3/T5/T4/T6 are the same electrodes.
BIPOLAR23: tuple[str, ...] = (
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1",
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
    "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
    "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
    "FZ-CZ", "CZ-PZ",
    "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8", "T8-P8",
)

BIPOLAR18: tuple[str, ...] = BIPOLAR23[:18]

# Alternate -> canonical electrode names (original_spec.md §1.1).
SYNONYMS: dict[str, str] = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}

# Midline electrodes that may be interpolated when absent (3.4 % of TUSZ files lack both).
INTERPOLATABLE: tuple[str, ...] = ("Fz", "Pz")

MONTAGES: dict[str, tuple[str, ...]] = {"ref19": REF19, "bipolar": BIPOLAR23, "bipolar18": BIPOLAR18}
Montage = Literal["ref19", "bipolar", "bipolar18"]


def montage_channels(montage: str) -> tuple[str, ...]:
    """The ordered signal names of a montage; raises with the known names otherwise."""
    try:
        return MONTAGES[montage]
    except KeyError:
        raise ValueError(
            f"unknown montage {montage!r}; known montages: {', '.join(MONTAGES)}"
        ) from None


def n_edges(n_nodes: int) -> int:
    """Undirected pairs i < j: 171 for 19 electrodes."""
    return n_nodes * (n_nodes - 1) // 2


# This project's own neighbour graph on the standard 10-20 grid (the original's 24-edge list is
# not available): rows Fp1 Fp2 / F7 F3 Fz F4 F8 / T3 C3 Cz C4 T4 / T5 P3 Pz P4 T6 / O1 O2; each
# electrode is joined to its left/right neighbour in its row and to the electrode(s) straight
# in front of / behind it. Contains every double-banana and transverse chain: 32 edges.
# fmt: off
REF19_NEIGHBOURS: tuple[tuple[str, str], ...] = (
    # transverse (left to right)
    ("Fp1", "Fp2"),
    ("F7", "F3"), ("F3", "Fz"), ("Fz", "F4"), ("F4", "F8"),
    ("T3", "C3"), ("C3", "Cz"), ("Cz", "C4"), ("C4", "T4"),
    ("T5", "P3"), ("P3", "Pz"), ("Pz", "P4"), ("P4", "T6"),
    ("O1", "O2"),
    # longitudinal (front to back)
    ("Fp1", "F7"), ("Fp1", "F3"), ("Fp2", "F4"), ("Fp2", "F8"),
    ("F7", "T3"), ("F3", "C3"), ("Fz", "Cz"), ("F4", "C4"), ("F8", "T4"),
    ("T3", "T5"), ("C3", "P3"), ("Cz", "Pz"), ("C4", "P4"), ("T4", "T6"),
    ("T5", "O1"), ("P3", "O1"), ("P4", "O2"), ("T6", "O2"),
)
# fmt: on


def ref19_neighbours() -> dict[str, tuple[str, ...]]:
    """electrode -> its neighbours in REF19_NEIGHBOURS, for every REF19 electrode."""
    out: dict[str, list[str]] = {name: [] for name in REF19}
    for a, b in REF19_NEIGHBOURS:
        out[a].append(b)
        out[b].append(a)
    return {name: tuple(found) for name, found in out.items()}
