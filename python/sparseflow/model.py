"""sparseflow.Model: a model run by SparseFlow's engine, over the C ABI's session (sf_session_*).

    import sparseflow
    with sparseflow.Model() as m:                     # the built-in tiny model (random weights)
        print(m.generate("Hello", max_new_tokens=16))
        for piece in m.stream("Hello", max_new_tokens=16):
            print(piece, end="", flush=True)

The same session object serves `sparseflow generate` and `sparseflow perplexity`, so greedy text
here equals the command's for the same model and prompt. Text prompts are tokenized as the
model's Hugging Face tokenizer does with add_special_tokens=True (BOS first where that tokenizer
adds one, as OPT's and Llama's do); a list of ids is used as given.
"""

import ctypes
import json
import os
import queue
import threading
import warnings
from pathlib import Path

from . import _lib
from ._errors import SparseFlowError, Status
from .config import OffloadStrategy, SparseFlowConfig

__all__ = ["Model", "SparseFlowModel", "builtin_model_path"]

_warned_no_gpu = False


def _session_lib():
    lib = _lib.lib()
    if not _lib.has_session_api():
        raise SparseFlowError(Status.NOT_FOUND, f"the loaded library ({lib._sf_path}) predates the "
                              "session API (no sf_session_open); rebuild it from this source tree")
    return lib


def _last_error(lib):
    return lib.sf_last_error().decode("utf-8", "replace")


def _cuda_engine_unavailable():
    """"" when the CUDA engine can run here, else why not (sf_backend_check("cuda"))."""
    lib = _session_lib()
    if lib.sf_backend_check(b"cuda") == 0:
        return ""
    why, prefix = _last_error(lib), "sf_backend_check: "
    return why[len(prefix):] if why.startswith(prefix) else why


def _cache_dir():
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sparseflow"


def builtin_model_path(cache_dir=None, force=False):
    """The built-in default model (the tiny random-weight OPT of `sparseflow synth --arch tiny`),
    written once into cache_dir (default $XDG_CACHE_HOME/sparseflow or ~/.cache/sparseflow) and
    reused; force=True writes it again. The file name carries the library version, so a library
    whose generator changed writes its own."""
    lib = _session_lib()
    folder = Path(cache_dir) if cache_dir is not None else _cache_dir()
    version = lib.sf_version_string().decode()
    path = folder / f"builtin-tiny-opt-{version}.sf"
    if force or not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        status = lib.sf_synth_builtin(os.fsencode(path), 1 if force else 0)
        # Another process may have written it between the check and the call: that one will do.
        if status != 0 and not (not force and path.exists()):
            _lib.check(status)
    return str(path)


def _sampling(max_new_tokens, temperature, top_k, top_p, seed, greedy):
    sampled = temperature is not None or top_k is not None or top_p is not None
    if greedy is None:
        greedy = not sampled
    if greedy and sampled:
        raise ValueError("greedy=True cannot be combined with temperature/top_k/top_p; pick one mode")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    p = _lib.GenerateParams()
    _lib.check(_session_lib().sf_generate_params_init(ctypes.byref(p)))
    p.max_new_tokens = max_new_tokens
    p.greedy = 1 if greedy else 0
    p.temperature = 1.0 if temperature is None else float(temperature)
    p.top_k = 0 if top_k is None else int(top_k)
    p.top_p = 1.0 if top_p is None else float(top_p)
    p.seed = int(seed)
    return p


