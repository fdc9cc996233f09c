"""The CLI never loses or half-writes what a user has: outputs that are (or lie inside) inputs are
refused, existing outputs are kept without --force, and a command killed at any moment (SIGINT,
SIGTERM, SIGHUP or SIGKILL) leaves either the old output or a complete new one and nothing else.

Runs the built `sparseflow` binary named by SPARSEFLOW_CLI."""

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

CLI = os.environ.get("SPARSEFLOW_CLI")
pytestmark = pytest.mark.skipif(not CLI, reason="SPARSEFLOW_CLI is not set (run through ctest)")


def run(*args, check=True):
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"sparseflow {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree(path):
    """{relative path: sha256} of every file under path."""
    return {str(p.relative_to(path)): digest(p) for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny") / "ckpt"
    run("synth", "--arch", "tiny", "--format", "hf", "-o", d, "--seed", "0")
    return d


@pytest.fixture(scope="module")
def opt125m(tmp_path_factory):
    # Big enough (240 MiB) that a conversion takes about a second: kills land inside it.
    d = tmp_path_factory.mktemp("opt125m") / "ckpt"
    run("synth", "--arch", "opt-125m", "--format", "hf", "-o", d, "--seed", "0")
    return d


def test_convert_refuses_to_write_into_its_input(tiny, tmp_path):
    before = tree(tiny)
    for out in [tiny / "model.safetensors", tiny / "new.sf", tiny / ".." / tiny.name / "x.sf"]:
        r = run("convert", "-i", tiny, "-o", out, "--force", check=False)
        assert r.returncode != 0, out
        assert "never writes into an input" in r.stderr, r.stderr
    link = tmp_path / "link"
    link.symlink_to(tiny)
    r = run("convert", "-i", link, "-o", tiny / "y.sf", check=False)
    assert r.returncode != 0 and "inside --input" in r.stderr, r.stderr
    assert tree(tiny) == before


def test_prune_refuses_its_input_as_output(tiny):
    before = tree(tiny)
    st = tiny / "model.safetensors"
    r = run("prune", "-i", st, "-o", st, "--force", check=False)
    assert r.returncode != 0 and "same path as --input" in r.stderr, r.stderr
    assert tree(tiny) == before


def test_existing_outputs_need_force(tiny, tmp_path):
    out = tmp_path / "m.sf"
    run("convert", "-i", tiny, "-o", out)
    old = digest(out)
    r = run("convert", "-i", tiny, "-o", out, "--sparsity", "2:4", check=False)
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    assert digest(out) == old
    run("convert", "-i", tiny, "-o", out, "--sparsity", "2:4", "--force")
    assert digest(out) != old

    ck = tmp_path / "ck"
    run("synth", "--arch", "tiny", "--format", "hf", "-o", ck, "--seed", "1")
    kept = tree(ck)
    r = run("synth", "--arch", "tiny", "--format", "hf", "-o", ck, "--seed", "2", check=False)
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    assert tree(ck) == kept
    sf = tmp_path / "s.sf"
    run("synth", "--arch", "tiny", "--format", "sf", "-o", sf)
    old = digest(sf)
    r = run("synth", "--arch", "tiny", "--format", "sf", "-o", sf, "--seed", "3", check=False)
    assert r.returncode != 0 and digest(sf) == old
    run("synth", "--arch", "tiny", "--format", "hf", "-o", ck, "--seed", "2", "--force")
    assert tree(ck) != kept and set(tree(ck)) == set(kept)
    assert sorted(os.listdir(tmp_path)) == ["ck", "m.sf", "s.sf"]


def kill_at(args, delay, sig):
    p = subprocess.Popen([CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if p.poll() is None:
        p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    return p.returncode, err


SIGNALS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def test_convert_killed_at_random_points_leaves_old_or_complete_new(opt125m, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.sf"
    run("convert", "-i", opt125m, "-o", out)  # the old output: dense
    old = digest(out)
    t0 = time.monotonic()
    run("convert", "-i", opt125m, "-o", tmp_path / "new.sf", "--sparsity", "2:4")  # the new one: 2:4
    new = digest(tmp_path / "new.sf")
    duration = time.monotonic() - t0
    assert new != old
    rng = random.Random(12345)
    outcomes = {"old": 0, "new": 0}
    for i in range(16):
        sig = SIGNALS[i % len(SIGNALS)]
        delay = rng.uniform(0.0, duration * 1.1)
        rc, err = kill_at(["convert", "-i", opt125m, "-o", out, "--sparsity", "2:4", "--force"], delay, sig)
        assert sorted(os.listdir(out_dir)) == ["m.sf"], f"{sig.name} at {delay:.2f}s left {os.listdir(out_dir)}"
        d = digest(out)
        assert d in (old, new), f"{sig.name} at {delay:.2f}s: m.sf is neither the old nor a complete new file"
        if d == new:
            outcomes["new"] += 1
            assert run("inspect", out, check=False).returncode == 0
            run("convert", "-i", opt125m, "-o", out, "--force")  # back to the old one for the next kill
            assert digest(out) == old
        else:
            outcomes["old"] += 1
            # Killed before it finished: it died of the signal, not of an error of its own.
            assert rc in (-sig, 128 + sig) or rc == 0, (sig.name, rc, err)
    assert tree(opt125m), "the input is intact"
    # Most kills land while it runs (the old file kept); a few after it finished.
    assert outcomes["old"] >= 4, outcomes


def test_synth_directory_interrupted_leaves_nothing(tmp_path):
    target = tmp_path / "ck"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        rc, _ = kill_at(["synth", "--arch", "opt-125m", "--format", "hf", "-o", target], 0.8, sig)
        if rc == 0:  # finished before the signal: nothing to check this round
            run("synth", "--arch", "tiny", "--format", "hf", "-o", target, "--force")
            continue
        assert rc == -sig, (sig.name, rc)
        left = os.listdir(tmp_path)
        if sig == signal.SIGKILL:
            # A directory cannot be unnamed like a file: SIGKILL leaves its temporary (hidden,
            # never the target), and the next write to the same target removes it.
            assert "ck" not in left and all(n.startswith(".ck.tmp.") for n in left), left
            run("synth", "--arch", "tiny", "--format", "hf", "-o", target)
            assert os.listdir(tmp_path) == ["ck"]
        else:
            assert left == [], f"{sig.name} left {left}"


def run_on_terminal(args):
    """Runs the CLI with a pseudo-terminal as stdin/stdout/stderr; returns (rc, everything it wrote)."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([CLI, *map(str, args)], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=120), out.decode(errors="replace")


def test_progress_bar_on_a_terminal_only(opt125m, tmp_path):
    rc, out = run_on_terminal(["convert", "-i", opt125m, "-o", tmp_path / "a.sf"])
    assert rc == 0, out
    assert "convert [" in out and "100%" in out and "MiB/s" in out, out[-500:]
    assert "in " in out.split("\n")[0] or "in " in out  # the final line says how long it took
    rc, out = run_on_terminal(["convert", "-i", opt125m, "-o", tmp_path / "b.sf", "--quiet"])
    assert rc == 0 and "convert [" not in out, out[-500:]
    r = run("convert", "-i", opt125m, "-o", tmp_path / "c.sf")  # a pipe, not a terminal
    assert "convert [" not in r.stderr, r.stderr[-500:]
    rc, out = run_on_terminal(["synth", "--arch", "opt-125m", "--format", "sf", "-o", tmp_path / "s.sf"])
    assert rc == 0 and "synth [" in out and "left" in out, out[-500:]
