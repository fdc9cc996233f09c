#include "report/svg_plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace sf::report {

namespace {

// Colour-blind-safe palette (Okabe-Ito); dense baselines are drawn grey and dashed.
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
constexpr const char* kBaselineColor = "#777777";

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A round step (1, 2 or 5 x 10^k) that cuts `range` into about `parts` intervals.
double nice_step(double range, int parts) {
  if (!(range > 0)) return 1;
  const double raw = range / parts;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (f * p >= raw * (1 - 1e-9)) return f * p;
  return 10 * p;
}

std::string tick_label(double v, bool log2) {
  if (log2 && v >= 1024 && std::fmod(v, 1024) == 0) return fmt::format("{}k", v / 1024);
  if (std::fabs(v) >= 1e6) return fmt::format("{:.3g}", v);
  return fmt::format("{:g}", std::round(v * 1e6) / 1e6);
}

void header(std::string& s, const std::string& title) {
  s += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{3}</text>\n",
      Frame::kCanvasW, Frame::kCanvasH, Frame::kLeft + Frame::kWidth / 2, esc(title));
}

// Frame, grid lines, ticks and labels of both axes.
void axes(std::string& s, const Axis& x, const Axis& y, const std::string& xl, const std::string& yl, bool x_ticks) {
  const double bottom = Frame::kTop + Frame::kHeight, right = Frame::kLeft + Frame::kWidth;
  for (double t : y.ticks) {
    const double py = y.map(t);
    s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"#e5e5e5\"/>\n",
                     Frame::kLeft, py, right, py);
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"end\">{}</text>\n", Frame::kLeft - 6, py + 4,
                     esc(tick_label(t, false)));
  }
  if (x_ticks)
    for (double t : x.ticks) {
      const double px = x.map(t);
      s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"#000\"/>\n", px, bottom,
                       px, bottom + 5);
      s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", px, bottom + 18,
                       esc(tick_label(t, x.log2)));
    }
  s += fmt::format("<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" fill=\"none\" stroke=\"#000\"/>\n",
                   Frame::kLeft, Frame::kTop, Frame::kWidth, Frame::kHeight);
  s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", Frame::kLeft + Frame::kWidth / 2,
                   bottom + 40, esc(xl));
  const double cy = Frame::kTop + Frame::kHeight / 2;
  s += fmt::format("<text x=\"20\" y=\"{:.2f}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {:.2f})\">{}</text>\n",
                   cy, cy, esc(yl));
}

bool is_baseline(const std::string& name) { return name.rfind("dense", 0) == 0; }

// y range over the data: from min(0, lowest) up to a round value above the highest point.
std::pair<double, double> data_y_range(const LineChart& c) {
  double lo = 0, hi = -INFINITY;
  for (const auto& s : c.series)
    for (auto [x, y] : s.points) {
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  if (!std::isfinite(hi) || hi <= lo) hi = lo + 1;
  const double step = nice_step((hi - lo) * 1.05, 5);
  return {std::floor(lo / step) * step, std::ceil(hi * 1.05 / step) * step};
}

}  // namespace

double Axis::map(double v) const {
  const double a = log2 ? std::log2(lo) : lo, b = log2 ? std::log2(hi) : hi;
  const double t = ((log2 ? std::log2(v) : v) - a) / (b - a);
  return px_lo + t * (px_hi - px_lo);
}

Axis line_chart_x_axis(const LineChart& c) {
  Axis ax;
  ax.log2 = c.log2_x;
  ax.px_lo = Frame::kLeft;
  ax.px_hi = Frame::kLeft + Frame::kWidth;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : c.series)
    for (auto [x, y] : s.points) {
      if (c.log2_x && !(x > 0))
        fail(Status::InvalidArgument, "a log2 x axis needs x > 0, found {} in series \"{}\"", x, s.name);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  if (!std::isfinite(lo)) lo = c.log2_x ? 1 : 0, hi = c.log2_x ? 2 : 1;
  if (hi == lo) {  // one x value: widen so that it sits in the middle
    if (c.log2_x) lo /= 2, hi *= 2;
    else lo -= 1, hi += 1;
  }
  ax.lo = lo;
  ax.hi = hi;
  if (c.log2_x) {
    const int e0 = int(std::ceil(std::log2(lo) - 1e-9)), e1 = int(std::floor(std::log2(hi) + 1e-9));
    const int every = std::max(1, (e1 - e0 + 10) / 10);  // at most ~10 labels
    for (int e = e0; e <= e1; e += every) ax.ticks.push_back(std::ldexp(1.0, e));
  } else {
    const double step = nice_step(hi - lo, 6);
    for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ax.ticks.push_back(t);
  }
  return ax;
}

