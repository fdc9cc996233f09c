// The built-in default model: the tiny OPT that `sparseflow synth --arch tiny --format sf` writes
// (random weights, the fixture tokenizer), so that the demo and the bindings' examples run with no
// download. It says it is random: its metadata names the synthetic source.
#pragma once
#include <string>

namespace sf::session {

// Writes the built-in model as a .sf file at `path` (atomically: readers never see half a file).
// An existing file is kept unless `replace`: Error(InvalidArgument) then, naming it.
void write_builtin_model(const std::string& path, bool replace);

}  // namespace sf::session