class Model:
    """A model opened on a device: path is a .sf file, a GGUF file or a Hugging Face checkpoint
    directory of an OPT, Llama, Mistral, Qwen2 or GPT-2 model (None: the built-in tiny model).
    device: "auto" (a GPU when usable), "cpu" or "cuda".

    config (a SparseFlowConfig) is checked against the checkpoint (architecture, layers, hidden
    size, heads, KV heads, ...) and its strategy used unless strategy is given. With a strategy the
    model runs offloaded when a GPU is usable (ReLU models neuron by neuron, gated models by
    streaming whole layers from host memory); on a machine without one it runs on the CPU, not
    offloaded, and says so once.

    A Model is used by one thread at a time (calls from several threads wait for each other); a
    token callback must not call back into its model."""

    def __init__(self, path=None, config=None, device="auto", strategy=None, threads=0,
                 context_tokens=0):
        global _warned_no_gpu
        lib = _session_lib()
        self._h = None
        if config is not None and not isinstance(config, SparseFlowConfig):
            raise ValueError(f"config must be a SparseFlowConfig, got {type(config).__name__}")
        if strategy is None and config is not None:
            strategy = config.strategy
        if strategy is not None and not isinstance(strategy, OffloadStrategy):
            raise ValueError(f"strategy must be an OffloadStrategy, got {type(strategy).__name__}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.path = builtin_model_path() if path is None else os.fspath(path)
        self.config = config
        self.strategy = None  # the strategy in force: None when not offloaded
        if strategy is not None and device != "cuda":
            why = "device='cpu' was asked for" if device == "cpu" else _cuda_engine_unavailable()
            if why:
                if not _warned_no_gpu:
                    _warned_no_gpu = True
                    warnings.warn(f"sparseflow: offloading needs a CUDA GPU ({why}); running on "
                                  "the CPU without offloading", RuntimeWarning, stacklevel=2)
                strategy = None

        o = _lib.SessionOptions()
        _lib.check(lib.sf_session_options_init(ctypes.byref(o)))
        o.device = device.encode()
        o.threads = int(threads)
        o.context_tokens = int(context_tokens)
        if strategy is not None:  # each field's engine knob: sparseflow/config.py
            o.gpu_memory = strategy.gpu_memory.encode()
            o.gpu_cache_ratio = strategy.effective_cache_ratio
            o.offload_policy = strategy.policy.encode()
            o.predictor = strategy.predictor.encode()
            o.collect_stats = 1 if strategy.collect_stats else 0
            self.strategy = strategy
        h = ctypes.c_void_p()
        _lib.check(lib.sf_session_open(os.fsencode(self.path), ctypes.byref(o), ctypes.byref(h)))
        self._h = h
        self._lock = threading.Lock()
        self._owner = None
        self.last_result = None  # the full result of the last generate / stream
        if config is not None:
            try:
                config.check_matches(self.info)
            except Exception:
                self.close()
                raise

    # ---- plumbing ------------------------------------------------------------------------------

    def _call(self, fn):
        """fn() under the model's lock, refusing a call from inside one of its own callbacks."""
        if self._h is None:
            raise ValueError("this sparseflow.Model is closed")
        if self._owner == threading.get_ident():
            raise RuntimeError("a token callback called back into its own sparseflow.Model; "
                               "collect what it needs and call after generate() returns")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                return fn(_session_lib())
            finally:
                self._owner = None

    def _json(self, call):
        out = ctypes.c_char_p()
        _lib.check(call(ctypes.byref(out)))
        return json.loads(out.value.decode("utf-8"))

    # ---- the API -------------------------------------------------------------------------------

    @property
    def info(self):
        """Architecture, layers, hidden size, vocabulary, 2:4 or dense weights, device, whether
        offloaded, memory (sf_session_info_json), read now."""
        return self._call(lambda lib: self._json(lambda j: lib.sf_session_info_json(self._h, j)))

    @property
    def offloaded(self):
        return self.strategy is not None

    def generate_result(self, prompt, max_new_tokens=32, temperature=None, top_k=None, top_p=None,
                        seed=0, greedy=None, on_token=None):
        """Generate after prompt (str, or a list of token ids used as given); return the result
        dict: text, ids, prompt_ids, prefill_ms, decode_tokens_per_s, stopped_by ("eos",
        "max_tokens" or "callback"), ... Without sampling options decoding is greedy.
        on_token(token_id, text) is called per new token with the text it completes ("" while a
        character is incomplete); returning False stops the generation after that token. An
        exception it raises stops the generation and is re-raised here."""
        params = _sampling(max_new_tokens, temperature, top_k, top_p, seed, greedy)
        failure = []

        def bridge(_user, token, text):
            try:
                return 1 if on_token(token, text.decode("utf-8")) is False else 0
            except BaseException as e:  # must not unwind through C; re-raised below
                failure.append(e)
                return 1

        cb = _lib.TOKEN_CALLBACK(bridge) if on_token is not None else _lib.TOKEN_CALLBACK()

        def run(lib):
            if isinstance(prompt, str):
                return self._json(lambda j: lib.sf_session_generate(
                    self._h, prompt.encode("utf-8"), ctypes.byref(params), cb, None, j))
            ids = list(prompt)
            arr = (ctypes.c_int32 * len(ids))(*ids)
            return self._json(lambda j: lib.sf_session_generate_ids(
                self._h, arr, len(ids), ctypes.byref(params), cb, None, j))

        try:
            result = self._call(run)
        finally:
            if failure:
                raise failure[0]
        self.last_result = result
        return result

    def generate(self, prompt, max_new_tokens=32, temperature=None, top_k=None, top_p=None, seed=0,
                 greedy=None, on_token=None):
        """The generated text (without the prompt); see generate_result for the arguments."""
        return self.generate_result(prompt, max_new_tokens, temperature, top_k, top_p, seed,
                                    greedy, on_token)["text"]

    def stream(self, prompt, max_new_tokens=32, temperature=None, top_k=None, top_p=None, seed=0,
               greedy=None):
        """An iterator of text pieces as the tokens are chosen; "".join(pieces) equals what
        generate() returns for the same arguments. Leaving the loop early stops the generation.
        The result dict is in last_result once the iterator is exhausted."""
        pieces = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_token(_token, text):
            if text:
                pieces.put(text)
            return not stop.is_set()

        def worker():
            try:
                pieces.put((done, self.generate_result(prompt, max_new_tokens, temperature, top_k,
                                                       top_p, seed, greedy, on_token)))
            except BaseException as e:
                pieces.put((done, e))

        # The generation runs on a thread of its own (ctypes releases the GIL during the C call),
        # so each piece is yielded here while the engine computes the next.
        t = threading.Thread(target=worker, name="sparseflow-stream", daemon=True)
        t.start()
        sent = 0
        try:
            while True:
                item = pieces.get()
                if isinstance(item, tuple) and item[0] is done:
                    if isinstance(item[1], BaseException):
                        raise item[1]
                    tail = item[1]["text"][sent:]  # U+FFFD for a character cut at the end
                    if tail:
                        yield tail
                    return
                sent += len(item)
                yield item
        finally:
            stop.set()
            t.join()

    def perplexity(self, text, context=0):
        """exp(mean NLL) of text (the ids tokenize(text) gives) or of a list of ids, over
        non-overlapping windows of `context` tokens (0: max_position_embeddings)."""
        out = ctypes.c_double()

        def run(lib):
            if isinstance(text, str):
                _lib.check(lib.sf_session_perplexity(self._h, text.encode("utf-8"), int(context),
                                                     ctypes.byref(out)))
            else:
                ids = list(text)
                arr = (ctypes.c_int32 * len(ids))(*ids)
                _lib.check(lib.sf_session_perplexity_ids(self._h, arr, len(ids), int(context),
                                                         ctypes.byref(out)))
        self._call(run)
        return out.value

    def tokenize(self, text, add_bos=True):
        """The ids of text: with add_bos, the special tokens the model's tokenizer adds (BOS
        first for OPT and Llama; HF's add_special_tokens=True); without, the text's ids alone."""
        def run(lib):
            n = ctypes.c_size_t()
            raw = text.encode("utf-8")
            _lib.check(lib.sf_session_tokenize(self._h, raw, int(add_bos), None, 0, ctypes.byref(n)))
            arr = (ctypes.c_int32 * max(n.value, 1))()
            _lib.check(lib.sf_session_tokenize(self._h, raw, int(add_bos), arr, n.value,
                                               ctypes.byref(n)))
            return list(arr[:n.value])
        return self._call(run)

    def detokenize(self, ids):
        """The text of a list of ids (invalid UTF-8 becomes U+FFFD)."""
        def run(lib):
            ids_ = list(ids)
            arr = (ctypes.c_int32 * max(len(ids_), 1))(*ids_)
            out = ctypes.c_char_p()
            _lib.check(lib.sf_session_detokenize(self._h, arr, len(ids_), ctypes.byref(out)))
            return out.value.decode("utf-8")
        return self._call(run)

    def offload_stats(self):
        """The offloaded engine's counters for the last generation that ran to its end (tokens,
        hit_rate, bytes_per_token, ...), or None when the model is not offloaded neuron by neuron
        (not offloaded at all, or a gated model streaming whole layers, which has no counters)."""
        def run(lib):
            out = ctypes.c_char_p()
            status = lib.sf_session_offload_stats_json(self._h, ctypes.byref(out))
            if status == Status.NOT_FOUND:
                return None
            _lib.check(status)
            return json.loads(out.value.decode("utf-8"))
        return self._call(run)

    def close(self):
        """Release the engine and its memory; the model cannot be used afterwards."""
        if getattr(self, "_h", None) is not None:
            _lib.lib().sf_session_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __repr__(self):
        if self._h is None:
            return f"sparseflow.Model({self.path!r}, closed)"
        i = self.info
        where = f"{i['device']}, offloaded" if i["offloaded"] else i["device"]
        return (f"sparseflow.Model({self.path!r}: {i['architecture']}, {i['layers']} layers, hidden "
                f"{i['hidden']}, vocab {i['vocab']}, {i['weights']} weights, on {where})")


SparseFlowModel = Model
