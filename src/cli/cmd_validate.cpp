// sparseflow validate: is every 2-D floating tensor of a safetensors file 2:4 along its last
// dimension? Exit 0 when all checked tensors are, 1 when some are not, 2 when the file is
// unreadable or malformed.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>

#include "cli/commands.hpp"
#include "cli/table.hpp"
#include "cli/tensor_view.hpp"
#include "format/safetensors.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::cli {

namespace {

struct ValidateOptions {
  std::string input;
  bool json = false;
};

void run_validate(const ValidateOptions& o) {
  const st::File file = st::File::open(o.input);

  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  Table table({"tensor", "dtype", "shape", "2:4"});
  table.align_left(3);  // verdicts are sentences
  int checked = 0, sparse = 0, other = 0, unsupported = 0;
  for (const auto& t : file.tensors()) {
    nlohmann::ordered_json j = {
        {"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}};
    if (!is_2d_float(t)) {
      j["status"] = "skipped";
      j["reason"] = dtype_is_float(t.dtype) ? "not 2-D" : "not a floating dtype";
      tensors.push_back(std::move(j));
      ++other;
      continue;
    }
    const std::string why_not = not_sparsifiable_reason(t);
    const std::vector<std::string> head = {t.name, std::string(dtype_name(t.dtype)),
                                           format_shape(t.shape)};
    auto row = [&](std::string verdict) {
      auto cells = head;
      cells.push_back(std::move(verdict));
      table.add_row(std::move(cells));
    };
    if (!why_not.empty()) {
      j["status"] = "skipped";
      j["reason"] = why_not;
      row("skipped: " + why_not);
      ++unsupported;
    } else {
      ++checked;
      const MatrixCopy m = nonzero_matrix(file.data(t), t.dtype, t.shape[0], t.shape[1]);
      if (const auto v = s24::find_violation(m.view)) {
        j["status"] = "violation";
        j["violation"] = {{"row", v->row},
                          {"group", v->group},
                          {"columns", {4 * v->group, 4 * v->group + 3}},
                          {"nonzeros", v->nonzeros}};
        row(fmt::format("NO: row {}, group {} (columns {}-{}) has {} nonzeros", v->row, v->group,
                        4 * v->group, 4 * v->group + 3, v->nonzeros));
      } else {
        j["status"] = "2:4";
        row("yes");
        ++sparse;
      }
    }
    tensors.push_back(std::move(j));
  }

  const bool ok = sparse == checked;
  if (o.json) {
    const nlohmann::ordered_json out = {{"file", o.input},
                                        {"ok", ok},
                                        {"checked", checked},
                                        {"sparse24", sparse},
                                        {"not_checked", other + unsupported},
                                        {"tensors", tensors}};
    fmt::print("{}\n", out.dump(2));
  } else {
    if (table.rows()) fmt::print("{}", table.str());
    if (other > 0) fmt::print("{} tensor(s) that are not 2-D floating were not checked.\n", other);
    if (checked == 0)
      fmt::print(
          "{}: no tensor could be checked (none is 2-D floating with a last dimension that "
          "is a multiple of 4).\n",
          o.input);
    else if (ok)
      fmt::print("{}: all {} checked tensor(s) are 2:4 along their last dimension.\n", o.input,
                 checked);
    else
      fmt::print(
          "{}: {} of {} checked tensor(s) are NOT 2:4. Run `sparseflow prune` to make them 2:4.\n",
          o.input, checked - sparse, checked);
  }
  if (!ok) throw CLI::RuntimeError(1);
}

}  // namespace

void add_validate_command(CLI::App& app) {
  auto o = std::make_shared<ValidateOptions>();
  CLI::App* cmd = app.add_subcommand("validate",
                                     "Check that the 2-D floating tensors of a safetensors file "
                                     "are 2:4 along their last dimension");
  cmd->footer(
      "2:4 means at most 2 nonzeros in each aligned group of 4 (NaN counts as nonzero).\n"
      "Exit status: 0 all checked tensors are 2:4, 1 some are not (the first violation of each is "
      "shown), 2 the file is unreadable or malformed.");
  cmd->add_option("--input,-i", o->input, "safetensors file to check")->required();
  cmd->add_flag("--json", o->json, "print one JSON object instead of a table");
  cmd->callback([o] { run_validate(*o); });
}

}  // namespace sf::cli
