// OffloadedOpt (offload/offloaded_opt.hpp): the neuron store, the plan, the offload runtime and the
// CUDA engine wired together; generation with per-step stats.
#include "offload/offloaded_opt.hpp"

#include <cuda_runtime.h>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "offload/cuda/offload_runtime.hpp"
#include "offload/neuron_store.hpp"

namespace sf::offload {

namespace {

class OffloadedOptEngine final : public OffloadedOpt {
 public:
  OffloadedOptEngine(const model::Model& model, const OffloadOptions& opt,
                     const model::CudaOptions& cuda, const OffloadTuning& tuning,
                     std::optional<Plan> plan);
  ~OffloadedOptEngine() override;
  OffloadedOptEngine(const OffloadedOptEngine&) = delete;
  OffloadedOptEngine& operator=(const OffloadedOptEngine&) = delete;

  model::CudaEngine& engine() override;
  const Plan& plan() const override;
  const NeuronStore& store() const override;
  const OffloadProbe& probe() const override;
  model::GenerateResult generate(std::span<const int32_t> prompt, int64_t max_new_tokens,
                                 const model::SamplingParams& sampling,
                                 const std::function<void(int32_t)>& on_token) override;
  OffloadStats stats() const override;
  std::string describe() const override;
  nlohmann::ordered_json describe_json() const override;
  size_t device_bytes() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace

std::unique_ptr<OffloadedOpt> make_offloaded_opt(const model::Model& model,
                                                 const OffloadOptions& opt,
                                                 const model::CudaOptions& cuda,
                                                 const OffloadTuning& tuning,
                                                 std::optional<Plan> plan) {
  return std::make_unique<OffloadedOptEngine>(model, opt, cuda, tuning, std::move(plan));
}

struct OffloadedOptEngine::Impl {
  NeuronStore store;
  Plan plan;
  OffloadOptions opt;
  OffloadTuning tuning;
  std::unique_ptr<OffloadRuntime> runtime;  // destroyed after the engine (members in reverse order)
  std::unique_ptr<model::CudaEngine> engine;
  OffloadStats last;
};

OffloadedOptEngine::OffloadedOptEngine(const model::Model& model, const OffloadOptions& opt,
                                       const model::CudaOptions& cuda, const OffloadTuning& tuning,
                                       std::optional<Plan> plan) {
  if (const std::string why = model::cuda_unavailable_reason(); !why.empty())
    fail(Status::NoDevice, "{}", why);
  if (cuda.fp32_compute)
    fail(Status::UnsupportedShape,
         "offloaded inference computes in the model's type (fp16/bf16); fp32_compute is "
         "for the resident engine's tests.");
  if (!plan && !opt.enabled())
    fail(Status::InvalidArgument,
         "offloaded inference needs a GPU budget (--gpu-memory SIZE) or a placement plan.");
  if (const auto& c = model.config(); c.is_gated() || c.act != arch::Act::ReLU)
    fail(
        Status::UnsupportedShape,
        "neuron-level offloading skips the FFN neurons a ReLU leaves at zero; this model's MLP is "
        "{} {}, "
        "whose outputs are not zeros to skip.\n---> HINT: `generate` and `perplexity` run it under "
        "--gpu-memory by streaming whole layers from host memory.",
        c.is_gated() ? "gated with" : "plain with", arch::name(c.act));
  auto m = std::make_unique<Impl>(Impl{NeuronStore::from_model(model, /*pack_row_major=*/true),
                                       Plan{},
                                       opt,
                                       tuning,
                                       nullptr,
                                       nullptr,
                                       {}});
  m->plan = plan ? std::move(*plan)
                 : plan_placement(planner_input(model, m->store, tuning.context_tokens, opt));
  m->runtime = std::make_unique<OffloadRuntime>(model, m->store, m->plan, opt, tuning, cuda.device);
  model::CudaOptions c = cuda;
  c.ffn_provider = m->runtime.get();
  c.attention_host_layers =
      m->plan.attention_host_layers;  // the budget could not hold all the attention
  m->engine = model::make_cuda_engine(model, c);
  impl_ = std::move(m);
}

OffloadedOptEngine::~OffloadedOptEngine() {
  if (impl_) impl_->engine.reset();  // its graphs launch into the runtime's buffers
}

model::CudaEngine& OffloadedOptEngine::engine() {
  return *impl_->engine;
}
const Plan& OffloadedOptEngine::plan() const {
  return impl_->plan;
}
const NeuronStore& OffloadedOptEngine::store() const {
  return impl_->store;
}
const OffloadProbe& OffloadedOptEngine::probe() const {
  return impl_->runtime->probe();
}
OffloadStats OffloadedOptEngine::stats() const {
  return impl_->last;
}
std::string OffloadedOptEngine::describe() const {
  return impl_->runtime->describe();
}
nlohmann::ordered_json OffloadedOptEngine::describe_json() const {
  return impl_->runtime->describe_json();
}
size_t OffloadedOptEngine::device_bytes() const {
  return impl_->runtime->device_bytes();
}

model::GenerateResult OffloadedOptEngine::generate(std::span<const int32_t> prompt,
                                                   int64_t max_new_tokens,
                                                   const model::SamplingParams& sampling,
                                                   const std::function<void(int32_t)>& on_token) {
  auto& m = *impl_;
  OffloadStats before;
  int64_t calls = 0;
  // on_token runs after the prefill, then after each decode step, with the step synchronised and
  // outside the engine's decode timing: the place to read events and check recall.
  auto cb = [&](int32_t id) {
    if (calls == 0)
      before = m.runtime->totals();
    else if (m.opt.stats)
      m.runtime->after_decode_step();
    ++calls;
    if (on_token) on_token(id);
  };
  model::GenerateResult res = m.engine->generate(prompt, max_new_tokens, sampling, cb);
  const OffloadStats after = m.runtime->totals();
  OffloadStats s;
  s.tokens = res.decode_steps;
  s.active = after.active - before.active;
  s.hits = after.hits - before.hits;
  s.fetched = after.fetched - before.fetched;
  s.overflow = after.overflow - before.overflow;
  s.cpu_neurons = after.cpu_neurons - before.cpu_neurons;
  s.pcie_bytes = after.pcie_bytes - before.pcie_bytes +
                 double(res.decode_steps) * m.runtime->fixed_pcie_bytes_per_token();
  s.exact_rows = after.exact_rows - before.exact_rows;
  s.exact_active = after.exact_active - before.exact_active;
  s.true_pos = after.true_pos - before.true_pos;
  s.false_pos = after.false_pos - before.false_pos;
  s.step_ms = after.step_ms - before.step_ms;
  s.transfer_ms = after.transfer_ms - before.transfer_ms;
  s.wait_ms = after.wait_ms - before.wait_ms;
  s.timed_steps = after.timed_steps - before.timed_steps;
  m.last = s;
  return res;
}

}  // namespace sf::offload
