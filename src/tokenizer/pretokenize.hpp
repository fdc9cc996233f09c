// GPT-2's pre-tokenizer: splits text into the pieces BPE runs on, as the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does, written out by hand over code points (no regex engine, linear time).
#pragma once
#include <cstddef>
#include <string_view>
#include <vector>

namespace sf::tok {

struct Piece {
  size_t begin, end;  // byte offsets into the text, end > begin
};

// `text` must be valid UTF-8 (see to_valid_utf8). The pieces cover the text in order, no gaps.
std::vector<Piece> pretokenize(std::string_view text);
void pretokenize(std::string_view text, std::vector<Piece>& out);  // appends to out

}  // namespace sf::tok
