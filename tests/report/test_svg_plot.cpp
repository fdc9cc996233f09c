// The SVG writer: coordinates against hand-computed values, one polyline per series, escaping.
// The files written here are parsed as XML by the svg_wellformed test (python3 xml.dom.minidom).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "report/svg_plot.hpp"

using namespace sf::report;
using nlohmann::json;

namespace {

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(SvgPlot, Log2AxisMapsPointsWhereExpected) {
  // Plot area: x from 80 to 560 px, y from 370 (bottom) to 50 (top). x in log2 over [1, 16]:
  // 1 -> 80, 4 -> 80 + 2/4 x 480 = 320, 16 -> 560. y over [0, 2]: 1 -> 210, 2 -> 50, 0.5 -> 290.
  LineChart c;
  c.log2_x = true;
  c.y_min = 0;
  c.y_max = 2;
  c.title = "speedup <2:4> & more";
  c.series.push_back({"SparseFlow 2:4", {{1, 1}, {4, 2}, {16, 0.5}}});
  const std::string svg = render_line_chart(c);
  EXPECT_NE(svg.find("points=\"80.00,210.00 320.00,50.00 560.00,290.00\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("speedup &lt;2:4&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 1);
  const Axis x = line_chart_x_axis(c);
  ASSERT_EQ(x.ticks.size(), 5u);  // 1, 2, 4, 8, 16
  EXPECT_DOUBLE_EQ(x.ticks[3], 8);
  EXPECT_DOUBLE_EQ(x.map(8), 440);
  write_svg(svg, "svg_hand.svg");
}

TEST(SvgPlot, SpeedupChartFromABenchmarkDocument) {
  const json bench = {{"gpu", "NVIDIA H200"}, {"n", 4096}, {"k", 4096},
                      {"rows", json::array({{{"m", 1}, {"dense_ms", 2.0}, {"sparseflow_ms", 1.0}, {"cusparselt_ms", 1.6}},
                                            {{"m", 16}, {"dense_ms", 4.0}, {"sparseflow_ms", 2.5}, {"cusparselt_ms", 4.0}}})}};
  const LineChart c = speedup_chart(bench);
  ASSERT_EQ(c.series.size(), 3u);  // dense = 1, cuSPARSELt, SparseFlow
  EXPECT_EQ(c.series[0].name, "dense = 1");
  EXPECT_EQ(c.series[1].name, "cuSPARSELt 2:4");
  EXPECT_EQ(c.series[2].name, "SparseFlow 2:4");
  EXPECT_DOUBLE_EQ(c.series[2].points[1].second, 1.6);  // 4.0 / 2.5
  EXPECT_NE(c.title.find("4096x4096"), std::string::npos);
  EXPECT_NE(c.title.find("NVIDIA H200"), std::string::npos);

  write_speedup_plot(bench, "svg_speedup.svg");
  const std::string svg = read("svg_speedup.svg");
  EXPECT_EQ(count(svg, "<polyline"), 3);
  // Auto y range: max 2.0 x 1.05 -> step 0.5, top 2.5. SparseFlow (1, 2.0) -> (80, 370 - 2/2.5 x
  // 320 = 114); (16, 1.6) -> (560, 165.2).
  EXPECT_NE(svg.find("points=\"80.00,114.00 560.00,165.20\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);  // the dense baseline is dashed
}

TEST(SvgPlot, TokensChartAndBars) {
  const json bench = json::array(
      {{{"gpu", "G"}, {"model", "opt-6.7b"}, {"sparsity", "dense"},
        {"runs", json::array({{{"batch", 8}, {"decode_tokens_per_s", 600.0}}, {{"batch", 1}, {"decode_tokens_per_s", 90.0}}})}},
       {{"gpu", "G"}, {"model", "opt-6.7b"}, {"sparsity", "2:4"}, {"runs", json::array({{{"batch", 1}, {"decode_tokens_per_s", 140.0}}})}}});
  const LineChart c = tokens_chart(bench);
  ASSERT_EQ(c.series.size(), 2u);
  EXPECT_EQ(c.series[0].name, "opt-6.7b dense");
  EXPECT_DOUBLE_EQ(c.series[0].points[0].first, 1);  // sorted by batch
  write_tokens_plot(bench, "svg_tokens.svg");
  EXPECT_EQ(count(read("svg_tokens.svg"), "<polyline"), 2);

  BarChart b;
  b.title = "GPUs";
  b.bars = {{"dense fp16", 16}, {"2:4 fp16", 9}};
  const std::string svg = render_bar_chart(b);
  EXPECT_EQ(count(svg, "<rect"), 2 + 2);  // background, frame, two bars
  write_svg(svg, "svg_bars.svg");
}

TEST(SvgPlot, RejectsDocumentsWithoutData) {
  EXPECT_THROW(speedup_chart(json{{"rows", json::array()}}), sf::Error);
  EXPECT_THROW(tokens_chart(json::object()), sf::Error);
  LineChart bad;
  bad.log2_x = true;
  bad.series.push_back({"s", {{0, 1}}});
  EXPECT_THROW(render_line_chart(bad), sf::Error);
}
