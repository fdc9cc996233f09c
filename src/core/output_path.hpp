// The rules for every file or directory a command writes at a path the user named: never write
// into an input, never replace an existing output without --force. Checked before any work starts,
// so that a mistake costs nothing; the writers (AtomicFile, AtomicDir) enforce the second rule
// again when they commit.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace sf {

struct NamedPath {
  std::string path;
  std::string_view flag;  // how the user gave it: "--input", "--calibration", ...
};

// Throws Error(InvalidArgument), naming the flags, when `output` is one of `inputs` or lies inside
// one (a directory input), or when an input lies inside `output` (replacing the directory would
// delete it), symlinks and relative paths resolved; and when `output` exists and `force` is false.
void check_output(const NamedPath& output, const std::vector<NamedPath>& inputs, bool force);

}  // namespace sf
