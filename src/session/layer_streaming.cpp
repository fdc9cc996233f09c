#include "session/layer_streaming.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.hpp"

namespace sf::session {

namespace {

double gib(uint64_t b) {
  return double(b) / double(1ull << 30);
}

}  // namespace

std::string LayerStreamingPlan::summary() const {
  return fmt::format(
      "layer streaming: the last {} layers' weights ({:.2f} GiB, {:.1f} MiB each) in mapped host "
      "memory, read over PCIe every token; on the GPU {:.2f} GiB of weights, {:.2f} GiB of KV "
      "cache, about {:.2f} GiB of workspace",
      host_layers, gib(layer_bytes * uint64_t(host_layers)), double(layer_bytes) / (1 << 20),
      gib(resident_bytes), gib(kv_bytes), gib(workspace_bytes));
}

LayerStreamingPlan plan_layer_streaming(const arch::ModelDesc& c, uint64_t budget_bytes,
                                        int64_t context_tokens, int64_t element_bytes) {
  const uint64_t e = uint64_t(element_bytes), H = uint64_t(c.hidden_size), F = uint64_t(c.ffn_dim),
                 V = uint64_t(c.vocab_size), L = uint64_t(c.num_hidden_layers);
  const uint64_t q = uint64_t(c.q_dim()), kv = uint64_t(c.kv_dim()),
                 T = uint64_t(std::max<int64_t>(context_tokens, 1));
  LayerStreamingPlan p;
  p.layer_bytes = e * (H * (q + 2 * kv) + q * H + (c.is_gated() ? 3 : 2) * F * H);
  uint64_t fixed = e * V * uint64_t(c.word_embed_proj_dim) * (c.tie_word_embeddings ? 1 : 2);
  if (c.positions == arch::Positions::Learned)
    fixed += e * uint64_t(c.max_position_embeddings + c.position_offset) * H;
  fixed += 4 * L * (4 * H + q + 2 * kv + 2 * F);  // norms and biases, at most, in fp32
  p.kv_bytes = 2 * L * kv * T * e;
  // Prefill rows of every activation (hidden, q/k/v, the MLP's 2F, fp32 logits of the last row)
  // plus cuBLAS's workspace and the attention scratch: the engine's own buffers, rounded up.
  p.workspace_bytes = T * 4 * (4 * H + q + 2 * kv + 2 * F) + 4 * V * 4 + (uint64_t(256) << 20);
  const uint64_t floor = fixed + p.kv_bytes + p.workspace_bytes;
  if (floor > budget_bytes)
    fail(Status::OutOfMemory,
         "a GPU budget of {:.2f} GiB cannot hold even this model's embeddings, norms, KV cache for "
         "{} tokens and workspace ({:.2f} GiB) with every layer's weights in host memory.\n---> "
         "HINT: give the GPU at least {:.2f} GiB, or a shorter context.",
         gib(budget_bytes), T, gib(floor), gib(floor));
  const uint64_t room = budget_bytes - floor;
  const uint64_t resident_layers =
      std::min<uint64_t>(L, room / std::max<uint64_t>(1, p.layer_bytes));
  p.host_layers = int64_t(L - resident_layers);
  p.resident_bytes = fixed + resident_layers * p.layer_bytes;
  return p;
}

LayerStreamingPlan plan_layer_streaming(const model::Model& m, const offload::SizeSpec& budget,
                                        int64_t context_tokens) {
  uint64_t model_bytes = 0;
  for (const auto& [name, t] : m.dense_tensors())
    model_bytes += uint64_t(t.numel()) * dtype_size(t.dtype);
  for (const auto& [name, c] : m.sparse_tensors()) model_bytes += c.values.size() + c.meta_bytes();
  return plan_layer_streaming(m.config(), budget.resolve(model_bytes), context_tokens,
                              int64_t(dtype_size(m.dtype())));
}

}  // namespace sf::session
