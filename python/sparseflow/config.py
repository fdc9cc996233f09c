"""Configuration: a model's shape (SparseFlowConfig) and how its FFN is offloaded (OffloadStrategy).

Plain Python, importable without PyTorch, transformers or the native library:

    from sparseflow import SparseFlowConfig, OffloadStrategy
    strategy = OffloadStrategy(gpu_cache_ratio=0.3, use_lru_eviction=True, async_transfer=True)
    config = SparseFlowConfig.from_transformers_config(hf_config, strategy)

hf_config is an OPT, Llama, Mistral, Qwen2 or GPT-2 config (model_type opt, llama, mistral, qwen2,
gpt2), read with the field names, defaults and checks of the engine's own config.json parser
(src/format/hf_config.cpp).

Every OffloadStrategy field maps to one knob of the offloaded engine (offload::OffloadOptions in
src/offload/offload_options.hpp, sf_session_options in sparseflow.h). The neuron-level knobs
(gpu_cache_ratio, use_lru_eviction, policy, predictor) apply to ReLU models (OPT); a gated model
(Llama, Mistral, Qwen2) under a strategy streams whole layers from host memory under gpu_memory
alone, since activation sparsity for SwiGLU is a later step:

==================  ===========================================================================
gpu_memory          OffloadOptions::gpu_memory: the GPU budget ("6GiB", "6000MiB", a number of
                    bytes, or a fraction of the model's bytes: 0.5 or "50%"). Default "50%".
gpu_cache_ratio     OffloadOptions::gpu_cache_ratio: the fraction of the FFN's share of the budget
                    kept as an LRU cache of neurons; the rest pins the hottest neurons for good.
use_lru_eviction    False sends gpu_cache_ratio 0 to the planner: every slot it can spare pins a
                    hot neuron. The planner still keeps the small per-layer cache that the fetch
                    policy stages predicted neurons in (planner.cpp, min_cache_slots), so some
                    slots are still recycled least-recently-used; there is no cache-less mode.
async_transfer      True is what the engine always does: the prediction, cache lookup and fetch of
                    missing neurons run on a second CUDA stream while attention runs. The engine
                    has no synchronous mode, so False raises ValueError rather than being ignored.
policy              OffloadOptions::policy: "fetch" (copy missing predicted neurons to the GPU),
                    "cpu" (compute cold neurons on the CPU), "auto" (per layer, by measured cost),
                    "stream" (the naive baseline: whole layers copied every token).
predictor           OffloadOptions::predictor: "model" (the calibrated predictors in the .sf file,
                    `sparseflow calibrate`) or "exact" (the true active set; an oracle for tests).
collect_stats       OffloadOptions::stats: also check recall and time each step.
==================  ===========================================================================
"""

import dataclasses
import math
import numbers

