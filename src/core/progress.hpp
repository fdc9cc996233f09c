// A progress bar for the steps a user waits on (converting, synthesizing, perplexity windows,
// calibration passes): redrawn in place on a terminal with the rate and the time left, at most ten
// times a second. Off when stderr is not a terminal (logs, CI, pipes) or after set_quiet(true)
// (--quiet), so that scripted output stays exactly what it was.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace sf {

class Progress {
 public:
  // `total` units of work; `unit` names them ("MiB", "windows", "tensors"); `scale` divides the
  // counts for display (e.g. 1 << 20 for bytes shown in MiB).
  Progress(std::string label, double total, std::string unit = "", double scale = 1.0);
  ~Progress();  // finishes the line if the bar was drawn
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(double done, std::string_view note = {});
  void add(double n, std::string_view note = {}) { update(done_ + n, note); }
  void finish();  // the final line, with the elapsed time

  static void set_quiet(bool quiet);
  static bool enabled();  // a terminal on stderr and not quiet

 private:
  void draw(bool final);

  std::string label_, unit_, note_;
  double total_ = 0, scale_ = 1, done_ = 0;
  bool on_ = false, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1:05", "12s", "2:03:04": a duration for a progress line.
std::string format_duration(double seconds);

}  // namespace sf
