#include "tokenizer/tokenizer.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "tokenizer/tokenizer_impl.hpp"
#include "tokenizer/unicode.hpp"

namespace sf::tok {
namespace {

// Ids index dense tables; a vocabulary claiming larger ids is damaged (Llama 3 has 128256).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

}  // namespace

void Tokenizer::Impl::finish() {
  int64_t size = 0;
  for (const auto& [token, id] : model.vocab()) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const AddedToken& t : added.tokens()) size = std::max<int64_t>(size, int64_t{t.id} + 1);
  if (size > kMaxTokenId + 1) {
    fail(Status::Format,
         "the vocabulary has ids up to {}; expected ids below {} (is the file "
         "damaged?)",
         size - 1, kMaxTokenId + 1);
  }
  spelling.assign(static_cast<size_t>(size), {});
  bytes.assign(static_cast<size_t>(size), {});
  flags.assign(static_cast<size_t>(size), 0);
  for (const auto& [token, id] : model.vocab()) {
    spelling[id] = token;
    flags[id] = kUsed;
  }
  // An added token names its id in decoding, over the model's spelling (HF's id_to_token).
  for (size_t i = 0; i < added.tokens().size(); ++i) {
    const AddedToken& t = added.tokens()[i];
    spelling[t.id] = added.spellings()[i];
    flags[t.id] |= kUsed | (t.special ? kSpecial : 0);
  }
  num_tokens = std::count_if(flags.begin(), flags.end(), [](uint8_t f) { return f & kUsed; });
  for (size_t id = 0; id < spelling.size(); ++id) {
    if (flags[id] & kUsed) bytes[id] = decoder.token_bytes(spelling[id]);
  }
  eos_ids.clear();
  if (eos) eos_ids.push_back(*eos);
}

void Tokenizer::Impl::check_id(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= flags.size() || !(flags[id] & kUsed)) {
    fail(Status::InvalidArgument,
         "token id {} is not in the vocabulary (ids are 0..{}{}); was it "
         "produced with a different tokenizer or model?",
         id, int64_t(flags.size()) - 1, int64_t(flags.size()) == num_tokens ? "" : ", with gaps");
  }
}

std::optional<int32_t> Tokenizer::Impl::find(std::string_view token) const {
  for (const AddedToken& t : added.tokens()) {
    if (t.content == token) return t.id;
  }
  auto it = model.vocab().find(token);
  if (it == model.vocab().end()) return std::nullopt;
  return it->second;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  return encode(text, false);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = to_valid_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.assign(m.prefix.begin(), m.prefix.end());

  PreTokenizer::Scratch scratch;
  const auto encode_words = [&](std::string_view stretch, bool at_start) {
    m.pre_tokenizer.run(stretch, at_start, scratch);
    for (const auto& w : scratch.words) m.model.encode_word(w.text, ids);
  };
  std::vector<AddedTokens::Match> inner;
  // A stretch of raw text between added tokens: normalized, then split by the normalized ones.
  const auto encode_stretch = [&](std::string_view stretch, bool at_start) {
    std::string normalized;
    if (!m.normalizer.empty()) {
      normalized = m.normalizer.apply(stretch);
      stretch = normalized;
    }
    if (!m.added.has(true)) {
      encode_words(stretch, at_start);
      return;
    }
    inner.clear();
    m.added.split(stretch, true, inner);
    for (const auto& piece : inner) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
      } else {
        encode_words(stretch.substr(piece.begin, piece.end - piece.begin),
                     at_start && piece.begin == 0);
      }
    }
  };
  if (!text.empty()) {
    if (!m.added.has(false)) {
      encode_stretch(text, true);
    } else {
      std::vector<AddedTokens::Match> outer;
      m.added.split(text, false, outer);
      for (const auto& piece : outer) {
        if (piece.id >= 0) {
          ids.push_back(piece.id);
        } else {
          encode_stretch(text.substr(piece.begin, piece.end - piece.begin), piece.begin == 0);
        }
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix.begin(), m.suffix.end());
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_bos(std::string_view text, int32_t bos_id) const {
  std::vector<int32_t> ids{bos_id};
  const auto rest = encode(text);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  impl_->check_id(id);
  return impl_->bytes[id];
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    impl_->check_id(id);
    out += impl_->bytes[id];
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    impl_->check_id(id);
    tokens.push_back(impl_->spelling[id]);
  }
  return impl_->decoder.decode(std::move(tokens));
}

int64_t Tokenizer::vocab_size() const {
  return static_cast<int64_t>(impl_->flags.size());
}
int64_t Tokenizer::num_tokens() const {
  return impl_->num_tokens;
}
int64_t Tokenizer::num_merges() const {
  return impl_->model.num_merges();
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  return impl_->find(token);
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}
std::span<const int32_t> Tokenizer::special_prefix() const {
  return impl_->prefix;
}
std::span<const int32_t> Tokenizer::special_suffix() const {
  return impl_->suffix;
}
const std::vector<int32_t>& Tokenizer::eos_ids() const {
  return impl_->eos_ids;
}

void Tokenizer::set_eos_ids(std::vector<int32_t> ids) {
  for (int32_t id : ids) impl_->check_id(id);
  impl_->eos_ids = std::move(ids);
}

bool Tokenizer::is_eos(int32_t id) const {
  return std::find(impl_->eos_ids.begin(), impl_->eos_ids.end(), id) != impl_->eos_ids.end();
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->flags.size() &&
         (impl_->flags[id] & Impl::kSpecial);
}

}  // namespace sf::tok
