#include "loadgen/sse.hpp"

namespace sf::loadgen {

bool SseParser::line(std::string_view l) {
  if (l.empty()) {  // a blank line dispatches the event
    if (!has_data_) return true;
    const std::string d = std::move(data_);
    data_.clear();
    has_data_ = false;
    return on_data_(d);
  }
  if (l.front() == ':') return true;  // a comment (keep-alive)
  const size_t colon = l.find(':');
  const std::string_view field = l.substr(0, colon);
  std::string_view value =
      colon == std::string_view::npos ? std::string_view() : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field != "data") return true;
  if (has_data_) data_ += '\n';
  data_ += value;
  has_data_ = true;
  return true;
}

bool SseParser::feed(std::string_view bytes) {
  for (char c : bytes) {
    if (c == '\n' && last_cr_) {  // the second half of "\r\n"
      last_cr_ = false;
      continue;
    }
    last_cr_ = c == '\r';
    if (c == '\n' || c == '\r') {
      const std::string l = std::move(partial_);
      partial_.clear();
      if (!line(l)) return false;
    } else {
      partial_ += c;
    }
  }
  return true;
}

bool SseParser::finish() {
  if (!partial_.empty()) {
    const std::string l = std::move(partial_);
    partial_.clear();
    if (!line(l)) return false;
  }
  return line({});
}

}  // namespace sf::loadgen
