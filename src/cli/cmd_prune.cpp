// sparseflow prune: make the 2-D floating tensors of a safetensors file 2:4 along their last
// dimension (the K of y = x W^T), keeping them dense, with the same names, dtypes and shapes:
// magnitude, Wanda (given activation norms) or SparseGPT (given input Hessians) masks.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <regex>

#include "cli/commands.hpp"
#include "cli/table.hpp"
#include "cli/tensor_view.hpp"
#include "core/error.hpp"
#include "core/output_path.hpp"
#include "format/safetensors.hpp"
#include "sparse24/sparse24.hpp"
#include "sparse24/sparsegpt.hpp"

namespace sf::cli {

namespace {

struct PruneOptions {
  std::string input, output, method = "magnitude", norms_path, hessians_path, only;
  double dampening = 0.01;
  bool dampening_given = false;
  bool force = false;
};

enum class Action { Copy, Skip, Prune };

struct Plan {
  const st::TensorInfo* tensor = nullptr;
  Action action = Action::Copy;
  std::string note;                         // why a 2-D floating tensor was skipped
  std::vector<float> norms;                 // Wanda: one activation norm per input channel
  const st::TensorInfo* hessian = nullptr;  // SparseGPT: [K, K] in the --hessians file
};

// The Wanda norms for weight `t`: a 1-D F32 tensor of length K under the same name.
std::vector<float> load_norms(const st::File& norms, const st::TensorInfo& t) {
  const int64_t k = t.shape[1];
  const st::TensorInfo* n = norms.find(t.name);
  if (!n)
    fail(Status::NotFound,
         "--activation-norms file '{}' has no tensor '{}'; expected a 1-D F32 "
         "tensor of length {} (the L2 norm of each input channel) under the weight's name. Add it, "
         "or leave '{}' out with --only",
         norms.path(), t.name, k, t.name);
  if (n->dtype != DType::F32 || n->shape != std::vector<int64_t>{k})
    fail(Status::InvalidArgument,
         "--activation-norms file '{}': tensor '{}' is {} {}, expected F32 "
         "[{}] (one norm per input channel of the weight {})",
         norms.path(), t.name, dtype_name(n->dtype), format_shape(n->shape), k,
         format_shape(t.shape));
  std::vector<float> v(static_cast<size_t>(k));
  std::memcpy(v.data(), norms.data(*n).data(), v.size() * sizeof(float));
  for (size_t j = 0; j < v.size(); ++j)
    if (!std::isfinite(v[j]) || v[j] < 0)
      fail(Status::InvalidArgument,
           "--activation-norms file '{}': tensor '{}' entry {} is {}; norms "
           "must be finite and non-negative",
           norms.path(), t.name, j, v[j]);
  return v;
}

// The SparseGPT Hessian of weight `t` (checked here, read when its turn comes: at K^2 doubles each
// they need not all fit in memory at once): [K, K] F32 or F64 under the weight's name.
const st::TensorInfo& find_hessian(const st::File& h, const st::TensorInfo& t) {
  const int64_t k = t.shape[1];
  const st::TensorInfo* n = h.find(t.name);
  if (!n)
    fail(
        Status::NotFound,
        "--hessians file '{}' has no tensor '{}'; expected the [{}, {}] input Hessian 2/n X^T X of "
        "that weight (X: its calibration inputs, [n, {}]) under the weight's name. Add it, or "
        "leave '{}' out with --only",
        h.path(), t.name, k, k, k, t.name);
  if ((n->dtype != DType::F32 && n->dtype != DType::F64) || n->shape != std::vector<int64_t>{k, k})
    fail(Status::InvalidArgument,
         "--hessians file '{}': tensor '{}' is {} {}, expected F32 or F64 [{}, {}] (one row and "
         "column per input channel of the weight {})",
         h.path(), t.name, dtype_name(n->dtype), format_shape(n->shape), k, k,
         format_shape(t.shape));
  return *n;
}

struct PruneStats {
  double norm2 = 0, err2 = 0;  // ||W||_F^2 and ||W - W_pruned||_F^2
  int64_t nonzero_before = 0, nonzero_after = 0;
  double output_error = -1;  // SparseGPT: ||(W - W_pruned) X^T|| / ||W X^T||
};

// SparseGPT: the weights it keeps move too, so the new values come from the solver, in fp64.
std::vector<uint8_t> prune_tensor_sparsegpt(const st::File& file, const st::File& hessians,
                                            const Plan& p, double dampening, PruneStats& s) {
  const st::TensorInfo& t = *p.tensor;
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const auto bytes = file.data(t);
  const MatrixCopy m = values_matrix(bytes, t.dtype, rows, cols);
  const auto hb = hessians.data(*p.hessian);
  std::vector<double> h(size_t(cols * cols));
  const std::vector<uint8_t> aligned = copy_bytes(hb);
  for (size_t i = 0; i < h.size(); ++i) h[i] = load_as_double(aligned.data(), p.hessian->dtype, i);
  s24::SparseGptOptions opt;
  opt.dampening = dampening;
  s24::SparseGptResult r;
  try {
    r = s24::sparsegpt_prune(m.view, h, opt);
  } catch (const Error& e) {
    fail(e.status(), "{}: {}", t.name, e.what());
  }
  std::vector<uint8_t> out = copy_bytes(bytes);
  for (size_t i = 0; i < r.weight.size(); ++i) {
    const double w = load_as_double(out.data(), t.dtype, i);
    if (t.dtype == DType::F64)
      std::memcpy(out.data() + 8 * i, &r.weight[i], 8);
    else
      store_from_float(out.data(), t.dtype, i, float(r.weight[i]));
    const double wp = load_as_double(out.data(), t.dtype, i);
    s.norm2 += w * w;
    s.err2 += (w - wp) * (w - wp);
    s.nonzero_before += w != 0;
    s.nonzero_after += wp != 0;
  }
  s.output_error = r.relative_output_error();
  return out;
}

// Prunes one tensor; returns its new bytes.
std::vector<uint8_t> prune_tensor(const st::File& file, const Plan& p, PruneStats& s) {
  const st::TensorInfo& t = *p.tensor;
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const auto bytes = file.data(t);
  MatrixCopy m = values_matrix(bytes, t.dtype, rows, cols);
  const std::vector<uint8_t> mask =
      p.norms.empty() ? s24::magnitude_mask(m.view) : s24::wanda_mask(m.view, p.norms);

  // Statistics from the original values: what the mask drops is exactly W - W_pruned.
  const bool f64 = t.dtype == DType::F64;
  const void* orig = f64 ? static_cast<const void*>(bytes.data()) : m.storage.data();
  for (size_t i = 0; i < mask.size(); ++i) {
    const double w = load_as_double(orig, t.dtype, i);
    s.norm2 += w * w;
    s.nonzero_before += w != 0;  // NaN != 0 too
    if (mask[i])
      s.nonzero_after += w != 0;
    else
      s.err2 += w * w;
  }

  if (!f64) {  // m.storage is a copy of the tensor in its own dtype: prune it in place
    s24::apply_mask(m.storage.data(), t.dtype, rows, cols, mask);
    return std::move(m.storage);
  }
  std::vector<uint8_t> out = copy_bytes(bytes);
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) std::memset(out.data() + 8 * i, 0, 8);
  return out;
}

std::string percent(int64_t part, int64_t whole) {
  return whole ? fmt::format("{:.1f}%", 100.0 * double(part) / double(whole)) : "-";
}

void run_prune(const PruneOptions& o) {
  const bool wanda = o.method == "wanda", sparsegpt = o.method == "sparsegpt";
  if (sparsegpt && o.hessians_path.empty())
    fail(Status::InvalidArgument,
         "--method sparsegpt needs --hessians HESSIANS.safetensors (for each weight, its [K, K] "
         "input Hessian 2/n X^T X under the same name); `sparseflow convert --method sparsegpt` "
         "measures them itself for a whole model");
  if (!sparsegpt && !o.hessians_path.empty())
    fail(Status::InvalidArgument,
         "--hessians is only used by --method sparsegpt; add --method sparsegpt or drop "
         "--hessians");
  if (!sparsegpt && o.dampening_given)
    fail(Status::InvalidArgument,
         "--dampening is only used by --method sparsegpt; add --method sparsegpt or drop it");
  if (wanda && o.norms_path.empty())
    fail(
        Status::InvalidArgument,
        "--method wanda needs --activation-norms NORMS.safetensors (for "
        "each weight, a 1-D F32 tensor of per-input-channel activation norms under the same name)");
  if (!wanda && !o.norms_path.empty())
    fail(Status::InvalidArgument,
         "--activation-norms is only used by --method wanda; add "
         "--method wanda or drop --activation-norms");
  std::optional<std::regex> only;
  if (!o.only.empty()) {
    try {
      only.emplace(o.only, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail(Status::InvalidArgument, "--only '{}' is not a valid regular expression ({})", o.only,
           e.what());
    }
  }

  check_output(
      {o.output, "--output"},
      {{o.input, "--input"}, {o.norms_path, "--activation-norms"}, {o.hessians_path, "--hessians"}},
      o.force);
  const st::File file = st::File::open(o.input);
  std::optional<st::File> norms, hessians;
  if (wanda) norms.emplace(st::File::open(o.norms_path));
  if (sparsegpt) hessians.emplace(st::File::open(o.hessians_path));

  // Decide everything (and load every norm) before the slow part, so mistakes surface at once.
  std::vector<Plan> plans;
  int n_prune = 0;
  for (const auto& t : file.tensors()) {
    Plan p;
    p.tensor = &t;
    if (is_2d_float(t) && (!only || std::regex_search(t.name, *only))) {
      p.note = not_sparsifiable_reason(t);
      if (!p.note.empty()) {
        if (only && t.numel() != 0)
          fail(Status::UnsupportedShape,
               "--only '{}' matches '{}' {}, whose {}, so it cannot be "
               "2:4 (groups of 4 along the last dimension). Narrow --only so it does not match it",
               o.only, t.name, format_shape(t.shape), p.note);
        p.action = Action::Skip;
      } else {
        p.action = Action::Prune;
        if (wanda) p.norms = load_norms(*norms, t);
        if (sparsegpt) p.hessian = &find_hessian(*hessians, t);
        ++n_prune;
      }
    }
    plans.push_back(std::move(p));
  }
  if (only && n_prune == 0)
    fail(Status::NotFound,
         "--only '{}' matches no 2-D floating tensor of '{}' ({} tensors); check "
         "the pattern (it is searched for anywhere in each name, ECMAScript syntax)",
         o.only, o.input, file.tensors().size());

  std::vector<std::vector<uint8_t>> pruned;  // owns the new bytes until they are written
  pruned.reserve(size_t(n_prune));
  std::vector<st::TensorToWrite> out;
  std::vector<std::string> head = {"tensor",         "dtype", "shape",
                                   "nonzero before", "kept",  "rel. error ||W-Wp||/||W||"};
  if (sparsegpt) head.push_back("rel. output error ||(W-Wp)X||/||WX||");
  Table table(head);
  PruneStats total;
  std::vector<std::string> skipped;
  int copied = 0;
  for (const Plan& p : plans) {
    const st::TensorInfo& t = *p.tensor;
    std::span<const uint8_t> data = file.data(t);
    if (p.action == Action::Prune) {
      PruneStats s;
      pruned.push_back(sparsegpt ? prune_tensor_sparsegpt(file, *hessians, p, o.dampening, s)
                                 : prune_tensor(file, p, s));
      data = pruned.back();
      const int64_t n = t.numel();
      std::vector<std::string> row = {
          t.name,
          std::string(dtype_name(t.dtype)),
          format_shape(t.shape),
          percent(s.nonzero_before, n),
          percent(s.nonzero_after, n),
          format_number(s.norm2 > 0 ? std::sqrt(s.err2 / s.norm2) : 0.0)};
      if (sparsegpt) row.push_back(format_number(s.output_error));
      table.add_row(row);
      total.norm2 += s.norm2;
      total.err2 += s.err2;
    } else if (p.action == Action::Skip) {
      skipped.push_back(fmt::format("{} {}: {}", t.name, format_shape(t.shape), p.note));
      ++copied;
    } else {
      ++copied;
    }
    out.push_back({t.name, t.dtype, t.shape, data});
  }
  st::write_file(o.output, out, file.metadata());

  if (n_prune) {
    if (n_prune > 1) {
      std::vector<std::string> row = {
          "(all pruned)",
          "",
          "",
          "",
          "",
          format_number(total.norm2 > 0 ? std::sqrt(total.err2 / total.norm2) : 0.0)};
      if (sparsegpt) row.push_back("");
      table.add_row(row);
    }
    fmt::print("{}", table.str());
  }
  for (const auto& s : skipped) fmt::print("skipped (copied unchanged): {}\n", s);
  fmt::print("wrote {}: {} tensor(s) pruned to 2:4 ({}), {} copied unchanged\n", o.output, n_prune,
             o.method, copied);
}

}  // namespace

void add_prune_command(CLI::App& app) {
  auto o = std::make_shared<PruneOptions>();
  CLI::App* cmd = app.add_subcommand(
      "prune",
      "Prune the 2-D floating tensors of a safetensors file to 2:4 along their last dimension");
  cmd->footer(
      "Keeps 2 of every aligned group of 4 and writes the tensors, still dense, with the same "
      "names, dtypes and shapes. Other tensors are copied unchanged; __metadata__ is kept. The "
      "output is written atomically, never over the input; an existing output is replaced only "
      "with --force.\n"
      "Tensors whose last dimension is not a multiple of 4 are skipped, with a note, unless --only "
      "names them (then it is an error).\n"
      "Wanda norms file: a safetensors file holding, for each weight to prune, a 1-D F32 tensor "
      "of length K (the weight's last dimension) under the weight's own name: entry j is the L2 "
      "norm of input channel j over calibration tokens. A weight's scores are |W_ij| * norm_j.\n"
      "SparseGPT Hessians file: for each weight to prune, an F32 or F64 [K, K] tensor under the "
      "weight's own name, H = 2/n X^T X over its calibration inputs X [n, K] (any positive scale "
      "gives the same result). SparseGPT also updates the weights it keeps, so the output differs "
      "from the input at kept positions too.");
  cmd->add_option("--input,-i", o->input, "safetensors file to prune")->required();
  cmd->add_option("--output,-o", o->output, "safetensors file to write (not the input)")
      ->required();
  cmd->add_flag("--force", o->force,
                "replace --output if it exists (the old file stays until the new one is complete)");
  cmd->add_option("--method", o->method,
                  "magnitude: keep the 2 largest |w| of each group; wanda: keep the 2 largest "
                  "|w| * activation norm; sparsegpt: OBS selection and update from each weight's "
                  "input Hessian")
      ->check(CLI::IsMember({"magnitude", "wanda", "sparsegpt"}))
      ->capture_default_str();
  cmd->add_option(
      "--activation-norms", o->norms_path,
      "safetensors file of per-input-channel activation norms (--method wanda; see above)");
  cmd->add_option("--hessians", o->hessians_path,
                  "safetensors file of per-weight input Hessians (--method sparsegpt; see above)");
  cmd->add_option("--dampening", o->dampening,
                  "sparsegpt: add this fraction of the Hessian's mean diagonal to its diagonal "
                  "before inverting it")
      ->capture_default_str()
      ->each([o](const std::string&) { o->dampening_given = true; });
  cmd->add_option(
      "--only", o->only,
      "prune only tensors whose name matches this regular expression (searched anywhere "
      "in the name, ECMAScript syntax), e.g. 'fc[12]\\.weight$'");
  cmd->callback([o] { run_prune(*o); });
}

}  // namespace sf::cli
