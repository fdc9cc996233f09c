"""sparseflow.Model, SparseFlowConfig and OffloadStrategy: the offloading seed's snippet as written,
validation, generation against the `sparseflow generate` command on the same model, streaming,
stopping from the callback, and the demo module."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sparseflow
from sparseflow import OffloadStrategy, SparseFlowConfig

REPO = Path(__file__).resolve().parents[2]

# facebook/opt-125m's config.json, the fields that matter.
OPT_125M = {
    "model_type": "opt", "architectures": ["OPTForCausalLM"], "hidden_size": 768,
    "num_hidden_layers": 12, "ffn_dim": 3072, "num_attention_heads": 12, "vocab_size": 50272,
    "max_position_embeddings": 2048, "word_embed_proj_dim": 768, "do_layer_norm_before": True,
    "activation_function": "relu", "torch_dtype": "float16",
}


class FakePretrainedConfig:
    """What transformers' PretrainedConfig offers the converter: to_dict()."""

    def __init__(self, **fields):
        self._fields = fields

    def to_dict(self):
        return dict(self._fields)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    return sparseflow.builtin_model_path(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def model(builtin):
    with sparseflow.Model(builtin, device="cpu") as m:
        yield m


def _cli():
    exe = os.environ.get("SPARSEFLOW_CLI")
    if exe:
        return exe
    lib_dir = os.environ.get("SPARSEFLOW_LIBRARY_DIR")
    if lib_dir:  # a CMake build tree: BUILD/src/capi/libsparseflow.so, BUILD/src/cli/sparseflow
        for cand in (Path(lib_dir) / "src" / "cli" / "sparseflow",
                     Path(lib_dir).parent / "cli" / "sparseflow"):
            if cand.is_file():
                return str(cand)
    pytest.skip("no `sparseflow` binary: set SPARSEFLOW_CLI (ctest sets it)")


# ---- the seed's snippet, as written -------------------------------------------------------------

def _seed_snippet(hf_config):
    from sparseflow import SparseFlowConfig, OffloadStrategy

    strategy = OffloadStrategy(
        gpu_cache_ratio=0.3,      # 30% of neurons on GPU
        use_lru_eviction=True,    # LRU cache policy
        async_transfer=True,      # Async weight loading
    )

    config = SparseFlowConfig.from_transformers_config(hf_config, strategy)
    return strategy, config


@pytest.mark.parametrize("wrap", [dict, lambda d: FakePretrainedConfig(**d)],
                         ids=["dict", "to_dict"])
def test_seed_snippet_runs_as_written(wrap):
    strategy, config = _seed_snippet(wrap(OPT_125M))
    assert config.strategy is strategy
    assert (config.num_hidden_layers, config.hidden_size, config.ffn_dim) == (12, 768, 3072)
    assert config.model_type == "opt" and config.max_position_embeddings == 2048
    assert strategy.effective_cache_ratio == 0.3
    text = repr(config)
    assert "SparseFlowConfig(model_type='opt'" in text and "gpu_cache_ratio=0.3" in text


def test_config_imports_without_torch_or_transformers():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from sparseflow import SparseFlowConfig, OffloadStrategy\n"
            "c = SparseFlowConfig.from_transformers_config({'model_type': 'opt', 'hidden_size': 64,"
            " 'num_hidden_layers': 2, 'ffn_dim': 256, 'num_attention_heads': 4, 'vocab_size': 100,"
            " 'max_position_embeddings': 128}, OffloadStrategy())\n"
            "print(c.hidden_size, c.strategy.policy)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "fetch"]


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"gpu_cache_ratio": 1.5}, "gpu_cache_ratio must be a number in [0, 1]"),
    ({"gpu_cache_ratio": -0.1}, "gpu_cache_ratio"),
    ({"gpu_cache_ratio": "0.3"}, "gpu_cache_ratio"),
    ({"gpu_cache_ratio": True}, "gpu_cache_ratio"),
    ({"use_lru_eviction": "yes"}, "use_lru_eviction must be True or False"),
    ({"async_transfer": 1}, "async_transfer must be True or False"),
    ({"async_transfer": False}, "no synchronous mode"),
    ({"policy": "teleport"}, "fetch, cpu, auto, stream"),
    ({"predictor": "oracle"}, "predictor"),
    ({"gpu_memory": 1.5}, "fraction of the model's bytes"),
    ({"gpu_memory": 0}, "positive"),
    ({"gpu_memory": ""}, "gpu_memory must be a size"),
])
def test_strategy_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError) as e:
        OffloadStrategy(**kwargs)
    assert message in str(e.value)


