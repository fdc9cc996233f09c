// sparseflow synth: write a synthetic checkpoint with deterministic random weights (an HF
// directory, or a .sf file) in a published model's shape, so that the whole pipeline runs with no
// download.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <iterator>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "core/output_path.hpp"
#include "core/temp_files.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"
#include "model/synth_large.hpp"
#include "offload/synth_profile.hpp"

namespace sf::cli {

namespace {

namespace fs = std::filesystem;

struct SynthArgs {
  std::string arch = "tiny", output, format = "hf", dtype = "fp16", sparsity = "none";
  uint64_t seed = 0;
  std::string activation_profile;  // empty = plain random weights
  bool profiled = false, neuron_major = false, force = false;
  int64_t layers = 0;
};

void run_synth(const SynthArgs& a) {
  check_output({a.output, "--output"}, {}, a.force);
  model::SynthOptions o;
  o.arch = a.arch;
  o.seed = a.seed;
  const auto dt = dtype_from_cli(a.dtype);
  if (!dt) fail(Status::InvalidArgument, "--dtype {}: expected fp16, bf16 or fp32", a.dtype);
  o.dtype = *dt;
  if (a.neuron_major && a.format != "sf")
    fail(Status::InvalidArgument, "--neuron-major writes a .sf file; add --format sf");
  if (a.sparsity != "none" && a.sparsity != "2:4")
    fail(Status::InvalidArgument, "--sparsity {}: expected none or 2:4", a.sparsity);
  const bool sparse24 = a.sparsity == "2:4";
  if (sparse24 && a.format != "sf")
    fail(Status::InvalidArgument,
         "--sparsity 2:4 writes a compressed .sf file (an HF checkpoint holds dense "
         "weights); add --format sf, or prune an HF checkpoint later with `sparseflow convert "
         "--sparsity 2:4`");
  if (sparse24 && (a.profiled || a.neuron_major))
    fail(Status::InvalidArgument,
         "--sparsity 2:4 cannot be combined with --activation-profile or --neuron-major: "
         "the offloading experiments use dense neuron bundles (2:4 bundles are not written yet)");
  if (a.profiled) {  // weights shaped so that FFN activations follow a stated profile
    offload::ProfiledSynthOptions po;
    po.arch = a.arch;
    po.seed = a.seed;
    po.dtype = o.dtype;
    po.profile = offload::parse_activation_profile(a.activation_profile);
    po.format = a.format;
    po.neuron_major = a.neuron_major;
    po.layers = a.layers;
    if (a.format == "sf" && fs::is_directory(a.output))
      fail(Status::InvalidArgument, "--output '{}' is a directory; --format sf writes a file",
           a.output);
    arch::ModelDesc c;
    if (a.format == "hf") {  // a directory: written whole beside the target, then renamed
      AtomicDir dir(a.output, a.force);
      c = offload::write_profiled_opt(dir.path(), po);
      dir.commit();
    } else {
      c = offload::write_profiled_opt(a.output, po);
    }
    const auto fit = offload::fit_firing_rates(po.profile, c.ffn_dim);
    fmt::print(
        "wrote {} ({}{}, arch {}, seed {}, {}): hidden {}, {} layers, ffn {}; activation profile: "
        "target "
        "sparsity {:.4f}, hottest {:.0f}% of neurons carry {:.1f}% of firings, consecutive-input "
        "correlation {} "
        "(log-normal rates, sigma {:.3f}); measure what it achieves with `sparseflow profile`. "
        "Random weights, "
        "not a trained model\n",
        a.output, a.format == "sf" ? ".sf" : "HF checkpoint",
        a.neuron_major ? ", neuron-major" : "", a.arch, a.seed, a.dtype, c.hidden_size,
        c.num_hidden_layers, c.ffn_dim, 1 - fit.mean, po.profile.hot_fraction * 100,
        fit.hot_share * 100, po.profile.corr, fit.sigma);
    return;
  }
  if (a.layers != 0)
    fail(Status::InvalidArgument,
         "--layers is for --activation-profile models (the offloading experiments); add "
         "--activation-profile default, or leave --layers out");
  if (model::find_large_shape(a.arch) &&
      a.format == "hf") {  // published shapes, streamed (synth_large.hpp)
    AtomicDir dir(a.output, a.force);
    const auto c = model::write_large_hf(dir.path(), a.arch, a.seed, o.dtype);
    dir.commit();
    fmt::print(
        "wrote {} (HF checkpoint, arch {}, seed {}, {}): hidden {}, {} layers, ffn {}, vocab {}; "
        "random "
        "weights, not a trained model\n",
        a.output, a.arch, a.seed, a.dtype, c.hidden_size, c.num_hidden_layers, c.ffn_dim,
        c.vocab_size);
    return;
  }
  if (model::find_large_shape(a.arch) && a.format == "sf") {  // streamed straight into the .sf file
    if (fs::is_directory(a.output))
      fail(Status::InvalidArgument, "--output '{}' is a directory; --format sf writes a file",
           a.output);
    const auto r = model::write_large_sf(a.output, a.arch, a.seed, o.dtype, sparse24);
    fmt::print(
        "wrote {} (.sf{}, arch {}, seed {}, {}): hidden {}, {} layers, ffn {}, vocab {}; {} "
        "parameters, {} "
        "bytes; random weights, not a trained model\n",
        a.output, sparse24 ? ", 2:4 decoder linears" : "", a.arch, a.seed, a.dtype,
        r.config.hidden_size, r.config.num_hidden_layers, r.config.ffn_dim, r.config.vocab_size,
        r.parameters, r.file_bytes);
    return;
  }
  if (model::find_large_shape(a.arch))
    fail(Status::InvalidArgument,
         "--format {}: expected hf (a checkpoint directory) or sf (a .sf file)", a.format);
  // A bad --arch fails before anything is written, naming every shape there is.
  if (std::none_of(std::begin(model::kSynthShapes), std::end(model::kSynthShapes),
                   [&](const auto& s) { return s.name == a.arch; }))
    fail(Status::InvalidArgument, "--arch {}: unknown shape; expected tiny or one of {}", a.arch,
         model::large_shape_names());
  if (a.format == "hf") {
    if (fs::exists(a.output) && !fs::is_directory(a.output))
      fail(Status::InvalidArgument,
           "--output '{}' exists and is not a directory; --format hf writes a directory", a.output);
    AtomicDir dir(a.output, a.force);
    const auto c = model::write_tiny_opt(dir.path(), o);
    dir.commit();
    fmt::print(
        "wrote {} (HF checkpoint, arch {}, seed {}, {}): hidden {}, {} layers, {} heads, ffn {}, "
        "vocab {}; "
        "random weights, not a trained model\n",
        a.output, a.arch, a.seed, a.dtype, c.hidden_size, c.num_hidden_layers,
        c.num_attention_heads, c.ffn_dim, c.vocab_size);
  } else if (a.format == "sf") {
    if (fs::is_directory(a.output))
      fail(Status::InvalidArgument, "--output '{}' is a directory; --format sf writes a file",
           a.output);
    model::ConvertOptions co;
    co.neuron_major = a.neuron_major;
    co.sparsity = a.sparsity;
    co.extra_metadata = {
        {"source.format", "synth"},
        {"source.path", fmt::format("sparseflow synth --arch {} --seed {}", a.arch, a.seed)}};
    const auto rep = model::write_tiny_opt_sf(a.output, o, co);
    fmt::print(
        "wrote {} (.sf, arch {}, seed {}, {}): {} parameters, {} bytes; random weights, not a "
        "trained "
        "model\n",
        a.output, a.arch, a.seed, a.dtype, rep.parameters, rep.file_bytes);
  } else {
    fail(Status::InvalidArgument,
         "--format {}: expected hf (a checkpoint directory) or sf (a .sf file)", a.format);
  }
}

}  // namespace

void add_synth_command(CLI::App& app) {
  auto a = std::make_shared<SynthArgs>();
  auto* c =
      app.add_subcommand("synth", "Write a synthetic model with deterministic random weights");
  c->add_option("--arch", a->arch,
                "shape: tiny (an OPT of hidden 64, 2 layers, 4 heads, ffn 256), or a published "
                "model's shape, "
                "streamed to disk as hf or sf: " +
                    model::large_shape_names())
      ->capture_default_str();
  c->add_option("--output,-o", a->output, "directory (--format hf) or file (--format sf) to write")
      ->required();
  c->add_flag("--force", a->force,
              "replace --output if it exists (the old one stays until the new one is complete)");
  c->add_option("--format", a->format,
                "hf (config.json, model.safetensors, vocab.json, merges.txt) or sf")
      ->capture_default_str();
  c->add_option("--seed", a->seed, "random seed; the same seed gives the same bytes")
      ->capture_default_str();
  c->add_option("--dtype", a->dtype, "fp16, bf16 or fp32")->capture_default_str();
  c->add_option(
       "--activation-profile", a->activation_profile,
       "shape FFN activations: sparsity=0.97,hot=0.26:0.80,corr=0.5[,rho=0.95,noise=0.1,latent=K] "
       "(\"default\" = those values; docs/OFFLOAD.md). The OPT shapes (ReLU FFNs); .sf output "
       "streams")
      ->each([a](const std::string&) { a->profiled = true; });
  c->add_option("--sparsity", a->sparsity,
                "none, or 2:4 (with --format sf: every decoder linear pruned by magnitude and "
                "compressed, as "
                "`convert --sparsity 2:4` would)")
      ->capture_default_str();
  c->add_flag("--neuron-major", a->neuron_major,
              "with --format sf: store each FFN layer as neuron bundles");
  c->add_option("--layers", a->layers,
                "with --activation-profile: write only the first N decoder layers of --arch's "
                "shapes (0: all), "
                "for shapes whose whole model does not fit the disk")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->callback([a] { run_synth(*a); });
}

}  // namespace sf::cli
