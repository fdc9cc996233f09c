#include "offload/decode_limit.hpp"

namespace sf::offload {

std::optional<DecodeLimit> decode_limit(const Plan& plan, const OffloadStats& st, const DecodeLimitInput& in) {
  if (st.tokens <= 0 || st.exact_rows <= 0 || in.hbm_GBps <= 0) return std::nullopt;
  // A resident run moves nothing over PCIe and has no DMA bandwidth probe: its limit is the HBM one.
  if (st.bytes_per_token() > 0 && in.pcie_GBps <= 0) return std::nullopt;
  const PlannerInput& p = plan.input;
  const double t = double(st.tokens);
  const double row = double(p.hidden) * in.act_bytes;  // one fc1 row or one fc2 column
  const double listed = st.active / t;                  // neurons in the active lists, all layers
  DecodeLimit l;
  l.gpu_bytes = double(p.attention_bytes - plan.attention_host_bytes) + double(in.head_bytes) + double(p.norm_bytes) +
                double(p.ffn_bias_bytes) + double(p.predictor_bytes) + double(p.kv_cache_bytes) * in.kv_share +
                listed * row * (1.0 + st.precision());
  l.pcie_bytes = st.bytes_per_token();
  l.hbm_ms = l.gpu_bytes / (in.hbm_GBps * 1e6);
  l.pcie_ms = l.pcie_bytes > 0 ? l.pcie_bytes / (in.pcie_GBps * 1e6) : 0.0;
  return l;
}

}  // namespace sf::offload