_POLICIES = ("fetch", "cpu", "auto", "stream")
_PREDICTORS = ("model", "exact")
# What SparseFlow's engine runs, as src/format/hf_config.cpp parses it: each model_type with the
# `architectures` names its config.json may list.
_FAMILIES = {
    "opt": ("OPTForCausalLM", "OPTModel"),
    "llama": ("LlamaForCausalLM", "LlamaModel"),
    "mistral": ("MistralForCausalLM", "MistralModel"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Model"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
}
_SUPPORTED_MODEL_TYPES = tuple(_FAMILIES)
# HF activation names the engine takes (gelu is the exact erf form; gelu_new and
# gelu_pytorch_tanh the tanh form GPT-2 uses; swish is silu).
_ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish")
_ROPE_SCALINGS = ("default", "linear", "llama3", "yarn")
# The bounds of hf_config.cpp (any integer field) and arch::validate (model_desc.cpp): larger than
# any released decoder; a value past them is a damaged config.
_MAX_INT = 1 << 40
_MAX_DIM = 1 << 20
_MAX_LAYERS = 4096
_NO_DEFAULT = object()  # _Fields.integer: the field must be there


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclasses.dataclass
class OffloadStrategy:
    """How the FFN is offloaded when a model does not fit the GPU (the module docstring gives the
    engine knob behind each field). Validated on construction: ValueError names the bad field."""

    gpu_cache_ratio: float = 0.3
    use_lru_eviction: bool = True
    async_transfer: bool = True
    gpu_memory: object = "50%"
    policy: str = "fetch"
    predictor: str = "model"
    collect_stats: bool = False

    def __post_init__(self):
        r = self.gpu_cache_ratio
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"gpu_cache_ratio must be a number in [0, 1] (the fraction of the FFN's "
                             f"GPU budget used as an LRU neuron cache), got {r!r}")
        self.gpu_cache_ratio = float(r)
        _check_bool("use_lru_eviction", self.use_lru_eviction)
        _check_bool("async_transfer", self.async_transfer)
        _check_bool("collect_stats", self.collect_stats)
        if not self.async_transfer:
            raise ValueError(
                "async_transfer=False is not supported: SparseFlow's offloaded engine always "
                "overlaps neuron transfers with attention (a second CUDA stream) and has no "
                "synchronous mode to switch to. For a baseline without the overlap of predicted "
                "fetches, use policy='stream' (whole layers copied every token).")
        self.gpu_memory = _size_text(self.gpu_memory)
        if self.policy not in _POLICIES:
            raise ValueError(f"policy must be one of {', '.join(_POLICIES)}, got {self.policy!r}")
        if self.predictor not in _PREDICTORS:
            raise ValueError(f"predictor must be 'model' (calibrated) or 'exact' (oracle), "
                             f"got {self.predictor!r}")

    @property
    def effective_cache_ratio(self):
        """The gpu_cache_ratio the engine gets: 0 without LRU eviction."""
        return self.gpu_cache_ratio if self.use_lru_eviction else 0.0


def _size_text(value):
    """gpu_memory as the engine's size text: a fraction in (0, 1], bytes as an int, or a string
    such as "6GiB" or "50%" (checked by the engine when the model opens)."""
    if isinstance(value, bool):
        raise ValueError(f"gpu_memory must be a size, got {value!r}")
    if isinstance(value, numbers.Integral):
        if value <= 0:
            raise ValueError(f"gpu_memory must be positive, got {value!r} bytes")
        return str(int(value))
    if isinstance(value, numbers.Real):
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"gpu_memory as a float is a fraction of the model's bytes in (0, 1], "
                             f"got {value!r}; give bytes as an int or a string like '6GiB'")
        text = ("%.9f" % float(value)).rstrip("0")  # "0.5"; never "1e-05", which the engine rejects
        return text + "0" if text.endswith(".") else text  # "1.0": a fraction; "1" would be bytes
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"gpu_memory must be a size like '6GiB', '6000MiB', '50%' or 0.5, got {value!r}")


class _Fields:
    """Typed reads of one config dict, as hf_config.cpp's Fields: a missing field takes the
    transformers config class's default, a field of the wrong type is a ValueError naming it."""

    def __init__(self, d, where):
        self.d = d
        self.where = where  # "the llama config"

    def fail(self, message):
        raise ValueError(f"{self.where}: {message}")

    def has(self, key):
        return self.d.get(key) is not None

    def integer(self, key, default=_NO_DEFAULT, lo=1, hi=_MAX_INT):
        v = self.d.get(key)
        if v is None:  # absent or null: the class default
            if default is _NO_DEFAULT:
                self.fail(f"required field {key} is missing (is this a complete config.json?)")
            return default
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            kind = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            self.fail(f"{key} must be {kind}, got {v!r}")
        if v > hi:
            self.fail(f"{key} is {v}, more than SparseFlow takes ({hi}); is the config damaged?")
        return int(v)

    def number(self, key, default):
        v = self.d.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            self.fail(f"{key} must be a number, got {v!r}")
        return float(v)

    def boolean(self, key, default):
        v = self.d.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.fail(f"{key} must be true or false, got {v!r}")
        return v

    def string(self, key, default):
        v = self.d.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            self.fail(f"{key} must be a string, got {v!r}")
        return v

    def token(self, key, default, many=False):
        """A token id: absent, the class default; null (None), no such token (-1); for many=True
        also a list of ids (the first is the id; Llama 3 lists several end-of-turn ids)."""
        if key not in self.d:
            return [default] if many else default
        v = self.d[key]
        if v is None:
            return [-1] if many else -1
        if isinstance(v, (list, tuple)):
            if not v or not many:
                self.fail(f"{key} is {v!r}, expected one token id")
            ids = list(v)
        else:
            ids = [v]
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                self.fail(f"{key} holds {i!r}, expected a token id")
        return [int(i) for i in ids] if many else int(ids[0])


