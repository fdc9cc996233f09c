// Aligned text tables and number formatting for the command's human-readable output.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sf::cli {

class Table {
 public:
  // The first column is left-aligned (names), the others right-aligned (numbers) unless changed.
  explicit Table(std::vector<std::string> headers);
  void align_left(size_t column, bool left = true);
  void add_row(std::vector<std::string> cells);  // missing cells print empty
  size_t rows() const { return rows_.size(); }
  // Header, a rule of dashes, then the rows; columns separated by two spaces; no trailing spaces.
  std::string str() const;

 private:
  std::vector<std::string> headers_;
  std::vector<bool> left_;
  std::vector<std::vector<std::string>> rows_;
};

std::string format_shape(const std::vector<int64_t>& shape);  // "[4096, 4096]", "[]" for 0-d
// Four significant digits for ordinary magnitudes, exponent form for tiny ones, no exponent for
// large ones: "0.01230", "12.35", "26.00", "4096", "1.2e-07", "nan".
std::string format_number(double v);

}  // namespace sf::cli
