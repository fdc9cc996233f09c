// Built without CUDA: OffloadedOpt exists so the CLI links, and says why it cannot run.
#include "core/error.hpp"
#include "model/opt_cuda.hpp"
#include "offload/neuron_store.hpp"
#include "offload/offloaded_opt.hpp"

namespace sf::offload {

struct OffloadedOpt::Impl {};

OffloadedOpt::OffloadedOpt(const model::Model&, const OffloadOptions&, const model::CudaOptions&, const OffloadTuning&,
                           std::optional<Plan>) {
  throw Error(Status::NoDevice, model::cuda_unavailable_reason() +
                                    "; offloaded inference (--gpu-memory) needs the CUDA backend: rebuild with "
                                    "-DSPARSEFLOW_CUDA=ON, or drop --gpu-memory and use --device cpu");
}
OffloadedOpt::~OffloadedOpt() = default;

// Unreachable: no OffloadedOpt object can exist in this build.
model::OptCuda& OffloadedOpt::engine() { throw Error(Status::NoDevice, model::cuda_unavailable_reason()); }
const Plan& OffloadedOpt::plan() const { throw Error(Status::NoDevice, model::cuda_unavailable_reason()); }
const NeuronStore& OffloadedOpt::store() const { throw Error(Status::NoDevice, model::cuda_unavailable_reason()); }
const OffloadProbe& OffloadedOpt::probe() const { throw Error(Status::NoDevice, model::cuda_unavailable_reason()); }
model::GenerateResult OffloadedOpt::generate(std::span<const int32_t>, int64_t, const model::SamplingParams&,
                                             const std::function<void(int32_t)>&) {
  return {};
}
OffloadStats OffloadedOpt::stats() const { return {}; }
std::string OffloadedOpt::describe() const { return {}; }
nlohmann::ordered_json OffloadedOpt::describe_json() const { return {}; }
size_t OffloadedOpt::device_bytes() const { return 0; }

}  // namespace sf::offload
