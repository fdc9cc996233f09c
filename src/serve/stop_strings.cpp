#include "serve/stop_strings.hpp"

#include <algorithm>
#include <utility>

namespace sf::serve {

StopFilter::StopFilter(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopFilter::push(std::string_view piece) {
  if (stopped_) return {};
  held_ += piece;
  if (stops_.empty()) return std::exchange(held_, {});
  // A stop string that ends in the new piece starts inside held_: the text before held_ had no
  // tail that could begin one. The earliest occurrence of any of them wins.
  size_t at = std::string::npos;
  for (const auto& s : stops_) at = std::min(at, held_.find(s));
  if (at != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, at);
    held_.clear();
    return out;
  }
  size_t keep = 0;  // the longest tail of held_ that a stop string starts with
  for (const auto& s : stops_)
    for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k)
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopFilter::flush() {
  return std::exchange(held_, {});
}

}  // namespace sf::serve