def _parse_opt(f, c):
    missing = [k for k in ("num_hidden_layers", "hidden_size", "ffn_dim", "num_attention_heads",
                           "vocab_size", "max_position_embeddings") if not f.has(k)]
    if missing:
        raise ValueError(f"{f.where} lacks {', '.join(missing)}; the engine needs them (is this a "
                         "complete config.json?)")
    c["vocab_size"] = f.integer("vocab_size")
    c["hidden_size"] = f.integer("hidden_size")
    c["num_hidden_layers"] = f.integer("num_hidden_layers")
    c["ffn_dim"] = f.integer("ffn_dim")
    c["num_attention_heads"] = heads = f.integer("num_attention_heads")
    c["num_key_value_heads"] = heads
    c["max_position_embeddings"] = f.integer("max_position_embeddings")
    c["word_embed_proj_dim"] = f.integer("word_embed_proj_dim", c["hidden_size"])
    c["do_layer_norm_before"] = f.boolean("do_layer_norm_before", True)
    # Read by the engine, not kept here: type-checked as it checks them.
    f.boolean("_remove_final_layer_norm", False)
    f.boolean("enable_bias", True)
    f.boolean("layer_norm_elementwise_affine", True)
    c["tie_word_embeddings"] = f.boolean("tie_word_embeddings", True)
    c["activation_function"] = f.string("activation_function", "relu")
    c["norm"], c["norm_eps"], c["mlp"] = "layernorm", 1e-5, "plain"  # nn.LayerNorm's eps
    c["tokens"] = (f.token("pad_token_id", 1), f.token("bos_token_id", 2),
                   *f.token("eos_token_id", 2, many=True))
    if c["hidden_size"] % heads:
        f.fail(f"hidden_size {c['hidden_size']} is not divisible by num_attention_heads {heads}; "
               "OPT needs whole heads")
    c["head_dim"] = c["hidden_size"] // heads


def _parse_gpt2(f, c):
    c["vocab_size"] = f.integer("vocab_size", 50257)
    c["hidden_size"] = hidden = f.integer("n_embd", 768)
    c["num_hidden_layers"] = f.integer("n_layer", 12)
    c["num_attention_heads"] = heads = f.integer("n_head", 12)
    c["num_key_value_heads"] = heads
    c["ffn_dim"] = f.integer("n_inner", 4 * hidden)  # n_inner null: 4 x n_embd
    c["max_position_embeddings"] = f.integer("n_positions", 1024)
    c["word_embed_proj_dim"] = hidden
    c["norm"], c["mlp"] = "layernorm", "plain"
    c["norm_eps"] = f.number("layer_norm_epsilon", 1e-5)
    c["activation_function"] = f.string("activation_function", "gelu_new")
    c["tie_word_embeddings"] = True  # GPT2LMHeadModel always ties lm_head to wte
    c["tokens"] = (f.token("pad_token_id", -1), f.token("bos_token_id", 50256),
                   *f.token("eos_token_id", 50256, many=True))
    if not f.boolean("scale_attn_weights", True):
        f.fail("scale_attn_weights false is not supported")
    if f.boolean("scale_attn_by_inverse_layer_idx", False):
        f.fail("scale_attn_by_inverse_layer_idx is not supported")
    if hidden % heads:
        f.fail(f"n_embd {hidden} is not divisible by n_head {heads}")
    c["head_dim"] = hidden // heads


