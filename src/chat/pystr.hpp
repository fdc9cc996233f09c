// Python str semantics on UTF-8 text, for the Jinja interpreter: chat templates call str methods
// (strip, split, title, ...) and print values with str()/repr(), and a prompt must come out
// byte for byte as CPython would make it. Inputs are valid UTF-8 (checked where text enters).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sf::chat::py {

bool is_space(char32_t cp);      // str.isspace() of one character (also what re's \s matches)
bool is_printable(char32_t cp);  // str.isprintable() of one character

// Well-formed UTF-8 (what Python would decode): no overlongs, surrogates or values past U+10FFFF.
bool is_valid_utf8(std::string_view s);

// Number of code points (Python len()).
size_t length(std::string_view s);
bool is_ascii(std::string_view s);
// Byte offset of every code point, plus s.size() at the end.
std::vector<size_t> cp_offsets(std::string_view s);
std::vector<char32_t> decode(std::string_view s);
std::string encode(const std::vector<char32_t>& cps);

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string title(std::string_view s);       // str.title()
std::string capitalize(std::string_view s);  // str.capitalize()

enum class Side { Both, Left, Right };
// str.strip(chars): chars == nullopt strips whitespace.
std::string strip(std::string_view s, const std::optional<std::string>& chars, Side side);

// str.split(None, maxsplit) / str.split(sep, maxsplit) (sep non-empty); maxsplit < 0 = all.
std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit);
std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit);
std::vector<std::string> rsplit_whitespace(std::string_view s, int64_t maxsplit);
std::vector<std::string> rsplit(std::string_view s, std::string_view sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s, bool keepends);

// str.replace(old, new, count); count < 0 = all. An empty `old` inserts between code points.
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// str.count(sub) and str.find(sub) in code points (find: -1 when absent).
int64_t count(std::string_view s, std::string_view sub);
int64_t find(std::string_view s, std::string_view sub, bool from_right);

// repr() of a str: quotes and escapes exactly as CPython.
std::string repr(std::string_view s);
// json.dumps of a str with ensure_ascii=False / True.
std::string json_quote(std::string_view s, bool ensure_ascii);

// repr() of a float (shortest round-trip, Python's fixed/scientific switch).
std::string float_repr(double d);

}  // namespace sf::chat::py