def test_strategy_maps_to_engine_knobs():
    assert OffloadStrategy(gpu_cache_ratio=0.7, use_lru_eviction=False).effective_cache_ratio == 0.0
    assert OffloadStrategy(gpu_cache_ratio=0).effective_cache_ratio == 0.0
    assert OffloadStrategy(gpu_memory=0.5).gpu_memory == "0.5"
    assert OffloadStrategy(gpu_memory=1.0).gpu_memory == "1.0"  # a fraction, not 1 byte
    assert OffloadStrategy(gpu_memory=6 << 30).gpu_memory == str(6 << 30)
    assert OffloadStrategy(gpu_memory=" 6GiB ").gpu_memory == "6GiB"


@pytest.mark.parametrize("change, message", [
    ({"model_type": "bert"}, "opt, llama, mistral, qwen2 and gpt2"),
    ({"model_type": None}, "not supported"),
    ({"hidden_size": None}, "lacks hidden_size"),
    ({"num_attention_heads": 7}, "not divisible"),
    ({"ffn_dim": -1}, "ffn_dim must be a positive integer"),
    ({"vocab_size": 1.5}, "vocab_size must be a positive integer"),
    ({"activation_function": "tanh"}, "activation_function 'tanh' is not supported"),
])
def test_config_rejects_what_the_engine_cannot_run(change, message):
    d = dict(OPT_125M, **change)
    with pytest.raises(ValueError) as e:
        SparseFlowConfig.from_transformers_config(d, OffloadStrategy())
    assert message in str(e.value)


def test_config_rejects_wrong_argument_types():
    with pytest.raises(ValueError, match="PretrainedConfig"):
        SparseFlowConfig.from_transformers_config(["opt"])
    with pytest.raises(ValueError, match="OffloadStrategy"):
        SparseFlowConfig.from_transformers_config(OPT_125M, {"gpu_cache_ratio": 0.3})


# ---- the model ----------------------------------------------------------------------------------

def test_info_describes_the_checkpoint(model, builtin):
    i = model.info
    assert (i["architecture"], i["layers"], i["hidden"], i["vocab"]) == ("opt", 2, 64, 1500)
    assert i["weights"] == "dense" and i["device"] == "cpu" and i["offloaded"] is False
    assert i["path"] == builtin and i["memory"]["weight_bytes"] > 0
    assert "2 layers" in repr(model)


