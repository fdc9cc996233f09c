"""SparseFlowConfig.from_transformers_config for every model_type the engine runs (opt, llama,
mistral, qwen2, gpt2): the field names and defaults of each transformers config class, and the
refusals of the engine's own parser (src/format/hf_config.cpp and arch::validate; the C++ cases
are tests/format/test_hf_config.cpp). Plain Python: no native library needed."""

import json
from pathlib import Path

import pytest

from sparseflow import OffloadStrategy, SparseFlowConfig

DATA = Path(__file__).resolve().parents[1] / "data"


def parse(d, strategy=None):
    return SparseFlowConfig.from_transformers_config(d, strategy)


def llama(model_type="llama", **extra):
    """A small config of the Llama family, as tests/format/test_hf_config.cpp's llama()."""
    return dict({"model_type": model_type, "vocab_size": 300, "hidden_size": 64,
                 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 8,
                 "max_position_embeddings": 128}, **extra)


def gpt2(**extra):
    return dict({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2,
                 "n_positions": 64, "n_inner": 96, "vocab_size": 256, "bos_token_id": 1,
                 "eos_token_id": 2}, **extra)


def refused(d, message):
    with pytest.raises(ValueError) as e:
        parse(d)
    assert message in str(e.value), str(e.value)
    return str(e.value)


# ---- each transformers config class's defaults -------------------------------------------------

def shape(c):
    return (c.vocab_size, c.hidden_size, c.ffn_dim, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.head_dim, c.max_position_embeddings)


def test_llama_defaults():
    c = parse({"model_type": "llama"})
    assert shape(c) == (32000, 4096, 11008, 32, 32, 32, 128, 2048)
    assert (c.mlp, c.norm, c.norm_eps, c.activation_function) == ("gated", "rmsnorm", 1e-6, "silu")
    assert (c.rope_theta, c.rope_scaling, c.sliding_window) == (10000.0, None, 0)
    assert c.is_gated and not c.tie_word_embeddings and c.word_embed_proj_dim == 4096


def test_mistral_defaults():
    c = parse({"model_type": "mistral"})
    assert shape(c) == (32000, 4096, 14336, 32, 32, 8, 128, 4096 * 32)
    assert c.sliding_window == 4096 and c.is_gated
    # null turns the window off (Mistral 7B v0.2 and later).
    assert parse({"model_type": "mistral", "sliding_window": None}).sliding_window == 0
    assert parse(llama("mistral", sliding_window=8)).sliding_window == 8


def test_qwen2_defaults():
    c = parse({"model_type": "qwen2"})
    assert shape(c) == (151936, 4096, 22016, 32, 32, 32, 128, 32768)
    assert c.sliding_window == 0 and not c.tie_word_embeddings
    tied = parse(llama("qwen2", tie_word_embeddings=True, sliding_window=4096,
                       use_sliding_window=False, max_window_layers=28))
    assert tied.tie_word_embeddings and tied.sliding_window == 0


def test_gpt2_defaults_and_field_names():
    c = parse({"model_type": "gpt2"})
    assert shape(c) == (50257, 768, 4 * 768, 12, 12, 12, 64, 1024)  # n_inner null: 4 x n_embd
    assert (c.mlp, c.norm, c.activation_function, c.rope_theta) == ("plain", "layernorm",
                                                                    "gelu_new", None)
    assert c.tie_word_embeddings  # GPT2LMHeadModel always ties lm_head to wte
    small = parse(gpt2(activation_function="gelu_pytorch_tanh", n_inner=None))
    assert shape(small) == (256, 64, 256, 2, 4, 4, 16, 64)
    assert small.activation_function == "gelu_pytorch_tanh"


def test_opt_needs_its_sizes():
    msg = refused({"model_type": "opt"}, "the opt config lacks num_hidden_layers, hidden_size, "
                  "ffn_dim, num_attention_heads, vocab_size, max_position_embeddings")
    assert "complete config.json" in msg
    c = parse({"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 256,
               "num_attention_heads": 4, "vocab_size": 1500, "max_position_embeddings": 128,
               "word_embed_proj_dim": 32, "do_layer_norm_before": False})
    assert shape(c) == (1500, 64, 256, 2, 4, 4, 16, 128)
    assert (c.word_embed_proj_dim, c.do_layer_norm_before, c.mlp, c.norm) == (32, False, "plain",
                                                                              "layernorm")
    assert c.activation_function == "relu" and c.rope_theta is None and not c.is_gated


