"""Where this package's native files are: libsparseflow.so and the `sparseflow` command.

Both installs made by the repository's setup.py hold them in the layout of `cmake --install`
(lib/libsparseflow.so.0, bin/sparseflow, share/sparseflow/measured/):

- a wheel (`pip install .`) bundles them in the package, as sparseflow/_native/;
- an editable install (`pip install -e .`) runs the package from the source tree's python/ and
  leaves them in the CMake build directory's python-prefix/; setup.py records that folder in the
  package's metadata (sparseflow-native.json in its .dist-info in site-packages).

Nothing here loads anything; _lib.py and _cli.py do.
"""

import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Written by setup.py (NATIVE_RECORD there): {"package_dir": ..., "prefix": ...}.
RECORD = "sparseflow-native.json"


def _recorded_prefix():
    try:
        from importlib import metadata
        text = metadata.distribution("sparseflow").read_text(RECORD)
    except Exception:  # not installed, or installed without a record: nothing recorded
        return None
    try:
        record = json.loads(text or "")
    except ValueError:
        return None
    # The installed metadata describes this copy of the package only when it names this folder:
    # a checkout on PYTHONPATH next to a wheel install must not take the wheel's record, or the
    # other way round.
    if not isinstance(record, dict) or Path(record.get("package_dir", "")) != PACKAGE_DIR:
        return None
    prefix = record.get("prefix")
    return Path(prefix) if prefix else None


def prefixes():
    """[(folder, description)] of the install prefixes to look in, in order."""
    found = []
    bundled = PACKAGE_DIR / "_native"
    if bundled.is_dir():
        found.append((bundled, f"the files bundled in the package ({bundled})"))
    recorded = _recorded_prefix()
    if recorded is not None:
        found.append((recorded, f"the build that `pip install -e .` recorded ({recorded})"))
    return found


def library_dirs():
    """[(folder, description)]: the lib/ folders of prefixes() that exist."""
    return [(prefix / sub, what) for prefix, what in prefixes() for sub in ("lib", "lib64")
            if (prefix / sub).is_dir()]


def executable():
    """(path of the native `sparseflow` command or None, [descriptions of where it looked])."""
    tried = []
    for prefix, what in prefixes():
        tried.append(what)
        exe = prefix / "bin" / "sparseflow"
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe), tried
    return None, tried
