#include "cli/model_io.hpp"

#include <omp.h>

#include <charconv>

#include "backend/backends.hpp"
#include "core/error.hpp"

namespace sf::cli {

std::vector<int32_t> parse_id_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    int32_t v = 0;
    const auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size() || v < 0)
      fail(Status::InvalidArgument,
           "--ids: item {} (\"{}\") is not a non-negative integer; expected a comma-separated "
           "list like 2,17,42.",
           ids.size() + 1, item);
    ids.push_back(v);
    pos = end + 1;
  }
  return ids;
}

void set_cpu_threads(int threads) {
  if (threads < 0)
    fail(Status::InvalidArgument, "--threads must be >= 1 (or 0 for all cores), got {}.", threads);
  if (threads > 0) omp_set_num_threads(threads);
}

int cpu_threads() {
  return omp_get_max_threads();
}

void require_cpu_device(const std::string& device) {
  if (device != "cpu")
    fail(Status::InvalidArgument,
         "--device {}: this command runs on the CPU backend only for now; use --device cpu.",
         device);
}

bool resolve_gpu_device(const char* command, const std::string& device) {
  if (device != "cpu" && device != "cuda" && device != "auto")
    fail(Status::InvalidArgument,
         "{} --device {}: expected cpu, cuda or auto (cuda when a GPU is present)", command,
         device);
  if (device == "cpu") return false;
  const std::string no_gpu = backend::cuda_unavailable_reason();
  if (device == "cuda" && !no_gpu.empty())
    fail(Status::NoDevice, "{} --device cuda: {}", command, no_gpu);
  return no_gpu.empty();
}

}  // namespace sf::cli
