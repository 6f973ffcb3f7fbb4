"""common.checkpoints: where a run's weights are, for every tool that reads them."""

from __future__ import annotations

from common.checkpoints import last_steps, locate


def test_the_newest_torchref_step_is_the_largest_number_not_the_last_name(tmp_path):
    """torchref.train pads steps to six digits, so step 1,000,000 sorts before 999,999 by name;
    --resume, evaluate and predict must all take the newest by number. A leftover .tmp is none."""
    for kind in ("last", "best"):
        folder = tmp_path / "checkpoints" / kind
        folder.mkdir(parents=True)
        for name in ("step_999999.pt", "step_1000000.pt", "step_1000001.pt.tmp"):
            (folder / name).write_bytes(b"")
    assert [p.name for p in last_steps(tmp_path)] == ["step_999999.pt", "step_1000000.pt"]
    located = locate(tmp_path)
    assert (located.kind, located.path) == ("torchref", tmp_path / "checkpoints" / "best" / "step_1000000.pt")