Axis line_chart_y_axis(const LineChart& c) {
  Axis ax;
  ax.px_lo = Frame::kTop + Frame::kHeight;  // y grows upwards
  ax.px_hi = Frame::kTop;
  auto [lo, hi] = data_y_range(c);
  ax.lo = c.y_min.value_or(lo);
  ax.hi = c.y_max.value_or(hi);
  if (!(ax.hi > ax.lo))
    fail(Status::InvalidArgument, "the y range must be increasing, found [{}, {}]", ax.lo, ax.hi);
  const double step = nice_step(ax.hi - ax.lo, 5);
  for (double t = std::ceil(ax.lo / step - 1e-9) * step; t <= ax.hi + step * 1e-9; t += step)
    ax.ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  return ax;
}

std::string render_line_chart(const LineChart& c) {
  const Axis x = line_chart_x_axis(c), y = line_chart_y_axis(c);
  std::string s;
  header(s, c.title);
  axes(s, x, y, c.x_label, c.y_label, true);
  int color = 0;
  for (size_t i = 0; i < c.series.size(); ++i) {
    const Series& ser = c.series[i];
    const bool base = is_baseline(ser.name);
    const char* col = base ? kBaselineColor : kColors[color++ % std::size(kColors)];
    std::string pts;
    for (auto [px, py] : ser.points) pts += fmt::format("{}{:.2f},{:.2f}", pts.empty() ? "" : " ", x.map(px), y.map(py));
    s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"><title>{}</title></polyline>\n",
                     col, base ? " stroke-dasharray=\"6 4\"" : "", pts, esc(ser.name));
    if (!base)
      for (auto [px, py] : ser.points)
        s += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", x.map(px), y.map(py), col);
    // Legend to the right of the plot area.
    const double ly = Frame::kTop + 10 + 20 * double(i), lx = Frame::kLeft + Frame::kWidth + 15;
    s += fmt::format("<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", lx, ly,
                     lx + 22, ly, col, base ? " stroke-dasharray=\"6 4\"" : "");
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\">{}</text>\n", lx + 28, ly + 4, esc(ser.name));
  }
  s += "</svg>\n";
  return s;
}

std::string render_bar_chart(const BarChart& c) {
  LineChart range_only;  // reuse the y range rule
  range_only.series.push_back({"", {}});
  for (const auto& b : c.bars) range_only.series[0].points.push_back({0, b.value});
  const Axis y = line_chart_y_axis(range_only);
  Axis x;  // unused ticks; bars are placed by index
  std::string s;
  header(s, c.title);
  axes(s, x, y, "", c.y_label, false);
  const double slot = Frame::kWidth / double(std::max<size_t>(1, c.bars.size()));
  for (size_t i = 0; i < c.bars.size(); ++i) {
    const double x0 = Frame::kLeft + slot * double(i) + slot * 0.2, w = slot * 0.6;
    const double top = y.map(c.bars[i].value), base = y.map(std::max(0.0, y.lo));
    s += fmt::format("<rect x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" fill=\"{}\"><title>{}</title></rect>\n", x0,
                     std::min(top, base), w, std::fabs(base - top), kColors[i % std::size(kColors)], esc(c.bars[i].label));
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", x0 + w / 2, std::min(top, base) - 5,
                     esc(tick_label(c.bars[i].value, false)));
    s += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">{}</text>\n", x0 + w / 2,
                     Frame::kTop + Frame::kHeight + 18, esc(c.bars[i].label));
  }
  s += "</svg>\n";
  return s;
}

void write_svg(const std::string& svg, const std::string& path) {
  AtomicFile f(path);
  f.write(svg.data(), svg.size());
  f.commit();
}

// ---- benchmark documents ----------------------------------------------------------------------------

namespace {

// Every object with an array "rows" (GEMM) or "runs" (model), with the nearest enclosing "gpu".
void find_tables(const nlohmann::json& j, const char* key, const std::string& gpu,
                 std::vector<std::pair<const nlohmann::json*, std::string>>& out) {
  if (j.is_array()) {
    for (const auto& e : j) find_tables(e, key, gpu, out);
    return;
  }
  if (!j.is_object()) return;
  std::string g = j.contains("gpu") && j["gpu"].is_string() ? j["gpu"].get<std::string>() : gpu;
  if (j.contains(key) && j[key].is_array()) out.push_back({&j, g});
  for (const auto& [k, v] : j.items())
    if (v.is_array() && k != key) find_tables(v, key, g, out);
}

std::string shape_of(const nlohmann::json& t) {
  if (t.contains("size") && t["size"].is_string()) return t["size"].get<std::string>();
  if (t.contains("n") && t.contains("k") && t["n"].is_number() && t["k"].is_number())
    return fmt::format("{}x{}", t["n"].get<int64_t>(), t["k"].get<int64_t>());
  return "";
}

std::string backend_name(const std::string& key) {
  if (key == "sparseflow" || key == "sparse") return "SparseFlow 2:4";
  if (key == "cusparselt") return "cuSPARSELt 2:4";
  return key;
}

std::string gpu_suffix(const std::vector<std::pair<const nlohmann::json*, std::string>>& tables) {
  return !tables.empty() && !tables[0].second.empty() ? ", " + tables[0].second : "";
}

}  // namespace

