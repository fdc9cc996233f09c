// Built when SparseFlow is configured without CUDA: OptCuda exists so the CLI links, and says why
// the GPU path is unavailable.
#include "core/error.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "model/opt_cuda.hpp"

namespace sf::model {

struct OptCuda::Impl {};

std::string cuda_unavailable_reason() { return sf::cuda::unavailable_reason(); }

OptCuda::OptCuda(const Model&, const CudaOptions&) {
  throw Error(Status::NoDevice, cuda_unavailable_reason() + "; use --device cpu");
}
OptCuda::~OptCuda() = default;

// Unreachable: no OptCuda object can exist in this build.
const OptConfig& OptCuda::config() const { throw Error(Status::NoDevice, cuda_unavailable_reason()); }
const Model& OptCuda::model() const { throw Error(Status::NoDevice, cuda_unavailable_reason()); }
void OptCuda::reset(int64_t, int64_t) {}
int64_t OptCuda::length() const { return 0; }
int64_t OptCuda::capacity() const { return 0; }
int64_t OptCuda::batch() const { return 0; }
std::vector<float> OptCuda::forward(std::span<const int32_t>, bool) { return {}; }
std::vector<StageProfile> OptCuda::profile_decode(int64_t, int64_t, int64_t) { return {}; }
std::vector<StageProfile> OptCuda::profile_prefill(int64_t) { return {}; }
double OptCuda::dense_gemm_prefill_ms(int64_t) { return 0; }
double OptCuda::measure_read_bandwidth() { return 0; }
GenerateResult OptCuda::generate(std::span<const int32_t>, int64_t, const SamplingParams&,
                                 const std::function<void(int32_t)>&) {
  return {};
}
BatchGenerateResult OptCuda::generate_batch(const std::vector<std::vector<int32_t>>&, int64_t, const SamplingParams&) {
  return {};
}
PerplexityResult OptCuda::perplexity(std::span<const int32_t>, int64_t) { return {}; }
size_t OptCuda::weight_bytes_per_step() const { return 0; }
size_t OptCuda::kv_bytes_per_step(int64_t, int64_t) const { return 0; }
CudaMemoryReport OptCuda::memory() const { return {}; }
std::string OptCuda::device_name() const { return {}; }
std::string OptCuda::prefill_plans() const { return {}; }
bool OptCuda::sparse() const { return false; }
bool OptCuda::pdl() const { return false; }
double OptCuda::measure_copy_bandwidth(size_t) { return 0.0; }

}  // namespace sf::model
