// Tokenizer from GPT-2 / OPT's vocab.json + merges.txt.
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "tokenizer/byte_level.hpp"
#include "tokenizer/tokenizer_impl.hpp"

namespace sf::tok {
namespace {

constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// For error messages: at most 60 bytes of `s`, escaped.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += s.size() > 60 ? "...\"" : "\"";
  return out;
}

Vocab parse_vocab_json(std::string_view vocab_json) {
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_json);
  } catch (const nlohmann::json::exception& e) {
    fail(Status::Format,
         "vocab.json is not valid JSON ({}); expected an object mapping each "
         "token to its id, as in a Hugging Face GPT-2/OPT checkpoint",
         e.what());
  }
  if (!vocab.is_object()) {
    fail(Status::Format, "vocab.json must be a JSON object mapping tokens to ids, found a {}",
         vocab.type_name());
  }
  Vocab out;
  std::vector<bool> seen;
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer()) {
      fail(Status::Format, "vocab.json: token {} has the value {}; expected an integer id",
           quote(token), quote(value.dump()));
    }
    const int64_t id = value.get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
      fail(Status::Format, "vocab.json: token {} has id {}; expected 0 <= id <= {}", quote(token),
           id, kMaxTokenId);
    }
    if (seen.size() <= static_cast<size_t>(id)) seen.resize(static_cast<size_t>(id) + 1);
    if (seen[id]) {
      fail(Status::Format,
           "vocab.json: id {} is given to two tokens ({} and another); expected "
           "each id once",
           id, quote(token));
    }
    seen[id] = true;
    out.emplace(token, static_cast<int32_t>(id));
  }
  for (int b = 0; b < 256; ++b) {
    const std::string sym = byte_level_spelling(std::string(1, static_cast<char>(b)));
    if (!out.contains(sym)) {
      fail(Status::Format,
           "vocab.json has no token for the byte 0x{:02x} (symbol {}); a "
           "byte-level BPE vocabulary has all 256 byte symbols, so this is not a GPT-2-style "
           "vocab.json",
           b, quote(sym));
    }
  }
  return out;
}

std::vector<MergeRule> parse_merges_txt(std::string_view merges_txt, const Vocab& vocab) {
  std::vector<MergeRule> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_txt.size();) {
    size_t eol = merges_txt.find('\n', pos);
    if (eol == std::string_view::npos) eol = merges_txt.size();
    std::string_view line = merges_txt.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos) {
      fail(Status::Format,
           "merges.txt line {}: expected two tokens separated by one space, "
           "found {}",
           line_no, quote(line));
    }
    const std::string left(line.substr(0, sp)), right(line.substr(sp + 1));
    const auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || m == vocab.end()) {
      const std::string& missing = l == vocab.end()   ? left
                                   : r == vocab.end() ? right
                                                      : left + right;
      fail(Status::Format,
           "merges.txt line {} ({}) uses the token {}, which vocab.json does not "
           "have; are vocab.json and merges.txt from the same checkpoint?",
           line_no, quote(line), quote(missing));
    }
    merges.push_back({l->second, r->second, m->second});
  }
  return merges;
}

}  // namespace

Tokenizer Tokenizer::from_json_and_merges(std::string_view vocab_json, std::string_view merges_txt,
                                          const std::vector<std::string>& special_tokens) {
  auto impl = std::make_unique<Impl>();
  Vocab vocab = parse_vocab_json(vocab_json);
  const std::vector<MergeRule> merges = parse_merges_txt(merges_txt, vocab);
  std::vector<AddedToken> added;
  for (const auto& s : special_tokens) {
    auto it = vocab.find(s);
    if (s.empty() || it == vocab.end()) continue;
    added.push_back({.content = s, .id = it->second, .special = true, .normalized = false});
  }
  impl->model = BpeModel(std::move(vocab), merges, BpeOptions{.byte_level = true});
  impl->pre_tokenizer.add(PreTokenizer::ByteLevel{.add_prefix_space = false, .use_regex = true});
  impl->decoder.add(Decoder::ByteLevel{});
  impl->added = AddedTokens(std::move(added), impl->normalizer);
  impl->finish();
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_files(const std::string& vocab_path, const std::string& merges_path,
                                const std::vector<std::string>& special_tokens) {
  const std::string vocab = read_text_file(vocab_path, "the tokenizer's vocab.json");
  const std::string merges = read_text_file(merges_path, "the tokenizer's merges.txt");
  try {
    return from_json_and_merges(vocab, merges, special_tokens);
  } catch (const Error& e) {
    throw Error(e.status(), fmt::format("{} (files: {}, {})", e.what(), vocab_path, merges_path));
  }
}

}  // namespace sf::tok
