#include "core/output_path.hpp"

#include <filesystem>

#include "core/error.hpp"

namespace sf {

namespace fs = std::filesystem;

namespace {

// The path with every symlink resolved, also for a path whose last parts do not exist yet.
fs::path resolved(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : r;
}

bool inside(const fs::path& child, const fs::path& parent) {
  auto c = child.begin();
  for (auto p = parent.begin(); p != parent.end(); ++p, ++c)
    if (c == child.end() || *p != *c) return false;
  return true;  // equal counts as inside
}

}  // namespace

void check_output(const NamedPath& output, const std::vector<NamedPath>& inputs, bool force) {
  const fs::path out = resolved(output.path);
  for (const auto& in : inputs) {
    if (in.path.empty()) continue;
    const fs::path i = resolved(in.path);
    if (out == i)
      fail(Status::InvalidArgument,
           "{} '{}' is the same path as {} '{}'; SparseFlow never writes "
           "into an input. Choose another output path.",
           output.flag, output.path, in.flag, in.path);
    if (inside(out, i))
      fail(Status::InvalidArgument,
           "{} '{}' lies inside {} '{}'; SparseFlow never writes into an "
           "input. Choose an output outside it.",
           output.flag, output.path, in.flag, in.path);
    if (inside(i, out))
      fail(Status::InvalidArgument,
           "{} '{}' lies inside {} '{}', which would be replaced; choose "
           "an output that does not hold an input.",
           in.flag, in.path, output.flag, output.path);
  }
  std::error_code ec;
  if (!force && fs::exists(fs::symlink_status(output.path, ec)))
    fail(Status::InvalidArgument,
         "{} '{}' already exists; pass --force to replace it (the old one "
         "stays until the new one is complete), or choose another path.",
         output.flag, output.path);
}

}  // namespace sf
