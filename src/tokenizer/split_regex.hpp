// The pre-tokenizer regexes of the vocabularies SparseFlow loads, each written out by hand over
// code points (no regex engine; linear time), matching exactly what the `tokenizers` library's
// Oniguruma engine matches with the same pattern:
//   Gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (GPT-2, OPT, SmolLM2: the ByteLevel pre-tokenizer's built-in regex)
//   Llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2   as Llama3 with \p{N} for \p{N}{1,3}
// A tokenizer.json naming any other pattern is refused (split_regex_from_pattern), not guessed.
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "tokenizer/pretokenize.hpp"

namespace sf::tok {

enum class SplitRegex { Gpt2, Llama3, Qwen2 };

// The regex a Split pre-tokenizer's pattern is, compared character for character.
std::optional<SplitRegex> split_regex_from_pattern(std::string_view pattern);

// The pattern, as tokenizer.json writes it.
std::string_view split_regex_pattern(SplitRegex regex);

// Appends the matches of `regex` in `text` (valid UTF-8), which cover it in order with no gaps,
// as pieces whose offsets are relative to `text`.
void split_with_regex(SplitRegex regex, std::string_view text, std::vector<Piece>& out);

}  // namespace sf::tok
