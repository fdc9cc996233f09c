#include "audit/serve_measurements.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/input_file.hpp"

namespace sf::audit {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "sparseflow-bench-serve/1";
constexpr const char* kSeeDoc = "see \"bench-serve JSON\" in docs/SERVING.md";

const json& field(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end())
    fail(Status::Format,
         "{}: no \"{}\"; expected the file `sparseflow bench-serve --json` writes ({})", where, key,
         kSeeDoc);
  return *it;
}

double number(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_number())
    fail(Status::Format, "{}: expected a number in \"{}\", found {}; {}", where, key, v.dump(),
         kSeeDoc);
  return v.get<double>();
}

int64_t integer(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_number_integer())
    fail(Status::Format, "{}: expected an integer in \"{}\", found {}; {}", where, key, v.dump(),
         kSeeDoc);
  return v.get<int64_t>();
}

std::string text(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

double p99(const json& summary, const char* key, const std::string& where) {
  const json& p = field(summary, key, where);
  if (!p.is_object())
    fail(Status::Format, "{}: expected an object in \"{}\", found {}; {}", where, key, p.dump(),
         kSeeDoc);
  return number(p, "p99", where + "." + key);
}

}  // namespace

ServeMeasurement parse_serve_measurement(const json& doc, const std::string& origin) {
  if (!doc.is_object() || text(doc, "format") != kFormat)
    fail(Status::Format,
         "\"{}\" is not a bench-serve result: expected an object with \"format\": \"{}\", found "
         "{}; write one with `sparseflow bench-serve ... --json FILE`",
         origin, kFormat,
         doc.is_object() && doc.contains("format") ? doc["format"].dump() : "no \"format\"");
  ServeMeasurement m;
  m.prov.origin = origin;
  m.prov.gpu = text(doc, "gpu");
  m.prov.date = text(doc, "date");
  m.prov.command = text(doc, "command");
  const json& server = field(doc, "server", origin);
  m.served_model = text(server, "model");
  const std::string pw = origin + ": parameters";
  const json& params = field(doc, "parameters", origin);
  m.prompt_tokens = integer(params, "prompt_tokens", pw);
  m.max_tokens = integer(params, "max_tokens", pw);
  if (const auto c = params.find("concurrency"); c != params.end() && c->is_number_integer())
    m.concurrency = c->get<int64_t>();
  if (const auto c = params.find("chat"); c != params.end() && c->is_boolean())
    m.chat = c->get<bool>();
  if (const auto l = params.find("latency_limit_ms"); l != params.end() && !l->is_null()) {
    if (!l->is_number() || !(l->get<double>() > 0))
      fail(Status::Format, "{}: expected \"latency_limit_ms\" a number > 0 or null, found {}", pw,
           l->dump());
    m.latency_limit_ms = l->get<double>();
  }
  const json& points = field(doc, "points", origin);
  if (!points.is_array() || points.empty())
    fail(Status::Format, "{}: expected \"points\", a non-empty array, found {}; {}", origin,
         points.is_array() ? "[]" : points.dump(), kSeeDoc);
  for (size_t i = 0; i < points.size(); ++i) {
    const std::string where = fmt::format("{}: points[{}]", origin, i);
    const json& pt = points[i];
    if (!pt.is_object()) fail(Status::Format, "{}: expected an object", where);
    ServePoint p;
    const json& rate = field(pt, "rate", where);
    if (!rate.is_string() && !rate.is_number())
      fail(Status::Format, "{}: expected \"rate\" a number or \"inf\", found {}", where,
           rate.dump());
    p.rate = rate.is_string() ? rate.get<std::string>() : fmt::format("{:g}", rate.get<double>());
    const std::string sw = where + ".summary";
    const json& s = field(pt, "summary", where);
    if (!s.is_object()) fail(Status::Format, "{}: expected an object", sw);
    p.requests = integer(s, "requests", sw);
    p.succeeded = integer(s, "succeeded", sw);
    p.errors = integer(s, "errors", sw);
    p.duration_s = number(s, "duration_s", sw);
    p.request_throughput = number(s, "request_throughput", sw);
    p.output_tokens_per_s = number(s, "output_tokens_per_s", sw);
    p.ttft_p99_ms = p99(s, "ttft_ms", sw);
    p.itl_p99_ms = p99(s, "itl_ms", sw);
    p.e2e_p99_ms = p99(s, "e2e_ms", sw);
    if (m.latency_limit_ms) {
      p.good = integer(s, "good", sw);
      p.goodput = number(s, "goodput", sw);
    }
    if (p.requests < 0 || p.succeeded < 0 || p.errors < 0 || p.good < 0 || p.good > p.succeeded ||
        !(p.goodput >= 0) || !(p.request_throughput >= 0))
      fail(Status::Format,
           "{}: inconsistent counts: {} requests, {} succeeded, {} errors, {} good, goodput {}", sw,
           p.requests, p.succeeded, p.errors, p.good, p.goodput);
    m.points.push_back(p);
  }
  return m;
}

ServeMeasurement load_serve_measurement(const fs::path& file) {
  if (!fs::exists(file))
    fail(Status::Io,
         "cannot open bench-serve file \"{}\"; write one with `sparseflow bench-serve ... --json "
         "{}`",
         file.string(), file.string());
  const json doc = json::parse(read_text_file(file.string(), "bench-serve file"), nullptr, false);
  if (doc.is_discarded())
    fail(Status::Format,
         "\"{}\" is not valid JSON; expected the file that `sparseflow bench-serve --json` writes",
         file.string());
  return parse_serve_measurement(doc, file.string());
}

}  // namespace sf::audit
