// Helpers shared by the .sf tests: a scratch directory per test, file bytes in and out, and
// catching an sf::Error to look at its status and message (with a deadline for FIFO readers).
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sftest {

namespace fs = std::filesystem;

class ScratchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           fmt::format("sf_sf_{}_{}_{}", info->test_suite_name(), info->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Files in the scratch dir whose name contains ".tmp." (left-over AtomicFile temporaries).
  std::vector<std::string> temporaries() const {
    std::vector<std::string> v;
    for (const auto& e : fs::recursive_directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) v.push_back(e.path().string());
    return v;
  }
  fs::path dir_;
};

inline std::vector<uint8_t> read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Runs f, which must throw sf::Error; returns it (a failed expectation when it does not throw).
inline sf::Error catch_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const sf::Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected an sf::Error, nothing was thrown";
  return sf::Error(sf::Status::Ok, "");
}

// catch_error(f) on another thread, for code that reads `fifo`: should f still be blocked after
// `seconds`, the FIFO is opened for writing (which wakes a blocked reader with end-of-file) and the
// test fails, so that a loader that blocks fails the suite instead of hanging it.
inline sf::Error catch_error_promptly(const std::string& fifo, const std::function<void()>& f,
                                      int seconds = 20) {
  auto done = std::async(std::launch::async, [&] { return catch_error(f); });
  if (done.wait_for(std::chrono::seconds(seconds)) == std::future_status::timeout) {
    ADD_FAILURE() << "still blocked on '" << fifo << "' after " << seconds << " s";
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  }
  return done.get();
}

}  // namespace sftest
