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

tok::Tokenizer model_tokenizer(const model::Model& m) {
  if (m.vocab_json().empty() || m.merges_txt().empty())
    fail(Status::NotFound,
         "the model has no tokenizer (vocab.json + merges.txt). Put both files in the checkpoint "
         "directory (and re-run convert for a .sf file), or pass token ids with --ids.");
  return tok::Tokenizer::from_json_and_merges(m.vocab_json(), m.merges_txt());
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
    fail(Status::InvalidArgument, "{} --device {}: expected cpu, cuda or auto (cuda when a GPU is present)", command,
         device);
  if (device == "cpu") return false;
  const std::string no_gpu = backend::cuda_unavailable_reason();
  if (device == "cuda" && !no_gpu.empty()) fail(Status::NoDevice, "{} --device cuda: {}", command, no_gpu);
  return no_gpu.empty();
}

namespace {
// Length of the UTF-8 sequence that starts with byte b, 0 when b cannot start one.
int seq_len(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}
// Whether the second byte is allowed after lead b (excludes overlongs, surrogates, > U+10FFFF).
bool second_ok(unsigned char lead, unsigned char c) {
  if ((c & 0xC0) != 0x80) return false;
  if (lead == 0xE0) return c >= 0xA0;
  if (lead == 0xED) return c <= 0x9F;
  if (lead == 0xF0) return c >= 0x90;
  if (lead == 0xF4) return c <= 0x8F;
  return true;
}
constexpr const char* kReplacement = "\xEF\xBF\xBD";
}  // namespace

std::string Utf8Stream::push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const auto lead = static_cast<unsigned char>(pending_[i]);
    const int n = seq_len(lead);
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    // Check the continuation bytes we have; stop (and wait) if the sequence is merely incomplete.
    int have = 1;
    bool bad = false;
    while (have < n && i + size_t(have) < pending_.size()) {
      const auto c = static_cast<unsigned char>(pending_[i + size_t(have)]);
      if (have == 1 ? !second_ok(lead, c) : (c & 0xC0) != 0x80) {
        bad = true;
        break;
      }
      ++have;
    }
    if (bad) {  // a maximal invalid subpart: one U+FFFD, resume at the offending byte
      out += kReplacement;
      i += size_t(have);
      continue;
    }
    if (have < n) break;  // incomplete: keep for the next push
    out.append(pending_, i, size_t(n));
    i += size_t(n);
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out = pending_.empty() ? "" : kReplacement;
  pending_.clear();
  return out;
}

}  // namespace sf::cli
