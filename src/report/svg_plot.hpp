// A tiny SVG chart writer with no dependencies: line charts (optionally with a log2 x axis, for
// batch sizes) and bar charts, with axes, ticks, a legend and a title. The files open in any
// browser. Used by `sparseflow benchmark --plot` and `sparseflow audit --plot`.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sf::report {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in the order given
};

struct LineChart {
  std::string title, x_label, y_label;
  bool log2_x = false;             // x values must then be > 0
  std::optional<double> y_min, y_max;  // default: 0 (or below, for negative data) to a round value above the max
  std::vector<Series> series;
};

struct Bar {
  std::string label;
  double value;
};
struct BarChart {
  std::string title, y_label;
  std::vector<Bar> bars;
};

// Where the plot area lies on the canvas, in SVG user units (pixels).
struct Frame {
  static constexpr double kCanvasW = 760, kCanvasH = 440;
  static constexpr double kLeft = 80, kTop = 50, kWidth = 480, kHeight = 320;  // plot area
};

// One axis: a data range [lo, hi] mapped linearly (or in log2) onto pixels [px_lo, px_hi].
struct Axis {
  double lo = 0, hi = 1;
  bool log2 = false;
  double px_lo = 0, px_hi = 1;
  std::vector<double> ticks;  // data values
  double map(double v) const;
};
// The axes render_line_chart uses, exposed so that tests can check coordinates.
Axis line_chart_x_axis(const LineChart& c);
Axis line_chart_y_axis(const LineChart& c);

std::string render_line_chart(const LineChart& c);
std::string render_bar_chart(const BarChart& c);
// Writes atomically; throws sf::Error(Io) when the file cannot be written.
void write_svg(const std::string& svg, const std::string& path);

// From a `sparseflow benchmark --json` GEMM document (rows with m, dense_ms and <backend>_ms):
// speedup over dense against M, one series per backend found in the rows, dense = 1.
// Throws sf::Error(InvalidArgument) when the document has no such rows.
LineChart speedup_chart(const nlohmann::json& bench);
void write_speedup_plot(const nlohmann::json& bench, const std::string& path);

// From model benchmark documents (runs with batch and decode_tokens_per_s; docs/DEPLOYMENT.md):
// decode tokens/s against batch, one series per model and sparsity.
LineChart tokens_chart(const nlohmann::json& bench);
void write_tokens_plot(const nlohmann::json& bench, const std::string& path);

}  // namespace sf::report
