"""common/train/loop.py _non_finite: a stopped step names what was not finite, not a finite loss."""

from __future__ import annotations

import math

from common.train.loop import _non_finite


def test_the_message_names_only_what_is_not_finite():
    # the eigh gradient's NaN: a finite loss, a NaN gradient norm (it said "non-finite loss 0.0883 / grad norm nan")
    assert _non_finite({"loss": 0.08827019482851028, "grad_norm": math.nan}) == "non-finite grad norm nan (loss 0.08827)"
    assert _non_finite({"loss": math.nan, "grad_norm": math.nan}) == "non-finite loss nan and grad norm nan"
    assert _non_finite({"loss": math.inf, "grad_norm": 2.5}) == "non-finite loss inf (grad norm 2.5)"