LineChart speedup_chart(const nlohmann::json& bench) {
  std::vector<std::pair<const nlohmann::json*, std::string>> tables;
  find_tables(bench, "rows", "", tables);
  LineChart c;
  c.log2_x = true;
  c.x_label = "batch size M (rows of x), log2 scale";
  c.y_label = "speedup over dense (x)";
  for (const auto& [t, gpu] : tables) {
    const std::string prefix = tables.size() > 1 && !shape_of(*t).empty() ? shape_of(*t) + " " : "";
    Series dense{prefix + "dense = 1", {}};
    std::map<std::string, Series> backends;  // by key, sorted for a stable legend
    for (const auto& r : (*t)["rows"]) {
      if (!r.is_object() || !r.contains("m") || !r.contains("dense_ms") || !r["m"].is_number() || !r["dense_ms"].is_number())
        continue;
      const double m = r["m"].get<double>(), dense_ms = r["dense_ms"].get<double>();
      if (!(m > 0) || !(dense_ms > 0)) continue;
      dense.points.push_back({m, 1.0});
      for (const auto& [k, v] : r.items()) {
        if (k == "dense_ms" || k.size() <= 3 || k.compare(k.size() - 3, 3, "_ms") != 0 || !v.is_number()) continue;
        if (!(v.get<double>() > 0)) continue;
        const std::string name = k.substr(0, k.size() - 3);
        auto& s = backends[name];
        s.name = prefix + backend_name(name);
        s.points.push_back({m, dense_ms / v.get<double>()});
      }
    }
    if (dense.points.empty()) continue;
    c.series.push_back(std::move(dense));
    for (auto& [k, s] : backends) c.series.push_back(std::move(s));
  }
  if (c.series.empty())
    fail(Status::InvalidArgument,
         "no GEMM rows to plot: expected \"rows\" with \"m\", \"dense_ms\" and <backend>_ms numbers, as "
         "`sparseflow benchmark --json` writes");
  const std::string shape = tables.size() == 1 ? shape_of(*tables[0].first) : "";
  c.title = fmt::format("2:4 GEMM speedup over dense{}{}", shape.empty() ? "" : " (" + shape + ")", gpu_suffix(tables));
  return c;
}

LineChart tokens_chart(const nlohmann::json& bench) {
  std::vector<std::pair<const nlohmann::json*, std::string>> tables;
  find_tables(bench, "runs", "", tables);
  find_tables(bench, "rows", "", tables);  // `sparseflow benchmark --model` writes "rows"
  LineChart c;
  c.log2_x = true;
  c.x_label = "batch (sequences decoded together), log2 scale";
  c.y_label = "decode tokens/s (all sequences)";
  for (const auto& [t, gpu] : tables) {
    std::string model = t->contains("model") && (*t)["model"].is_string() ? (*t)["model"].get<std::string>() : "model";
    while (model.size() > 1 && model.back() == '/') model.pop_back();
    model = model.substr(model.find_last_of('/') + 1);  // a path: its last component
    std::string sp;
    for (const char* key : {"sparsity", "weights"})
      if (sp.empty() && t->contains(key) && (*t)[key].is_string()) sp = (*t)[key].get<std::string>();
    Series s{sp.empty() ? model : model + " " + sp, {}};
    for (const auto& r : t->contains("runs") ? (*t)["runs"] : (*t)["rows"])
      if (r.is_object() && r.contains("batch") && r.contains("decode_tokens_per_s") && r["batch"].is_number() &&
          r["decode_tokens_per_s"].is_number())
        s.points.push_back({r["batch"].get<double>(), r["decode_tokens_per_s"].get<double>()});
    std::sort(s.points.begin(), s.points.end());
    if (!s.points.empty()) c.series.push_back(std::move(s));
  }
  if (c.series.empty())
    fail(Status::InvalidArgument,
         "no model runs to plot: expected \"runs\" with \"batch\" and \"decode_tokens_per_s\" (docs/DEPLOYMENT.md)");
  c.title = "Decode throughput" + gpu_suffix(tables);
  return c;
}

void write_speedup_plot(const nlohmann::json& bench, const std::string& path) {
  write_svg(render_line_chart(speedup_chart(bench)), path);
}

void write_tokens_plot(const nlohmann::json& bench, const std::string& path) {
  write_svg(render_line_chart(tokens_chart(bench)), path);
}

}  // namespace sf::report
