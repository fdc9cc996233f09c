#include "model/ffn_bundles_cpu.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "format/neuron_bundles.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::model {

using format::BundleLayout;

namespace {

constexpr int kLanes = 16;  // gemm_dense_cpu's dot product: 16 fp32 lanes, neuron j in lane j % 16
constexpr int64_t kOut = 64;  // outputs per work item

// One work item: outputs [o0, o1) of every row. The body is compiled once per ISA with the same
// target attributes as gemm_dense_cpu's dense rows so that the compiler makes the same contraction
// choices (a*b+c fused or not) in both.
template <int kDummy = 0>
inline __attribute__((always_inline)) void fc2_block_body(
    const NeuronMajorFfn& nm, const BundleLayout& L, const float* h, int64_t rows,
    const std::vector<std::vector<int32_t>>& active, const void* b2, DType b2dt,
    const float* residual, float* y, int64_t o0, int64_t o1) {
  const int64_t F = nm.ffn, H = nm.hidden, F16 = F / kLanes * kLanes;
  const int64_t w = o1 - o0;
  alignas(64) float lanes[kLanes][kOut];
  alignas(64) float col[kOut];
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& l : lanes) std::fill(l, l + w, 0.0f);
    const float* hr = h + r * F;
    const auto& act = active[size_t(r)];
    size_t t = 0;
    for (; t < act.size() && act[t] < F16; ++t) {
      const int32_t j = act[t];
      const uint8_t* c = nm.bundles + uint64_t(j) * nm.stride + L.fc2_offset;
      for (int64_t o = 0; o < w; ++o) col[o] = load_as_float(c, nm.dtype, size_t(o0 + o));
      float* lane = lanes[j % kLanes];
      const float hv = hr[j];
      for (int64_t o = 0; o < w; ++o) lane[o] += col[o] * hv;
    }
    float* yr = y + r * H;
    for (int64_t o = 0; o < w; ++o) {
      float s = 0.0f;
      for (int l = 0; l < kLanes; ++l) s += lanes[l][o];
      yr[o0 + o] = s;
    }
    for (; t < act.size(); ++t) {  // neurons past the last full group of 16: the dot product's tail
      const int32_t j = act[t];
      const uint8_t* c = nm.bundles + uint64_t(j) * nm.stride + L.fc2_offset;
      for (int64_t o = 0; o < w; ++o)
        yr[o0 + o] += load_as_float(c, nm.dtype, size_t(o0 + o)) * hr[j];
    }
    for (int64_t o = o0; o < o1; ++o) {
      float v = yr[o];
      if (b2) v += load_as_float(b2, b2dt, size_t(o));
      if (residual) v += residual[r * H + o];
      yr[o] = v;
    }
  }
}

__attribute__((target("avx512f"))) void fc2_block_avx512(
    const NeuronMajorFfn& nm, const BundleLayout& L, const float* h, int64_t rows,
    const std::vector<std::vector<int32_t>>& active, const void* b2, DType b2dt,
    const float* residual, float* y, int64_t o0, int64_t o1) {
  fc2_block_body(nm, L, h, rows, active, b2, b2dt, residual, y, o0, o1);
}
__attribute__((target("avx2,fma,f16c"))) void fc2_block_avx2(
    const NeuronMajorFfn& nm, const BundleLayout& L, const float* h, int64_t rows,
    const std::vector<std::vector<int32_t>>& active, const void* b2, DType b2dt,
    const float* residual, float* y, int64_t o0, int64_t o1) {
  fc2_block_body(nm, L, h, rows, active, b2, b2dt, residual, y, o0, o1);
}
void fc2_block_portable(const NeuronMajorFfn& nm, const BundleLayout& L, const float* h,
                        int64_t rows, const std::vector<std::vector<int32_t>>& active,
                        const void* b2, DType b2dt, const float* residual, float* y, int64_t o0,
                        int64_t o1) {
  fc2_block_body(nm, L, h, rows, active, b2, b2dt, residual, y, o0, o1);
}

}  // namespace

void bundles_fc1_cpu(const NeuronMajorFfn& nm, const float* b1, const float* x, int64_t rows,
                     float* z) {
  const BundleLayout L = BundleLayout::make(nm.hidden, nm.dtype);
  if (L.stride != nm.stride)
    fail(Status::Format, "neuron bundles have stride {} bytes, expected {} for hidden {} {}",
         nm.stride, L.stride, nm.hidden, dtype_name(nm.dtype));
  const int64_t width = int64_t(L.stride / L.elem);  // a bundle read as one matrix row
  std::vector<float> xp(static_cast<size_t>(rows * width), 0.0f);  // [rows, width]: x, then zeros
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(xp.data() + r * width, x + r * nm.hidden, size_t(nm.hidden) * 4);
  const s24::MatrixView w{nm.bundles, nm.dtype, nm.ffn, width};
  s24::Epilogue ep;
  if (b1) {
    ep.bias = b1;
    ep.bias_dtype = DType::F32;
  }
  s24::gemm_dense_cpu(w, xp.data(), DType::F32, rows, z, DType::F32, ep);
}

void bundles_fc2_cpu(const NeuronMajorFfn& nm, const float* h, int64_t rows, const void* b2,
                     DType b2_dtype, const float* residual, float* y) {
  const BundleLayout L = BundleLayout::make(nm.hidden, nm.dtype);
  const int64_t F = nm.ffn, H = nm.hidden;
  std::vector<std::vector<int32_t>> active(
      static_cast<size_t>(rows));  // nonzero activations per row, ascending
  for (int64_t r = 0; r < rows; ++r) {
    auto& a = active[size_t(r)];
    a.reserve(size_t(F / 8));
    for (int64_t j = 0; j < F; ++j)
      if (!(h[r * F + j] == 0.0f)) a.push_back(int32_t(j));  // NaN counts as active: poison shows
  }
  uint64_t work = 0;
  for (const auto& a : active) work += a.size();
  const int64_t blocks = (H + kOut - 1) / kOut;
  const s24::CpuIsa isa = s24::cpu_isa();
#pragma omp parallel for schedule(dynamic, 1) if (work * uint64_t(H) > (1u << 16))
  for (int64_t bi = 0; bi < blocks; ++bi) {
    const int64_t o0 = bi * kOut, o1 = std::min(H, o0 + kOut);
    if (isa == s24::CpuIsa::Avx512)
      fc2_block_avx512(nm, L, h, rows, active, b2, b2_dtype, residual, y, o0, o1);
    else if (isa == s24::CpuIsa::Avx2)
      fc2_block_avx2(nm, L, h, rows, active, b2, b2_dtype, residual, y, o0, o1);
    else
      fc2_block_portable(nm, L, h, rows, active, b2, b2_dtype, residual, y, o0, o1);
  }
}

}  // namespace sf::model
