#include "audit/measurements.hpp"

#include <algorithm>
#include <cstdlib>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace sf::audit {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kSeeDoc = "see \"Benchmark JSON\" in docs/DEPLOYMENT.md";

double number(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number())
    fail(Status::Format, "{}: expected a number in \"{}\", found {}; {}", where, key,
         it == j.end() ? std::string("no such field") : it->dump(), kSeeDoc);
  return it->get<double>();
}

std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// "4096x11008" -> {4096, 11008}
bool parse_size(const std::string& s, int64_t& n, int64_t& k) {
  auto x = s.find_first_of("xX");
  if (x == std::string::npos) return false;
  try {
    size_t used = 0;
    n = std::stoll(s.substr(0, x), &used);
    if (used != x) return false;
    k = std::stoll(s.substr(x + 1), &used);
    return used == s.size() - x - 1 && n > 0 && k > 0;
  } catch (const std::exception&) {
    return false;
  }
}

// n and k of a GEMM benchmark object: "n" and "k", or "size": "NxK"; false when absent.
bool gemm_shape(const json& j, const std::string& where, int64_t& n, int64_t& k) {
  if (j.contains("n") && j.contains("k")) {
    n = int64_t(number(j, "n", where));
    k = int64_t(number(j, "k", where));
    return true;
  }
  if (j.contains("size") && j["size"].is_string()) {
    if (!parse_size(j["size"].get<std::string>(), n, k))
      fail(Status::Format, "{}: expected \"size\" like \"4096x4096\", found {}; {}", where, j["size"].dump(), kSeeDoc);
    return true;
  }
  return false;
}

void check_provenance(const Provenance& p, const std::string& where, bool require) {
  if (p.gpu.empty())
    fail(Status::Format,
         "{}: a benchmark has no \"gpu\" (the device name it was measured on); the audit counts GPUs, so it "
         "needs results of `sparseflow benchmark --device cuda` (a CPU benchmark cannot be used); {}",
         where, kSeeDoc);
  if (require && (p.date.empty() || p.command.empty()))
    fail(Status::Format,
         "{}: shipped measurements must say when and how they were made, found date \"{}\" and command \"{}\"; "
         "add \"date\" and \"command\" ({})",
         where, p.date, p.command, kSeeDoc);
}

void parse_model(const json& j, const Provenance& prov, const std::string& where, bool require, Measurements& out) {
  check_provenance(prov, where, require);
  ModelMeasurement m;
  m.prov = prov;
  m.model = normalize_model_name(text(j, "model"));
  m.family = normalize_model_name(text(j, "architecture"));
  for (auto [key, field] : {std::pair{"layers", &m.layers}, std::pair{"hidden", &m.hidden}, std::pair{"ffn", &m.ffn}})
    if (j.contains(key)) *field = int64_t(number(j, key, where));
  if (m.model.empty() && (m.layers == 0 || m.hidden == 0))
    fail(Status::Format,
         "{}: a model benchmark needs \"model\" (e.g. \"opt-6.7b\") or \"layers\" and \"hidden\" to say what "
         "was measured; {}",
         where, kSeeDoc);
  std::string sp = text(j, "sparsity");
  if (sp.empty()) sp = text(j, "weights");
  if (sp == "2:4") m.sparse24 = true;
  else if (sp != "dense")
    fail(Status::Format, "{}: expected \"weights\" (or \"sparsity\") \"dense\" or \"2:4\", found \"{}\"; {}", where,
         sp, kSeeDoc);
  const char* list = j.contains("runs") ? "runs" : "rows";
  int i = 0;
  for (const auto& r : j[list]) {
    const std::string rw = fmt::format("{}: {}[{}]", where, list, i++);
    if (!r.is_object()) fail(Status::Format, "{}: expected an object, found {}", rw, r.dump());
    ModelRun run;
    run.batch = int64_t(number(r, "batch", rw));
    run.prompt_tokens = number(r, "prompt_tokens", rw);
    run.new_tokens = number(r, "new_tokens", rw);
    run.prefill_tps = number(r, "prefill_tokens_per_s", rw);
    run.decode_tps = number(r, "decode_tokens_per_s", rw);
    if (run.batch < 1 || !(run.prefill_tps > 0) || !(run.decode_tps > 0))
      fail(Status::Format, "{}: expected batch >= 1 and positive tokens/s, found batch {}, prefill {}, decode {}",
           rw, run.batch, run.prefill_tps, run.decode_tps);
    m.runs.push_back(run);
  }
  out.models.push_back(std::move(m));
}

