// Unicode Normalization Form C (canonical decomposition, then canonical composition): the NFC
// normalizer of Qwen2's tokenizer.json. Tables: nfc_tables.inc (gen_tables.py).
#pragma once
#include <string>
#include <string_view>

namespace sf::tok {

// `text` must be valid UTF-8. Text below U+0300 is returned unchanged without being decoded.
std::string to_nfc(std::string_view text);

}  // namespace sf::tok
