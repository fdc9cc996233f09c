// sparseflow inspect: what a .sf file holds (format version, config, metadata, tensor table,
// totals) and whether every checksum holds. Exit 0 when intact, 1 when a checksum fails (the table
// is still printed, to help find the damage), 2 when the file cannot be parsed at all.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/table.hpp"
#include "core/error.hpp"
#include "format/sf_file.hpp"

namespace sf::cli {

namespace {

struct InspectArgs {
  std::string path;
  bool json = false, no_verify = false;
};

std::string scalar(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

void run_inspect(const InspectArgs& a) {
  sff::File f = sff::File::open(a.path, {.verify_checksums = false});
  std::string verification = "skipped (--no-verify)";
  bool ok = true;
  if (!a.no_verify) {
    try {
      f.verify_checksums();
      verification = "ok: every tensor matches its xxh64 checksum";
    } catch (const Error& e) {
      verification = std::string("FAILED: ") + e.what();
      ok = false;
    }
  }
  uint64_t data_bytes = 0;
  int64_t params = 0;
  std::map<std::string, int> kinds;
  for (const auto& e : f.entries()) {
    for (const auto& p : e.parts) data_bytes += p.size;
    if (e.name.rfind("tokenizer.", 0) != 0) params += e.numel();
    kinds[e.kind]++;
  }

  if (a.json) {
    nlohmann::ordered_json j = {{"path", a.path},
                                {"format_version", f.version()},
                                {"file_bytes", f.file_size()},
                                {"header_bytes", f.header_size()},
                                {"architecture", f.architecture()},
                                {"config", f.config()},
                                {"metadata", f.metadata()}};
    auto t = nlohmann::ordered_json::array();
    for (const auto& e : f.entries()) {
      nlohmann::ordered_json x = {
          {"name", e.name}, {"kind", e.kind}, {"dtype", dtype_name(e.dtype)}, {"shape", e.shape}};
      if (!e.padded_shape.empty()) x["padded_shape"] = e.padded_shape;
      for (const auto& p : e.parts)
        x["parts"].push_back({{"role", p.role},
                              {"offset", p.offset},
                              {"size", p.size},
                              {"xxh64", fmt::format("{:016x}", p.checksum)}});
      t.push_back(x);
    }
    j["tensors"] = t;
    j["totals"] = {{"tensors", f.entries().size()},
                   {"parameters", params},
                   {"data_bytes", data_bytes},
                   {"kinds", kinds}};
    j["verification"] = {{"ok", ok}, {"checked", !a.no_verify}, {"message", verification}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{}\n  format version {}, {} bytes ({} header), architecture {}\n", a.path,
               f.version(), f.file_size(), f.header_size(), f.architecture());
    fmt::print("\nconfig:\n");
    for (const auto& [k, v] : f.config().items()) fmt::print("  {:<32} {}\n", k, scalar(v));
    fmt::print("\nmetadata:\n");
    for (const auto& [k, v] : f.metadata().items()) fmt::print("  {:<32} {}\n", k, scalar(v));
    fmt::print("\ntensors:\n");
    Table t({"name", "kind", "dtype", "shape", "bytes"});
    t.align_left(1);
    t.align_left(2);
    t.align_left(3);
    for (const auto& e : f.entries()) {
      uint64_t b = 0;
      for (const auto& p : e.parts) b += p.size;
      t.add_row({e.name, e.kind, std::string(dtype_name(e.dtype)), format_shape(e.shape),
                 std::to_string(b)});
    }
    fmt::print("{}", t.str());
    std::string kind_list;
    for (const auto& [k, n] : kinds)
      kind_list += fmt::format("{}{} {}", kind_list.empty() ? "" : ", ", n, k);
    fmt::print("\ntotals: {} tensors ({}), {} parameters, {} data bytes\n", f.entries().size(),
               kind_list, params, data_bytes);
    fmt::print("verification: {}\n", verification);
  }
  if (!ok) throw CLI::RuntimeError(1);
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  auto* c = app.add_subcommand(
      "inspect", "Show a .sf model file's config, metadata and tensors, and verify it");
  c->add_option("model", a->path, "the .sf file")->required();
  c->add_flag("--json", a->json, "print one JSON object");
  c->add_flag("--no-verify", a->no_verify,
              "skip the checksum pass (the layout is still validated)");
  c->callback([a] { run_inspect(*a); });
}

}  // namespace sf::cli
