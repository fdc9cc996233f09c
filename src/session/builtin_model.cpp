#include "session/builtin_model.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "model/synth.hpp"

namespace sf::session {

namespace fs = std::filesystem;

void write_builtin_model(const std::string& path, bool replace) {
  if (path.empty())
    fail(Status::InvalidArgument, "the built-in model needs an output path, got an empty one");
  if (fs::is_directory(path))
    fail(Status::InvalidArgument,
         "'{}' is a directory; the built-in model is written as one .sf file", path);
  if (fs::exists(path) && !replace)
    fail(Status::InvalidArgument,
         "'{}' exists; pass force (replace) to write the built-in model over it", path);
  const fs::path parent = fs::absolute(path).parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail(Status::Io, "cannot create the directory '{}': {}", parent.string(), ec.message());
  model::SynthOptions o;  // arch tiny, seed 0, fp16: what `sparseflow synth --arch tiny` writes
  model::ConvertOptions co;
  co.extra_metadata = {{"source.format", "synth"},
                       {"source.path", "sparseflow synth --arch tiny --seed 0"},
                       {"builtin", true}};
  model::write_tiny_opt_sf(path, o, co);  // the .sf file appears only when complete
}

}  // namespace sf::session
