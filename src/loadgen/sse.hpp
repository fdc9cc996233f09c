// An incremental parser of server-sent events (the WHATWG EventSource rules, as far as OpenAI
// streams use them): bytes arrive in pieces that split lines anywhere; each event is the "data:"
// lines before a blank line, joined by '\n'. Comments (":...") and other fields are skipped.
#pragma once
#include <functional>
#include <string>
#include <string_view>

namespace sf::loadgen {

class SseParser {
 public:
  // Called with each event's data; returning false stops the parse (feed() then returns false).
  using OnData = std::function<bool(const std::string& data)>;
  explicit SseParser(OnData on_data) : on_data_(std::move(on_data)) {}

  bool feed(std::string_view bytes);
  // Ends the stream: an event not yet closed by a blank line is delivered.
  bool finish();

 private:
  bool line(std::string_view l);

  OnData on_data_;
  std::string partial_;  // a line not yet ended
  std::string data_;     // the data lines of the event so far
  bool has_data_ = false;
  bool last_cr_ = false;  // the previous piece ended in '\r': a '\n' next ends no new line
};

}  // namespace sf::loadgen
