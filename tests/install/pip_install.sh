#!/usr/bin/env bash
# What a new user does after `git clone` (the seed README): `pip install -e .` at the repository
# root into a fresh virtual environment, then, from another directory and with no SparseFlow
# variable set, `import sparseflow` and the seed's commands. Then `pip install .` (a wheel) into a
# second environment, which must carry its own copy of the native files.
#
# Usage: pip_install.sh PYTHON SOURCE_DIR WORK_DIR VERSION BUILD_TYPE
# The pip build goes to WORK_DIR/build (SPARSEFLOW_PIP_BUILD_DIR), kept between runs, so a rerun is
# incremental; a first run compiles what ccache does not already hold from this build's objects.
set -euo pipefail
py=$1 root=$2 work=$3 version=$4 build_type=$5

fail() { echo "FAIL: $*" >&2; exit 1; }
# Run "$@", saving stdout+stderr to $out; fail with the output unless it exits 0.
run() {
  local status=0
  out=$("$@" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "$out" | tail -40 >&2
    fail "exit status $status from: $*"
  fi
}
expect() {  # expect TEXT WHAT: $out contains TEXT
  [[ "$out" == *"$1"* ]] || { printf '%s\n' "$out" | tail -20 >&2; fail "$2: expected '$1' in the output"; }
}
seconds() { echo $(($(date +%s) - $1)); }

unset SPARSEFLOW_LIBRARY_DIR SPARSEFLOW_DATA_DIR PYTHONPATH PYTHONHOME VIRTUAL_ENV
export SPARSEFLOW_PROGRESS=0  # no progress lines on the terminal of whoever runs ctest
export SPARSEFLOW_PIP_BUILD_DIR=$work/build
# The CPU build: it tests the packaging, and its objects are the ones ccache holds from build-cpu/.
export SPARSEFLOW_CMAKE_ARGS="-DSPARSEFLOW_CUDA=OFF -DCMAKE_BUILD_TYPE=$build_type"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1  # the editable install runs python/sparseflow from the source tree

# Paths in the source tree that pip or setuptools would write by default, git-ignored or not.
watched=("$root/build-python" "$root/build" "$root/python/sparseflow.egg-info" "$root/sparseflow.egg-info"
         "$root/python/sparseflow/_native" "$root/python/build")
exists_list() { for p in "${watched[@]}"; do [ -e "$p" ] && echo "$p"; done; true; }
untracked() { git -C "$root" ls-files --others --exclude-standard 2>/dev/null | sort; }
existed_before=$(exists_list)
untracked_before=$(untracked)

mkdir -p "$work"
elsewhere=$work/elsewhere
mkdir -p "$elsewhere"

# A fresh environment as the seed's reader has, with the system's numpy visible.
make_venv() {
  rm -rf "$1"
  "$py" -m venv --system-site-packages "$1" || fail "python3 -m venv failed (Debian: apt install python3-venv)"
}

# Without build isolation pip uses the environment's setuptools and needs no network: that takes
# setuptools >= 70.1, or >= 64 with the wheel package. Otherwise pip fetches setuptools (PyPI).
pip_mode() {
  if "$1/bin/python" - <<'EOF' 2>/dev/null; then
import importlib.util, setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
raise SystemExit(0 if v >= (70, 1) or (v >= (64, 0) and importlib.util.find_spec("wheel")) else 1)
EOF
    echo --no-build-isolation
  fi
}

# ---- 1. pip install -e . -------------------------------------------------------------------------
venv=$work/venv
make_venv "$venv"
mode=$(pip_mode "$venv")
echo "pip install -e . ${mode:-(build isolation: pip fetches setuptools)}"
cd "$root"
# A CMake failure must fail the install (setuptools turns exceptions in a customised build_py of an
# editable install into warnings; the native build is a step of its own for that reason).
if SPARSEFLOW_PIP_BUILD_DIR=$work/build-broken SPARSEFLOW_CMAKE_ARGS="-DCMAKE_CXX_COMPILER=/nonexistent/c++" \
     "$venv/bin/pip" install $mode -e . >"$work/pip-broken.log" 2>&1; then
  fail "pip install -e . succeeded although CMake could not configure (log: $work/pip-broken.log)"
fi
grep -q "cmake -S .* failed" "$work/pip-broken.log" || fail "pip's log does not say that CMake failed"
rm -rf "$work/build-broken"
echo "pip install -e . fails when CMake fails"
t0=$(date +%s)
"$venv/bin/pip" install $mode -e . >"$work/pip-editable.log" 2>&1 ||
  { tail -40 "$work/pip-editable.log" >&2; fail "pip install -e . failed; log: $work/pip-editable.log"; }
echo "pip install -e .: $(seconds "$t0") s (log: $work/pip-editable.log, CMake: $work/build/pip-build.log)"

cd "$elsewhere"
run "$venv/bin/python" -c "
import numpy as np, sparseflow
print(sparseflow.native_version()); print(sparseflow.library_path()); print(sparseflow.__file__)
w = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
assert sparseflow.is_24(sparseflow.prune(w)) and not sparseflow.is_24(w)
print('prune ok')"
lines=($out)
[ "${lines[0]}" = "$version" ] || fail "native_version() is '${lines[0]}', expected $version"
[[ "${lines[1]}" == "$work/build/python-prefix/lib/"* ]] ||
  fail "the editable install loaded ${lines[1]}, not the library its pip build made under $work/build"
[[ "${lines[2]}" == "$root/python/sparseflow/"* ]] || fail "editable: sparseflow imported from ${lines[2]}"
expect "prune ok" "prune through the library"
echo "editable: import sparseflow from $elsewhere loads ${lines[1]}"

run "$venv/bin/sparseflow-benchmark" --size 64x64 --iterations 2 --device cpu --batch 1
expect "2 timed iterations" "sparseflow-benchmark --iterations 2"
run "$venv/bin/sparseflow-audit" --help
expect "Usage: sparseflow audit" "sparseflow-audit --help"
run "$venv/bin/sparseflow-convert" --help
expect "Usage: sparseflow convert" "sparseflow-convert --help"
run "$venv/bin/sparseflow" --version
expect "sparseflow $version" "sparseflow --version"
# The exit status is the binary's own (exec, not a child): a bad --size fails the same way.
set +e
"$venv/bin/sparseflow-benchmark" --size 64x63 --device cpu >/dev/null 2>&1; wrapped=$?
"$work/build/python-prefix/bin/sparseflow" benchmark --size 64x63 --device cpu >/dev/null 2>&1; native=$?
set -e
[ "$wrapped" -ne 0 ] && [ "$wrapped" -eq "$native" ] ||
  fail "sparseflow-benchmark --size 64x63 exited $wrapped, the native command $native (both must fail alike)"
echo "editable: sparseflow, sparseflow-benchmark, -audit, -convert run from $venv/bin (exit status passed: $wrapped)"

# ---- 2. pip install . (a wheel: the native files are copied into the package) ------------------
wvenv=$work/venv-wheel
make_venv "$wvenv"
t0=$(date +%s)
cd "$root"
"$wvenv/bin/pip" install $mode . >"$work/pip-wheel.log" 2>&1 ||
  { tail -40 "$work/pip-wheel.log" >&2; fail "pip install . failed; log: $work/pip-wheel.log"; }
echo "pip install . (reusing the build): $(seconds "$t0") s"
cd "$elsewhere"
site=$("$wvenv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
run "$wvenv/bin/python" -c "import sparseflow; print(sparseflow.library_path())"
[[ "$out" == "$site/sparseflow/_native/lib/"* ]] || fail "the wheel install loaded $out, not its bundled copy"
run "$wvenv/bin/sparseflow-benchmark" --size 64x64 --iterations 2 --device cpu --batch 1
expect "2 timed iterations" "wheel: sparseflow-benchmark"
# The shipped measurements travel with the wheel (bin/../share/sparseflow/measured).
run "$wvenv/bin/sparseflow-audit" --model opt-6.7b --qps 100
expect "$site/sparseflow/_native/share/sparseflow/measured" "wheel: sparseflow-audit reads the bundled table"
echo "wheel: library, commands and the audit's table come from $site/sparseflow/_native"

# ---- 3. nothing written into the source tree ---------------------------------------------------
[ "$(exists_list)" = "$existed_before" ] ||
  fail "the installs created in the source tree: $(comm -13 <(echo "$existed_before") <(exists_list) | tr '\n' ' ')"
# New untracked files where pip and setuptools write (the root, python/): none may appear.
new=$(comm -13 <(echo "$untracked_before") <(untracked) | grep -E '^(python/|[^/]+$)' || true)
[ -z "$new" ] || fail "the installs left files in the source tree: $(echo $new)"
echo "PASS"
