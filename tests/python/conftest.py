"""Tests of the Python package. numpy and pytest are required (scripts/install-deps installs
them): a missing one fails the run instead of skipping it.

The package under test is the tree's python/ (put first on sys.path here) with the library from
SPARSEFLOW_LIBRARY_DIR; set SPARSEFLOW_TEST_INSTALLED=1 to test an installed package instead.
"""

import os
import sys
from pathlib import Path

try:
    import numpy  # noqa: F401
except ImportError as e:  # pragma: no cover - the point is to fail loudly
    raise ImportError("the Python tests need numpy: run scripts/install-deps "
                      "(or python3 -m pip install numpy)") from e

REPO = Path(__file__).resolve().parents[2]
if not os.environ.get("SPARSEFLOW_TEST_INSTALLED"):
    sys.path.insert(0, str(REPO / "python"))
