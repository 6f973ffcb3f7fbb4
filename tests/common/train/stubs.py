"""Stand-ins for a twin's trainer class, for the training command's tests (common/train/cli.py)."""

import pytest


class Unbuilt:
    """A trainer class whose placement passes (what the command checks before the data) and which
    must not be built."""

    @classmethod
    def check_placement(cls, config):
        pass

    def __init__(self, *args, **kwargs):
        pytest.fail("the trainer was built")