def _parse_rope(f, c):
    """rope_theta, partial_rotary_factor and the scaling; transformers 5 nests them in
    rope_parameters, 4.x has rope_scaling (before 4.42 naming the kind "type")."""
    params = None
    for key in ("rope_parameters", "rope_scaling"):
        v = f.d.get(key)
        if v is None:
            continue
        if not isinstance(v, dict):
            f.fail(f"{key} is {v!r}, expected an object")
        params = v
        break
    theta = f.number("rope_theta", 10000.0)
    partial = f.number("partial_rotary_factor", 1.0)
    if not 0 < partial <= 1:
        f.fail(f"partial_rotary_factor is {partial}, expected (0, 1]")
    c["rope_dims"] = int(c["head_dim"] * partial)
    c["rope_scaling"] = None
    if params is not None:
        p = _Fields(params, f.where)
        theta = p.number("rope_theta", theta)
        kind = p.string("rope_type", p.string("type", "default"))
        if kind not in _ROPE_SCALINGS:
            f.fail(f"rope scaling {kind!r} is not supported (supported: "
                   f"{', '.join(_ROPE_SCALINGS)}); dynamic NTK scaling changes with the sequence "
                   "length and would give other logits than transformers")
        if kind != "default":
            c["rope_scaling"] = kind
            factor = p.number("factor", 1.0)
            if not 1.0 <= factor < 1e6:
                f.fail(f"the rope scaling factor is {factor}, expected 1 or more")
        if kind == "llama3":
            low, high = p.number("low_freq_factor", 1.0), p.number("high_freq_factor", 4.0)
            p.integer("original_max_position_embeddings")
            if not high > low:
                f.fail(f"llama3 rope scaling needs high_freq_factor > low_freq_factor, found "
                       f"{high} and {low}")
        elif kind == "yarn":
            p.integer("original_max_position_embeddings", c["max_position_embeddings"])
            for k in ("beta_fast", "beta_slow", "attention_factor"):
                p.number(k, 0.0)
            if any(p.has(k) for k in ("mscale", "mscale_all_dim", "truncate")):
                f.fail("yarn rope scaling with mscale / mscale_all_dim / truncate is not supported")
    c["rope_theta"] = theta


def _parse_llama_family(f, c, model_type):
    """Llama, Mistral and Qwen2 share one layer (RMSNorm, rotary, GQA, SwiGLU); their configs
    differ in the defaults of their transformers config classes."""
    mistral, qwen2 = model_type == "mistral", model_type == "qwen2"
    c["vocab_size"] = f.integer("vocab_size", 151936 if qwen2 else 32000)
    c["hidden_size"] = hidden = f.integer("hidden_size", 4096)
    c["ffn_dim"] = f.integer("intermediate_size", 14336 if mistral else 22016 if qwen2 else 11008)
    c["num_hidden_layers"] = f.integer("num_hidden_layers", 32)
    c["num_attention_heads"] = heads = f.integer("num_attention_heads", 32)
    c["num_key_value_heads"] = f.integer("num_key_value_heads", 8 if mistral else heads)
    c["max_position_embeddings"] = f.integer("max_position_embeddings",
                                             4096 * 32 if mistral else 32768 if qwen2 else 2048)
    if f.has("head_dim"):  # Mistral and some Llama exports set it apart from hidden / heads
        c["head_dim"] = f.integer("head_dim")
    elif hidden % heads:
        f.fail(f"hidden_size {hidden} is not divisible by num_attention_heads {heads} and no "
               "head_dim is given")
    else:
        c["head_dim"] = hidden // heads
    c["word_embed_proj_dim"] = hidden
    c["norm"], c["mlp"] = "rmsnorm", "gated"
    c["norm_eps"] = f.number("rms_norm_eps", 1e-6)
    c["activation_function"] = f.string("hidden_act", "silu")
    c["tie_word_embeddings"] = f.boolean("tie_word_embeddings", False)
    if not qwen2:  # Qwen2Attention always has q/k/v biases
        f.boolean("attention_bias", False)
        f.boolean("mlp_bias", False)
    _parse_rope(f, c)
    if mistral:  # null (Mistral 7B v0.2 and later): no window; absent: MistralConfig's 4096
        present_null = "sliding_window" in f.d and f.d["sliding_window"] is None
        c["sliding_window"] = 0 if present_null else f.integer("sliding_window", 4096, lo=0,
                                                               hi=4 * _MAX_DIM)
    elif qwen2 and f.boolean("use_sliding_window", False):
        # Qwen2 windows only the layers from max_window_layers on; the engine has one attention.
        f.fail("use_sliding_window true is not supported (per-layer sliding windows)")
    c["tokens"] = (f.token("pad_token_id", -1), f.token("bos_token_id", -1 if qwen2 else 1),
                   *f.token("eos_token_id", -1 if qwen2 else 2, many=True))


