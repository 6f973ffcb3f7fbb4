"""`python -m jaxbrr.data ...` runs common/data/__main__.py (synth, build, inspect)."""

import sys

from common.data.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
