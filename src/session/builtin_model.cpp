#include "session/builtin_model.hpp"

#include <stdlib.h>

#include <filesystem>

#include "core/error.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"

namespace sf::session {

namespace {

namespace fs = std::filesystem;

// The HF checkpoint the .sf file is converted from, next to the target (same file system, so the
// disk that holds the result holds the scratch too), removed on every exit path.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const fs::path& near) {
    std::string pattern = (near / ".sparseflow-builtin-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      fail(Status::Io, "cannot create a scratch directory in '{}'; check that it is writable",
           near.string());
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

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
  const ScratchDir tmp(parent);
  model::SynthOptions o;  // arch tiny, seed 0, fp16: what `sparseflow synth --arch tiny` writes
  model::write_tiny_opt(tmp.path.string(), o);
  const auto m = model::Model::open(tmp.path.string());
  model::ConvertOptions co;
  co.extra_metadata = {{"source.format", "synth"},
                       {"source.path", "sparseflow synth --arch tiny --seed 0"},
                       {"builtin", true}};
  model::convert_to_sf(*m, path, co);  // writes a temporary and renames it onto `path`
}

}  // namespace sf::session
