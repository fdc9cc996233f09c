"""Configuration: a model's shape (SparseFlowConfig) and how its FFN is offloaded (OffloadStrategy).

Plain Python, importable without PyTorch, transformers or the native library:

    from sparseflow import SparseFlowConfig, OffloadStrategy
    strategy = OffloadStrategy(gpu_cache_ratio=0.3, use_lru_eviction=True, async_transfer=True)
    config = SparseFlowConfig.from_transformers_config(hf_config, strategy)

Every OffloadStrategy field maps to one knob of the offloaded engine (offload::OffloadOptions in
src/offload/offload_options.hpp, sf_session_options in sparseflow.h):

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
import numbers

_POLICIES = ("fetch", "cpu", "auto", "stream")
_PREDICTORS = ("model", "exact")
# What SparseFlow's engine runs (src/format/hf_config.cpp): OPT only, these activations.
_SUPPORTED_MODEL_TYPES = ("opt",)
_ACTIVATIONS = ("relu", "gelu", "silu", "swish")


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


@dataclasses.dataclass
class SparseFlowConfig:
    """The shape of a model SparseFlow can run, and the offload strategy to run it with.

    Build it from a Hugging Face config with from_transformers_config; sparseflow.Model checks it
    against the checkpoint it opens."""

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

    _REQUIRED = ("num_hidden_layers", "hidden_size", "ffn_dim", "num_attention_heads",
                 "vocab_size", "max_position_embeddings")

    @classmethod
    def from_transformers_config(cls, hf_config, strategy=None):
        """hf_config: a transformers PretrainedConfig (anything with to_dict()) or a plain dict
        such as config.json's. strategy: an OffloadStrategy, or None to run without offloading.
        Raises ValueError naming what is unsupported or missing."""
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
        if model_type not in _SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported: SparseFlow's engine runs "
                             f"{', '.join(repr(t) for t in _SUPPORTED_MODEL_TYPES)} models "
                             "(OPTForCausalLM checkpoints) today")
        missing = [k for k in cls._REQUIRED if d.get(k) is None]
        if missing:
            raise ValueError(f"the {model_type} config lacks {', '.join(missing)}; the engine needs "
                             "them (is this a complete config.json?)")
        for k in cls._REQUIRED:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if d["hidden_size"] % d["num_attention_heads"]:
            raise ValueError(f"hidden_size {d['hidden_size']} is not divisible by "
                             f"num_attention_heads {d['num_attention_heads']}")
        act = d.get("activation_function") or "relu"
        if act not in _ACTIVATIONS:
            raise ValueError(f"activation_function {act!r} is not supported (supported: "
                             f"{', '.join(_ACTIVATIONS)})")
        proj = d.get("word_embed_proj_dim") or d["hidden_size"]
        return cls(model_type=model_type,
                   num_hidden_layers=int(d["num_hidden_layers"]),
                   hidden_size=int(d["hidden_size"]),
                   ffn_dim=int(d["ffn_dim"]),
                   num_attention_heads=int(d["num_attention_heads"]),
                   vocab_size=int(d["vocab_size"]),
                   max_position_embeddings=int(d["max_position_embeddings"]),
                   word_embed_proj_dim=int(proj),
                   do_layer_norm_before=bool(d.get("do_layer_norm_before", True)),
                   activation_function=act,
                   strategy=strategy)

    def check_matches(self, info):
        """Raise ValueError when the checkpoint described by `info` (Model.info) has another
        shape than this config."""
        pairs = [("num_hidden_layers", "layers"), ("hidden_size", "hidden"), ("ffn_dim", "ffn"),
                 ("num_attention_heads", "heads"), ("vocab_size", "vocab")]
        wrong = [f"{mine} {getattr(self, mine)} vs {info[theirs]}" for mine, theirs in pairs
                 if getattr(self, mine) != info[theirs]]
        if wrong:
            raise ValueError(f"the config does not match the checkpoint {info.get('path')!r} "
                             f"(config vs checkpoint): {'; '.join(wrong)}")
