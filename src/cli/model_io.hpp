// Small pieces shared by the commands that run a model (generate, perplexity, tokenize): parsing an
// --ids list and choosing the CPU thread count and device. The model's tokenizer and UTF-8
// streaming live below the CLI (the session, the C ABI and Python use them too); the commands keep
// calling them by these names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/weights.hpp"
#include "session/model_tokenizer.hpp"
#include "tokenizer/bpe.hpp"
#include "tokenizer/utf8_stream.hpp"

namespace sf::cli {

// "2,17, 5" -> {2, 17, 5}. Throws Error(InvalidArgument) naming the bad item.
std::vector<int32_t> parse_id_list(const std::string& text);

// The model's own vocab.json + merges.txt. Throws Error(NotFound) when the model carries none.
using session::model_tokenizer;
using tok::Utf8Stream;

// --threads N (0 keeps OpenMP's default). Throws Error(InvalidArgument) for N < 0.
void set_cpu_threads(int threads);
int cpu_threads();

// --device: only "cpu" runs these commands for now. Throws Error(InvalidArgument) otherwise.
void require_cpu_device(const std::string& device);

// --device cpu|cuda|auto of a command whose forward passes run on either backend (profile,
// calibrate): true for the GPU (cuda, or auto where a GPU is usable). Throws Error(InvalidArgument)
// for another value and Error(NoDevice), with the reason, for cuda without a usable GPU.
bool resolve_gpu_device(const char* command, const std::string& device);

}  // namespace sf::cli