# What a family's config.json calls the fields SparseFlowConfig names after OPT's.
_FIELD_NAMES = {
    "gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "ffn_dim": "n_inner",
             "num_attention_heads": "n_head", "max_position_embeddings": "n_positions"},
    "llama": {"ffn_dim": "intermediate_size"},
}
_FIELD_NAMES["mistral"] = _FIELD_NAMES["qwen2"] = _FIELD_NAMES["llama"]


def _validate(f, c):
    """arch::validate (src/arch/model_desc.cpp) on what the parsers read: bounds, whole
    grouped-query groups, an activation the MLP can take, sane norm and rotary settings, token
    ids inside the vocabulary."""
    names = _FIELD_NAMES.get(c["model_type"], {})
    for key, hi in (("vocab_size", 4 * _MAX_DIM), ("hidden_size", _MAX_DIM),
                    ("num_hidden_layers", _MAX_LAYERS), ("head_dim", 1024),
                    ("ffn_dim", 4 * _MAX_DIM), ("max_position_embeddings", 4 * _MAX_DIM),
                    ("word_embed_proj_dim", _MAX_DIM)):
        if c[key] > hi:
            f.fail(f"{names.get(key, key)} is {c[key]}, more than SparseFlow takes ({hi}); is the "
                   "config damaged?")
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    if heads > 4 * c["hidden_size"]:
        f.fail(f"{names.get('num_attention_heads', 'num_attention_heads')} is {heads}, more than "
               f"4 x {names.get('hidden_size', 'hidden_size')} {c['hidden_size']}")
    if kv > heads:
        f.fail(f"num_key_value_heads is {kv}, more than num_attention_heads {heads}")
    if heads % kv:
        f.fail(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}; "
               "grouped-query attention needs whole groups")
    act = c["activation_function"]
    key = "hidden_act" if c["mlp"] == "gated" else "activation_function"
    if act not in _ACTIVATIONS:
        f.fail(f"{key} {act!r} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    if c["mlp"] == "gated" and act == "relu":
        f.fail(f"{key} 'relu' in a gated MLP is not supported (SwiGLU uses silu)")
    if not 0 < c["norm_eps"] < 1:
        f.fail(f"the norm epsilon is {c['norm_eps']}, expected a small positive number")
    if c.get("rope_theta") is not None:
        dims = c.pop("rope_dims")
        if dims <= 0 or dims > c["head_dim"] or dims % 2:
            f.fail(f"the rotary dimensions are {dims}, expected an even number from 2 to head_dim "
                   f"{c['head_dim']} (head_dim x partial_rotary_factor)")
        if not c["rope_theta"] > 1.0:
            f.fail(f"rope_theta is {c['rope_theta']}, expected a number above 1")
    pad, bos, *eos = c.pop("tokens")
    for name, i in [("pad_token_id", pad), ("bos_token_id", bos)] + [("eos_token_id", i) for i in eos]:
        if not -1 <= i < c["vocab_size"]:
            f.fail(f"{name} {i} is outside the vocabulary of {c['vocab_size']}")


@dataclasses.dataclass
class SparseFlowConfig:
    """The shape of a model SparseFlow can run, and the offload strategy to run it with.

    Build it from a Hugging Face config with from_transformers_config (model_type opt, llama,
    mistral, qwen2 or gpt2); sparseflow.Model checks it against the checkpoint it opens. Field
    names follow OPT's config where the families differ: ffn_dim is Llama's intermediate_size
    and GPT-2's n_inner, activation_function is Llama's hidden_act.

    Under a strategy, a ReLU model (OPT) is offloaded neuron by neuron and every strategy field
    applies; a gated model (mlp == "gated": Llama, Mistral, Qwen2) streams whole layers from host
    memory under strategy.gpu_memory, and the neuron knobs (gpu_cache_ratio, policy, predictor)
    do not apply: activation sparsity for SwiGLU is a later step (docs/OFFLOAD.md)."""

    model_type: str
    num_hidden_layers: int
    hidden_size: int
    ffn_dim: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int
    word_embed_proj_dim: int
    do_layer_norm_before: bool = True
    activation_function: str = "relu"
    strategy: OffloadStrategy = None
    # Added with the Llama family, after `strategy` so that positional construction still works.
    num_key_value_heads: int = None  # None: num_attention_heads (no grouped-query attention)
    head_dim: int = None             # None: hidden_size // num_attention_heads
    mlp: str = "plain"               # "plain" (fc1, act, fc2: OPT, GPT-2) or "gated" (SwiGLU)
    norm: str = "layernorm"          # or "rmsnorm"
    norm_eps: float = 1e-5
    rope_theta: float = None         # None: learned positions (OPT, GPT-2)
    rope_scaling: str = None         # None, "linear", "llama3" or "yarn"
    sliding_window: int = 0          # Mistral's attention window in tokens; 0: none
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads:
            self.head_dim = self.hidden_size // self.num_attention_heads

    @property
    def is_gated(self):
        """True for a gated (SwiGLU) MLP: under a strategy it streams whole layers."""
        return self.mlp == "gated"

    @classmethod
    def from_transformers_config(cls, hf_config, strategy=None):
        """hf_config: a transformers PretrainedConfig (anything with to_dict()) or a plain dict
        such as config.json's, of model_type opt, llama, mistral, qwen2 or gpt2. A field left out
        takes its transformers config class's default, except OPT's sizes, which are required.
        strategy: an OffloadStrategy, or None to run without offloading. Raises ValueError
        naming what is unsupported, missing or malformed, with the checks of SparseFlow's own
        config.json parser (src/format/hf_config.cpp)."""
        if isinstance(hf_config, dict):
            d = dict(hf_config)
        elif callable(getattr(hf_config, "to_dict", None)):
            d = hf_config.to_dict()
            if not isinstance(d, dict):
                raise ValueError(f"hf_config.to_dict() returned {type(d).__name__}, expected a dict")
        else:
            raise ValueError(f"hf_config must be a dict or a transformers PretrainedConfig (with "
                             f"to_dict()), got {type(hf_config).__name__}")
        if strategy is not None and not isinstance(strategy, OffloadStrategy):
            raise ValueError(f"strategy must be an OffloadStrategy or None, got "
                             f"{type(strategy).__name__}")
        model_type = d.get("model_type")
        if not isinstance(model_type, str) or model_type not in _FAMILIES:
            raise ValueError(f"model_type {model_type!r} is not supported: SparseFlow's engine runs "
                             f"{', '.join(_SUPPORTED_MODEL_TYPES[:-1])} and "
                             f"{_SUPPORTED_MODEL_TYPES[-1]} models (a Hugging Face config.json's "
                             "model_type)")
        f = _Fields(d, f"the {model_type} config")
        archs = d.get("architectures")
        if archs is not None:
            if not isinstance(archs, (list, tuple)) or not archs:
                f.fail(f"architectures should be a non-empty list of strings, got {archs!r}")
            for a in archs:
                if a not in _FAMILIES[model_type]:
                    f.fail(f"architecture {a!r} is not supported; for model_type {model_type!r} "
                           f"SparseFlow runs {' and '.join(_FAMILIES[model_type])} "
                           "(decoder-only language models)")
        c = {"model_type": model_type, "rope_theta": None, "rope_scaling": None,
             "sliding_window": 0, "do_layer_norm_before": True}
        if model_type == "opt":
            _parse_opt(f, c)
        elif model_type == "gpt2":
            _parse_gpt2(f, c)
        else:
            _parse_llama_family(f, c, model_type)
        _validate(f, c)
        return cls(strategy=strategy, **c)

    def check_matches(self, info):
        """Raise ValueError when the checkpoint described by `info` (Model.info) is another
        architecture or has another shape than this config. Keys an older library's info lacks
        are not compared."""
        pairs = [("model_type", "architecture"), ("num_hidden_layers", "layers"),
                 ("hidden_size", "hidden"), ("ffn_dim", "ffn"), ("num_attention_heads", "heads"),
                 ("num_key_value_heads", "kv_heads"), ("head_dim", "head_dim"),
                 ("vocab_size", "vocab"), ("max_position_embeddings", "max_positions")]
        wrong = [f"{mine} {getattr(self, mine)} vs {info[theirs]}" for mine, theirs in pairs
                 if theirs in info and getattr(self, mine) != info[theirs]]
        if wrong:
            raise ValueError(f"the config does not match the checkpoint {info.get('path')!r} "
                             f"(config vs checkpoint): {'; '.join(wrong)}")