# ---- the checkpoints in tests/data, as transformers wrote their config.json ---------------------

FIXTURES = {
    "opt/pre_ln": ("opt", 4, 16, "plain", None),
    "opt/proj": ("opt", 4, 16, "plain", None),
    "llama/llama_gqa_llama3": ("llama", 2, 8, "gated", "llama3"),
    "llama/llama_bias_linear": ("llama", 4, 16, "gated", "linear"),
    "llama/mistral_headdim_fp32": ("mistral", 2, 24, "gated", None),
    "llama/qwen2_tied_bf16_sharded": ("qwen2", 2, 16, "gated", None),
    "llama/gpt2": ("gpt2", 4, 16, "plain", None),
}


class FakePretrainedConfig:
    """What transformers' PretrainedConfig offers: to_dict()."""

    def __init__(self, d):
        self._d = d

    def to_dict(self):
        return dict(self._d)


@pytest.mark.parametrize("case", sorted(FIXTURES))
def test_transformers_configs_of_every_model_type(case):
    d = json.loads((DATA / case / "config.json").read_text())
    model_type, kv_heads, head_dim, mlp, scaling = FIXTURES[case]
    strategy = OffloadStrategy(gpu_memory="50%")
    for c in (parse(d, strategy), parse(FakePretrainedConfig(d), strategy)):
        assert c.model_type == model_type and c.strategy is strategy
        assert (c.num_key_value_heads, c.head_dim, c.mlp, c.rope_scaling) == (kv_heads, head_dim,
                                                                               mlp, scaling)
        assert repr(c).startswith(f"SparseFlowConfig(model_type='{model_type}'")


def test_mistral_head_dim_apart_from_hidden_over_heads():
    c = parse(json.loads((DATA / "llama/mistral_headdim_fp32/config.json").read_text()))
    assert (c.hidden_size, c.num_attention_heads, c.head_dim, c.sliding_window) == (64, 4, 24, 8)
    # An explicit head_dim also lifts the divisibility of hidden by heads.
    assert parse({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 32}).head_dim == 32


# ---- rotary settings in every spelling transformers has used ------------------------------------

ROPE_SPELLINGS = [
    ({"rope_scaling": {"type": "linear", "factor": 4.0}}, 10000.0, "linear"),  # before 4.42
    ({"rope_scaling": {"type": "linear", "rope_type": "linear", "factor": 4}}, 10000.0, "linear"),
    ({"rope_theta": 500000, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}, 500000.0, "llama3"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                          "original_max_position_embeddings": 8192}}, 500000.0, "llama3"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, 1e6, None),  # transformers 5
    ({"rope_scaling": None, "rope_theta": 1e6}, 1e6, None),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, 10000.0, "yarn"),
    ({"partial_rotary_factor": 0.5}, 10000.0, None),
]


@pytest.mark.parametrize("extra, theta, scaling", ROPE_SPELLINGS)
def test_rope_spellings(extra, theta, scaling):
    c = parse(llama(**extra))
    assert (c.rope_theta, c.rope_scaling) == (theta, scaling)


# ---- token ids -----------------------------------------------------------------------------------

TOKENS_ACCEPTED = [
    {"model_type": "llama", "vocab_size": 128256, "hidden_size": 64, "num_attention_heads": 4,
     "num_hidden_layers": 1, "intermediate_size": 64, "bos_token_id": 128000,
     "eos_token_id": [128001, 128008, 128009]},  # Llama 3's end-of-turn ids
    llama(bos_token_id=None, eos_token_id=None, pad_token_id=None),
    gpt2(bos_token_id=None),
]


def test_token_ids_lists_and_nulls():
    for d in TOKENS_ACCEPTED:
        parse(d)
    # A field left out takes the class's default, GPT-2's 50256, which is outside 256 ids.
    no_ids = {k: v for k, v in gpt2().items() if not k.endswith("_token_id")}
    refused(no_ids, "bos_token_id 50256 is outside the vocabulary of 256")


# ---- what the engine does not run ----------------------------------------------------------------

