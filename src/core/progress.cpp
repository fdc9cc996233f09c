#include "core/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>

namespace sf {

namespace {
std::atomic<bool> g_quiet{false};
}  // namespace

void Progress::set_quiet(bool quiet) {
  g_quiet = quiet;
}
bool Progress::enabled() {
  return !g_quiet && ::isatty(::fileno(stderr)) != 0;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = int64_t(std::llround(s));
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}:{:02}", t / 60, t % 60);
  return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
}

Progress::Progress(std::string label, double total, std::string unit, double scale)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      scale_(scale > 0 ? scale : 1.0),
      on_(enabled()),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() {
  if (drawn_ && !finished_) {
    std::fputc('\n', stderr);  // interrupted by an exception: keep the next message on its own line
    std::fflush(stderr);
  }
}

void Progress::update(double done, std::string_view note) {
  done_ = done;
  if (!note.empty()) note_ = note;
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  if (on_) draw(true);
  finished_ = true;
}

void Progress::draw(bool final) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? std::clamp(done_ / total_, 0.0, 1.0) : 1.0;
  constexpr int kWidth = 24;
  const int fill = int(frac * kWidth);
  const double rate = elapsed > 0 ? done_ / scale_ / elapsed : 0.0;
  const std::string rate_s = rate > 0 ? fmt::format("{:.1f} {}/s", rate, unit_) : "";
  const std::string tail =
      final ? fmt::format("in {}", format_duration(elapsed))
            : (done_ > 0 && elapsed > 0.5
                   ? fmt::format("{} left", format_duration(elapsed * (total_ - done_) / done_))
                   : "");
  const std::string line =
      fmt::format("{} [{}{}] {:3.0f}% {:.0f}/{:.0f} {}  {}  {}  {}", label_,
                  std::string(size_t(fill), '#'), std::string(size_t(kWidth - fill), ' '),
                  frac * 100, done_ / scale_, total_ / scale_, unit_, rate_s, tail, note_);
  // Clear to the end of the line (\033[K) so that a shorter redraw leaves no debris.
  fmt::print(stderr, "\r{:.{}}\033[K{}", line, 160, final ? "\n" : "");
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace sf