void parse_gemm(const json& j, const Provenance& prov, const std::string& where, bool require, Measurements& out) {
  check_provenance(prov, where, require);
  int64_t n = 0, k = 0;
  const bool top_shape = gemm_shape(j, where, n, k);
  int i = 0;
  for (const auto& r : j["rows"]) {
    const std::string rw = fmt::format("{}: rows[{}]", where, i++);
    if (!r.is_object()) fail(Status::Format, "{}: expected an object, found {}", rw, r.dump());
    int64_t rn = n, rk = k;
    if (!gemm_shape(r, rw, rn, rk) && !top_shape)
      fail(Status::Format, "{}: no GEMM shape: expected \"n\" and \"k\" or \"size\" in the row or the benchmark; {}", rw, kSeeDoc);
    GemmRow row;
    row.m = int64_t(number(r, "m", rw));
    row.dense_ms = number(r, "dense_ms", rw);
    for (const char* key : {"sparseflow_ms", "sparse_ms"})
      if (r.contains(key) && r[key].is_number()) {
        row.sparse_ms = r[key].get<double>();
        break;
      }
    auto it = std::find_if(out.gemms.begin(), out.gemms.end(), [&](const GemmMeasurement& g) {
      return g.prov.origin == prov.origin && g.prov.gpu == prov.gpu && g.n == rn && g.k == rk;
    });
    if (it == out.gemms.end()) {
      out.gemms.push_back(GemmMeasurement{prov, rn, rk, {}});
      it = std::prev(out.gemms.end());
    }
    it->rows.push_back(row);
  }
}

void collect(const json& j, Provenance prov, const std::string& where, bool require, Measurements& out) {
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) collect(j[i], prov, fmt::format("{}[{}]", where, i), require, out);
    return;
  }
  if (!j.is_object()) return;
  if (auto s = text(j, "gpu"); !s.empty()) prov.gpu = s;
  if (auto s = text(j, "date"); !s.empty()) prov.date = s;
  if (auto s = text(j, "command"); !s.empty()) prov.command = s;
  // Model benchmarks have "runs", or "rows" of tokens/s; GEMM benchmarks "rows" of milliseconds.
  const bool model_rows = j.contains("rows") && j["rows"].is_array() && !j["rows"].empty() &&
                          j["rows"][0].is_object() && j["rows"][0].contains("decode_tokens_per_s");
  if ((j.contains("runs") && j["runs"].is_array()) || model_rows) parse_model(j, prov, where, require, out);
  else if (j.contains("rows") && j["rows"].is_array()) parse_gemm(j, prov, where, require, out);
  for (const char* key : {"results", "benchmarks", "cases", "shapes", "entries"})
    if (j.contains(key) && j[key].is_array()) collect(j[key], prov, fmt::format("{}.{}", where, key), require, out);
}

}  // namespace

void parse_measurements(const json& doc, const std::string& origin, bool require_provenance, Measurements& out) {
  Provenance prov;
  prov.origin = origin;
  collect(doc, prov, origin, require_provenance, out);
}

void load_measurement_file(const fs::path& file, bool require_provenance, Measurements& out) {
  if (!fs::exists(file))
    fail(Status::Io, "cannot open benchmark file \"{}\"; write one with `sparseflow benchmark ... --json {}`",
         file.string(), file.string());
  json doc = json::parse(read_text_file(file.string(), "benchmark file"), nullptr,
                         /*allow_exceptions=*/false);
  if (doc.is_discarded())
    fail(Status::Format, "\"{}\" is not valid JSON; expected the file that `sparseflow benchmark --json` writes",
         file.string());
  const size_t before = out.models.size() + out.gemms.size();
  parse_measurements(doc, file.string(), require_provenance, out);
  if (out.models.size() + out.gemms.size() == before && !require_provenance)
    fail(Status::Format,
         "\"{}\" holds no benchmark: expected objects with \"rows\" (GEMM) or \"runs\" (model); {}",
         file.string(), kSeeDoc);
}

fs::path shipped_measurement_dir() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("SPARSEFLOW_DATA_DIR"); env && *env) candidates.push_back(fs::path(env) / "measured");
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "share" / "sparseflow" / "measured");
#ifdef SF_SOURCE_DATA_DIR
  candidates.push_back(fs::path(SF_SOURCE_DATA_DIR) / "measured");
#endif
  for (const auto& c : candidates)
    if (fs::is_directory(c, ec)) return c;
  return {};
}

int load_measurement_dir(const fs::path& dir, Measurements& out) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) load_measurement_file(f, /*require_provenance=*/true, out);
  return int(files.size());
}

}  // namespace sf::audit