REFUSED = [
    ({"model_type": "phi3"}, "model_type 'phi3' is not supported"),
    ({"model_type": "bert"}, "runs opt, llama, mistral, qwen2 and gpt2 models"),
    ({"architectures": ["LlamaForCausalLM"]}, "model_type None is not supported"),
    (llama(architectures=["MistralForCausalLM"]), "architecture 'MistralForCausalLM' is not supported"),
    (gpt2(architectures=["GPT2ForSequenceClassification"]), "runs GPT2LMHeadModel and GPT2Model"),
    (llama(architectures="LlamaForCausalLM"), "architectures should be a non-empty list"),
    # heads and KV heads
    (llama(num_key_value_heads=3), "not a multiple of num_key_value_heads 3"),
    (llama(num_key_value_heads=16), "num_key_value_heads is 16, more than num_attention_heads 8"),
    (llama(num_key_value_heads=0), "num_key_value_heads must be a positive integer"),
    ({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}, "no head_dim is given"),
    (llama(head_dim=0), "head_dim must be a positive integer, got 0"),
    (llama(head_dim=2048), "head_dim is 2048, more than SparseFlow takes (1024)"),
    (gpt2(n_embd=100, n_head=3), "n_embd 100 is not divisible by n_head 3"),
    ({"model_type": "opt", "vocab_size": 50, "hidden_size": 100, "num_hidden_layers": 1,
      "ffn_dim": 64, "num_attention_heads": 3, "max_position_embeddings": 16},
     "hidden_size 100 is not divisible by num_attention_heads 3"),
    # GPT-2's own field names, checked as integers
    (gpt2(n_layer=0), "n_layer must be a positive integer, got 0"),
    (gpt2(n_inner=-1), "n_inner must be a positive integer"),
    (gpt2(n_positions=1.5), "n_positions must be a positive integer"),
    (gpt2(n_head=True), "n_head must be a positive integer"),
    (gpt2(n_layer=5000), "n_layer is 5000, more than SparseFlow takes (4096)"),
    (gpt2(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (gpt2(scale_attn_weights=False), "scale_attn_weights false is not supported"),
    (gpt2(layer_norm_epsilon=0), "the norm epsilon is 0.0"),
    # Llama's field names
    (llama(intermediate_size=0), "intermediate_size must be a positive integer"),
    (llama(hidden_act="relu2"), "hidden_act 'relu2' is not supported"),
    (llama(hidden_act="relu"), "hidden_act 'relu' in a gated MLP is not supported"),
    (llama(rms_norm_eps="small"), "rms_norm_eps must be a number"),
    (llama(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
    (llama(attention_bias=1), "attention_bias must be true or false"),
    # rotary
    (llama(rope_scaling={"type": "dynamic", "factor": 2.0}), "dynamic"),
    (llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}),
     "rope scaling 'dynamic' is not supported"),
    (llama(rope_scaling={"rope_type": "longrope", "factor": 2.0}), "'longrope' is not supported"),
    (llama(rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 1.0}), "mscale"),
    (llama(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     "original_max_position_embeddings is missing"),
    (llama(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                         "high_freq_factor": 1.0, "original_max_position_embeddings": 32}),
     "high_freq_factor > low_freq_factor"),
    (llama(rope_scaling={"rope_type": "linear", "factor": 0.5}), "rope scaling factor is 0.5"),
    (llama(rope_scaling="linear"), "rope_scaling is 'linear', expected an object"),
    (llama(rope_theta="big"), "rope_theta must be a number"),
    (llama(rope_theta=1.0), "rope_theta is 1.0, expected a number above 1"),
    (llama(partial_rotary_factor=1.5), "partial_rotary_factor is 1.5"),
    (llama(head_dim=6, partial_rotary_factor=0.5), "the rotary dimensions are 3"),
    # sliding windows
    (llama("qwen2", use_sliding_window=True, sliding_window=4096),
     "use_sliding_window true is not supported"),
    (llama("mistral", sliding_window=-1), "sliding_window must be an integer >= 0, got -1"),
    # token ids
    (llama(eos_token_id=[]), "expected one token id"),
    (llama(bos_token_id=[1, 2]), "expected one token id"),
    (llama(eos_token_id=[2, 300]), "eos_token_id 300 is outside the vocabulary of 300"),
    (llama(eos_token_id="2"), "expected a token id"),
    (llama(pad_token_id=-2), "pad_token_id -2 is outside the vocabulary"),
]


@pytest.mark.parametrize("d, message", REFUSED)
def test_refusals_name_the_field(d, message):
    msg = refused(d, message)
    if isinstance(d.get("model_type"), str) and d["model_type"] in ("llama", "gpt2", "opt",
                                                                    "mistral", "qwen2"):
        assert msg.startswith(f"the {d['model_type']} config")


# ---- the check against a checkpoint, without one -------------------------------------------------

def info_of(c, **change):
    """What Model.info reports for a checkpoint of config c (the keys check_matches reads)."""
    i = {"path": "m.sf", "architecture": c.model_type, "layers": c.num_hidden_layers,
         "hidden": c.hidden_size, "ffn": c.ffn_dim, "heads": c.num_attention_heads,
         "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim, "vocab": c.vocab_size,
         "max_positions": c.max_position_embeddings}
    i.update(change)
    return i


@pytest.mark.parametrize("model_type", ["opt", "llama", "mistral", "qwen2", "gpt2"])
def test_check_matches_every_architecture(model_type):
    d = (llama(model_type) if model_type in ("llama", "mistral", "qwen2")
         else gpt2() if model_type == "gpt2"
         else json.loads((DATA / "opt/pre_ln/config.json").read_text()))
    c = parse(d)
    c.check_matches(info_of(c))
    c.check_matches({k: v for k, v in info_of(c).items() if k not in ("kv_heads", "head_dim")})
    with pytest.raises(ValueError, match=r"does not match the checkpoint 'm.sf'.*ffn_dim"):
        c.check_matches(info_of(c, ffn=c.ffn_dim * 2))
    other = "opt" if model_type != "opt" else "llama"
    with pytest.raises(ValueError, match=f"model_type {model_type} vs {other}"):
        c.check_matches(info_of(c, architecture=other))


def test_check_matches_kv_heads_and_head_dim():
    c = parse(llama(num_key_value_heads=2))
    with pytest.raises(ValueError, match="num_key_value_heads 2 vs 8"):
        c.check_matches(info_of(c, kv_heads=8))
    with pytest.raises(ValueError, match="head_dim 8 vs 16"):
        c.check_matches(info_of(c, head_dim=16))


def test_direct_construction_fills_kv_heads_and_head_dim():
    c = SparseFlowConfig("opt", 2, 64, 256, 4, 1500, 128, 64)
    assert (c.num_key_value_heads, c.head_dim, c.mlp, c.strategy) == (4, 16, "plain", None)


# ---- the same verdicts as the library's own parser -----------------------------------------------

def _accepted_cases():
    cases = [{"model_type": t} for t in ("llama", "mistral", "qwen2", "gpt2")]
    cases += [json.loads((DATA / case / "config.json").read_text()) for case in sorted(FIXTURES)]
    cases += [llama(**extra) for extra, _, _ in ROPE_SPELLINGS] + TOKENS_ACCEPTED
    cases += [llama("mistral", sliding_window=None), llama("mistral", sliding_window=8),
              gpt2(activation_function="gelu_pytorch_tanh", n_inner=None)]
    return cases


@pytest.fixture(scope="module")
def library_verdict(tmp_path_factory):
    """verdict(d): None when the library's config.json parser accepts d, else its message. It
    opens a directory holding only config.json: an accepted config fails later, on the missing
    weights."""
    import sparseflow
    try:
        sparseflow._lib.lib()
    except sparseflow.LibraryNotFoundError as e:
        pytest.skip(f"no native library to compare with ({e.message.splitlines()[0]})")
    folder = tmp_path_factory.mktemp("config")

    def verdict(d):
        (folder / "config.json").write_text(json.dumps(d))
        with pytest.raises(sparseflow.SparseFlowError) as e:
            sparseflow.Model(str(folder), device="cpu")
        msg = str(e.value)
        return None if "has no weights" in msg else msg
    return verdict


def test_the_library_accepts_what_python_accepts(library_verdict):
    for d in _accepted_cases():
        parse(d)
        assert library_verdict(d) is None, d


@pytest.mark.parametrize("d, message", REFUSED)
def test_the_library_refuses_what_python_refuses(library_verdict, d, message):
    verdict = library_verdict(d)
    assert verdict is not None and "config.json" in verdict, (d, verdict)
