// GPT-2's byte-to-unicode map. A byte-level BPE vocabulary (GPT-2, OPT, Llama 3, Qwen2, SmolLM2)
// spells every byte as one printable character: printable Latin-1 bytes stand for themselves, the
// other 68 (controls, space, DEL, NBSP, soft hyphen) are moved to U+0100.., so " the" is "Ġthe".
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sf::tok {

char32_t byte_to_unicode(uint8_t b);

// The byte `cp` stands for, or -1 when it is outside the alphabet.
int unicode_to_byte(char32_t cp);

// `bytes` spelled in the alphabet (UTF-8): what a byte-level vocabulary calls them.
std::string byte_level_spelling(std::string_view bytes);

// The bytes a token spelled in the alphabet stands for; nullopt when a character of it is outside
// the alphabet (or it is not valid UTF-8).
std::optional<std::string> byte_level_bytes(std::string_view token);

}  // namespace sf::tok
