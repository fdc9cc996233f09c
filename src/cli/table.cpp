#include "cli/table.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace sf::cli {

namespace {
// Display width of UTF-8 text: count code points, not bytes, so non-ASCII names stay aligned.
size_t width(const std::string& s) {
  return size_t(
      std::count_if(s.begin(), s.end(), [](char c) { return (uint8_t(c) & 0xc0) != 0x80; }));
}
}  // namespace

Table::Table(std::vector<std::string> headers)
    : headers_(std::move(headers)), left_(headers_.size(), false) {
  if (!left_.empty()) left_[0] = true;
}

void Table::align_left(size_t column, bool left) {
  if (column < left_.size()) left_[column] = left;
}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::str() const {
  std::vector<size_t> w(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) {
    w[c] = width(headers_[c]);
    for (const auto& r : rows_) w[c] = std::max(w[c], width(r[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string pad(w[c] - width(cells[c]), ' ');
      if (c) l += "  ";
      l += left_[c] ? cells[c] + pad : pad + cells[c];
    }
    l.erase(l.find_last_not_of(' ') + 1);
    out += l + "\n";
  };
  line(headers_);
  std::vector<std::string> rule;
  for (size_t c = 0; c < w.size(); ++c) rule.emplace_back(w[c], '-');
  line(rule);
  for (const auto& r : rows_) line(r);
  return out;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 999.95) return fmt::format("{:.0f}", v);
  if (a >= 1e-3) return fmt::format("{:#.4g}", v);  // '#' keeps trailing zeros: 26.00, not 26
  return fmt::format("{:.1e}", v);
}

}  // namespace sf::cli
