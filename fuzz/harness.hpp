// Shared by the fuzz harnesses. Each harness defines LLVMFuzzerTestOneInput; it is linked either
// with libFuzzer (the fuzz build, -DSPARSEFLOW_FUZZ=ON) or with replay_main.cpp (every build: a
// CTest that replays the seed corpus and the crash repros, so fixed crashes stay fixed).
//
// Contract under test: a parser given any bytes returns normally or throws sf::Error. Any other
// exception escaping is a bug (uncaught -> std::terminate -> reported as a crash), and so are the
// sanitizers' findings and the invariants checked with SF_FUZZ_CHECK.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define SF_FUZZ_CHECK(cond)                                                                  \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);    \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

// Reads every byte so that ASan sees an out-of-bounds view; returns a value so it is not elided.
inline uint8_t sf_fuzz_touch(const uint8_t* p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; ++i) acc ^= p[i];
  return acc;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
