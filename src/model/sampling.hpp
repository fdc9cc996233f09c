// Choosing the next token from a row of logits: greedy, or temperature + top-k + top-p sampling
// with a seeded generator. The same seed, settings and logits give the same tokens on every
// machine: the generator is std::mt19937_64 (fully specified by the standard) and the uniform draw
// is computed here rather than by std::uniform_real_distribution (whose algorithm is
// implementation-defined).
#pragma once
#include <cstdint>
#include <random>
#include <span>

namespace sf::model {

struct SamplingParams {
  bool greedy = true;        // argmax; the other fields are ignored
  float temperature = 1.0f;  // > 0; logits are divided by it
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  float top_p = 1.0f;  // keep the smallest set of most likely tokens whose mass reaches p; 1 = all
  uint64_t seed = 0;
};

class Sampler {
 public:
  // Throws Error(InvalidArgument) for temperature <= 0, top_k < 0 or top_p outside (0, 1].
  explicit Sampler(const SamplingParams& p);
  // Picks a token id from logits[vocab]. Greedy ties go to the lowest id (like torch.argmax).
  int32_t sample(std::span<const float> logits);
  const SamplingParams& params() const { return p_; }

 private:
  double uniform01();  // [0, 1) with 53 random bits
  SamplingParams p_;
  std::mt19937_64 rng_;
};

// Index of the largest value, the lowest index among equals; NaN is never chosen unless all are
// NaN.
int32_t argmax(std::span<const float> logits);

}  // namespace sf::model