def test_generate_equals_the_cli(model, builtin):
    prompt = "Hello world"
    text = model.generate(prompt, max_new_tokens=16)
    result = model.last_result
    out = subprocess.run([_cli(), "generate", "-m", builtin, "-p", prompt, "-n", "16", "--greedy"],
                         capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode("utf-8") == prompt + text + "\n"
    js = subprocess.run([_cli(), "generate", "-m", builtin, "-p", prompt, "-n", "16", "--greedy",
                         "--json"], capture_output=True, text=True)
    assert js.returncode == 0, js.stderr
    j = json.loads(js.stdout)
    assert j["generated_ids"] == result["ids"] and j["prompt_ids"] == result["prompt_ids"]
    assert result["prompt_ids"][0] == 2  # BOS prepended, as the CLI and HF do
    assert len(result["ids"]) == 16 or result["stopped_by"] == "eos"


def test_generate_from_ids_and_sampling(model):
    ids = model.tokenize("Hello world")
    assert model.generate(ids, max_new_tokens=8) == model.generate("Hello world", max_new_tokens=8)
    a = model.generate("Hello", max_new_tokens=12, temperature=0.9, top_k=20, seed=7)
    b = model.generate("Hello", max_new_tokens=12, temperature=0.9, top_k=20, seed=7)
    assert a == b
    with pytest.raises(ValueError, match="greedy=True cannot be combined"):
        model.generate("Hello", greedy=True, temperature=0.5)
    with pytest.raises(sparseflow.SparseFlowError, match="temperature"):
        model.generate("Hello", temperature=0.0)


def test_stream_pieces_join_to_generate(model):
    pieces = list(model.stream("Hello world", max_new_tokens=20))
    assert len(pieces) > 1
    assert "".join(pieces) == model.generate("Hello world", max_new_tokens=20)


def test_stream_stops_when_the_loop_leaves(model):
    for i, _ in enumerate(model.stream("Hello world", max_new_tokens=40)):
        if i == 1:
            break
    assert model.last_result is not None
    assert model.generate("Hi", max_new_tokens=4) is not None  # the model is free again


def test_callback_can_stop_and_the_model_stays_usable(model):
    full = model.generate_result("Hello world", max_new_tokens=10)
    seen = []

    def on_token(token, text):
        seen.append(token)
        return len(seen) < 3

    r = model.generate_result("Hello world", max_new_tokens=10, on_token=on_token)
    assert r["stopped_by"] == "callback" and r["ids"] == seen == full["ids"][:3]
    assert model.generate_result("Hello world", max_new_tokens=10)["ids"] == full["ids"]

    def boom(token, text):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        model.generate("Hello world", max_new_tokens=10, on_token=boom)
    assert model.generate_result("Hello world", max_new_tokens=10)["ids"] == full["ids"]

    def reenter(token, text):
        model.info  # noqa: B018 - must be refused, not deadlock

    with pytest.raises(RuntimeError, match="called back into"):
        model.generate("Hello", max_new_tokens=2, on_token=reenter)


def test_perplexity_tokenize_detokenize(model):
    text = "The quick brown fox jumps over the lazy dog."
    ids = model.tokenize(text)
    assert ids[0] == 2 and model.tokenize(text, add_bos=False) == ids[1:]
    assert model.detokenize(ids[1:]) == text
    ppl = model.perplexity(text)
    assert ppl > 1 and ppl == model.perplexity(ids)
    assert model.perplexity(ids, context=4) != ppl


def test_offload_stats_is_none_on_the_cpu(model):
    assert model.offload_stats() is None


def test_strategy_without_a_gpu_runs_on_the_cpu_and_says_so(builtin):
    if sparseflow.model._cuda_engine_unavailable() == "":
        pytest.skip("a GPU is usable here: the strategy runs offloaded")
    sparseflow.model._warned_no_gpu = False
    config = SparseFlowConfig.from_transformers_config(
        {"model_type": "opt", "hidden_size": 64, "num_hidden_layers": 2, "ffn_dim": 256,
         "num_attention_heads": 4, "vocab_size": 1500, "max_position_embeddings": 128},
        OffloadStrategy(gpu_cache_ratio=0.3))
    with pytest.warns(RuntimeWarning, match="offloading needs a CUDA GPU"):
        m = sparseflow.SparseFlowModel(builtin, config=config)
    with m:
        assert not m.offloaded and m.info["device"] == "cpu" and m.offload_stats() is None
        assert m.generate("Hello", max_new_tokens=3) is not None
    with pytest.raises(sparseflow.SparseFlowError, match="needs a CUDA GPU"):
        sparseflow.Model(builtin, device="cuda")


def test_config_must_match_the_checkpoint(builtin):
    wrong = SparseFlowConfig.from_transformers_config(OPT_125M)
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        sparseflow.Model(builtin, config=wrong, device="cpu")


# HF checkpoints of every architecture (random weights, tests/data), each with its config.json.
CHECKPOINTS = ["opt/pre_ln", "opt/proj", "llama/llama_gqa_llama3", "llama/mistral_headdim_fp32",
               "llama/qwen2_tied_bf16_sharded", "llama/gpt2"]


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_config_of_every_architecture_matches_its_checkpoint(case):
    path = REPO / "tests" / "data" / case
    hf = json.loads((path / "config.json").read_text())
    config = SparseFlowConfig.from_transformers_config(hf)
    with sparseflow.Model(path, config=config, device="cpu") as m:
        i = m.info
        assert i["architecture"] == config.model_type == hf["model_type"]
        assert (i["kv_heads"], i["head_dim"]) == (config.num_key_value_heads, config.head_dim)
        assert m.perplexity(list(range(1, 9))) > 1
    # The same shape under another field: one change the check must see per architecture.
    if config.model_type == "gpt2":
        change = {"n_inner": hf["n_inner"] * 2}
    elif config.model_type == "opt":
        change = {"ffn_dim": hf["ffn_dim"] * 2}
    else:
        change = {"num_key_value_heads": 1}
    wrong = SparseFlowConfig.from_transformers_config(dict(hf, **change))
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        sparseflow.Model(path, config=wrong, device="cpu")


def test_closed_model_and_bad_arguments(builtin):
    with sparseflow.Model(builtin, device="cpu") as m:
        pass
    with pytest.raises(ValueError, match="closed"):
        m.generate("Hello")
    assert "closed" in repr(m)
    with pytest.raises(ValueError, match="device"):
        sparseflow.Model(builtin, device="tpu")
    with pytest.raises(sparseflow.SparseFlowError):
        sparseflow.Model(str(Path(builtin).parent / "missing.sf"), device="cpu")


def test_builtin_model_is_written_once(tmp_path):
    path = Path(sparseflow.builtin_model_path(cache_dir=tmp_path))
    assert path.parent == tmp_path and path.stat().st_size > 0
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    assert Path(sparseflow.builtin_model_path(cache_dir=tmp_path)) == path
    assert path.stat().st_mtime_ns == stamp - 10**9  # reused, not rewritten
    sparseflow.builtin_model_path(cache_dir=tmp_path, force=True)
    assert path.stat().st_mtime_ns != stamp - 10**9
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporaries left


def test_demo_module_runs(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=str(REPO / "python"))
    out = subprocess.run([sys.executable, "-m", "sparseflow.examples.demo_generation", "--device",
                          "cpu", "--max-new-tokens", "8"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "config: SparseFlowConfig(model_type='opt'" in out.stdout
    assert "prefill:" in out.stdout and "offload stats: none (not offloaded)" in out.stdout
    assert (tmp_path / "sparseflow").is_dir()  # the built-in model, cached
