// CPU GEMM for 2:4 compressed weights (and the dense reference with the same contract):
//   y[M, N] = act(x[M, K] W^T + bias) + residual, fp32 accumulation.
//
// Two shapes of work, picked by M:
//  * M < 16 ("rows" path, decode): per output row n and 32-column block, the row's 16 metadata
//    indices become a lane-index vector once, and each x row is gathered through it (AVX-512:
//    one two-source permute of the 32 x values of the block) and FMA'd with the 16 kept weights.
//  * M >= 16 ("lanes" path, prefill): x is transposed into xT fp32 (in chunks of at most 256 rows
//    of x, stored as 64-lane slices [M / 64][K][64] so a slice's rows are contiguous), and for
//    each kept weight w at column c the kernel does acc[0:64] += w * xT[slice][c][0:64] with
//    broadcast FMAs. A group of 4 weight rows is decoded once
//    per 256-column K block into a small scratch (fp32 values + xT offsets), then reused for
//    every 64-lane slice of M, so each weight byte is read once per 256 rows of x.
// A gated epilogue (fused gate/up rows 2j, 2j + 1, sparse24.hpp) changes only the stores: store_row
// keeps a gate row's sums until its up row arrives, which every path produces next.
// Kernels exist for AVX-512F (+F16C semantics built in), AVX2+FMA+F16C and portable C++;
// dispatch is at run time (__builtin_cpu_supports), overridable with set_cpu_isa() for tests.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "sparse24/internal.hpp"
#include "sparse24/sparse24.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace sf::s24 {

float apply_activation(Activation a, float v) {
  switch (a) {
    case Activation::None:
      return v;
    case Activation::ReLU:
      return v < 0.0f ? 0.0f : v;  // NaN passes through (poison stays visible)
    case Activation::GELU:
      return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
    case Activation::SiLU:
      return v / (1.0f + std::exp(-v));
    case Activation::GELUTanh: {
      // 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)): the same function without 1 + tanh's cancellation
      // for negative v (at v = -5 that cost 3 of fp32's 24 bits). v^3 overflows beyond |v| ~ 7e12,
      // where exp(-2u) = 0 or Inf still gives v or -0.
      const float u2 = 1.5957691216057308f * (v + 0.044715f * v * v * v);  // 2 sqrt(2/pi) (...)
      return v / (1.0f + std::exp(-u2));
    }
  }
  return v;
}

// ---- ISA selection -------------------------------------------------------------------------

namespace {
std::atomic<CpuIsa> g_isa_override{CpuIsa::Auto};

CpuIsa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return CpuIsa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::Avx2;
  return CpuIsa::Generic;
}
}  // namespace

CpuIsa cpu_isa_supported() {
  static const CpuIsa isa = detect_isa();
  return isa;
}

void set_cpu_isa(CpuIsa isa) {
  if (isa != CpuIsa::Auto && int(isa) > int(cpu_isa_supported()))
    fail(Status::UnsupportedShape, "set_cpu_isa: this CPU supports up to {}, {} was asked for",
         cpu_isa_name(cpu_isa_supported()), cpu_isa_name(isa));
  g_isa_override.store(isa);
}

CpuIsa cpu_isa() {
  const CpuIsa o = g_isa_override.load();
  return o == CpuIsa::Auto ? cpu_isa_supported() : o;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Auto:
      return "auto";
    case CpuIsa::Generic:
      return "generic";
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Avx512:
      return "avx512";
  }
  return "?";
}

namespace {

// ---- shared pieces -------------------------------------------------------------------------

struct Out {
  void* y;
  DType ydt;
  int64_t m, n;  // y is [m, n] (n = N / 2 with a gated epilogue)
  const Epilogue* ep;
};

inline void store_out(const Out& o, int64_t mi, int64_t ni, float acc) {
  const Epilogue& ep = *o.ep;
  float v = acc;
  if (ep.bias) v += load_as_float(ep.bias, ep.bias_dtype, size_t(ni));
  v = apply_activation(ep.act, v);
  const size_t at = size_t(mi) * size_t(o.n) + size_t(ni);
  if (ep.residual) v += load_as_float(ep.residual, ep.residual_dtype, at);
  store_from_float(o.y, o.ydt, at, v);
}

// Gated: fused rows ni (gate) and ni + 1 (up) of token mi become y[mi, ni / 2].
inline void store_gated(const Out& o, int64_t mi, int64_t ni, float gate, float up) {
  const Epilogue& ep = *o.ep;
  if (ep.bias) {
    gate += load_as_float(ep.bias, ep.bias_dtype, size_t(ni));
    up += load_as_float(ep.bias, ep.bias_dtype, size_t(ni + 1));
  }
  float v = apply_activation(ep.act, gate) * up;
  const size_t at = size_t(mi) * size_t(o.n) + size_t(ni / 2);
  if (ep.residual) v += load_as_float(ep.residual, ep.residual_dtype, at);
  store_from_float(o.y, o.ydt, at, v);
}

// Output row ni of W for tokens m0 .. m0 + cnt - 1 (acc[0 .. cnt)). With a gated epilogue an even
// (gate) row waits in pending[0 .. cnt) for its up row, which every kernel here produces next in
// the same work item: each emits rows in increasing order from an even first row (the work items
// are 8 or 16 rows, N is even).
inline void store_row(const Out& o, int64_t ni, int64_t m0, int64_t cnt, const float* acc,
                      float* pending) {
  if (!o.ep->gated) {
    for (int64_t i = 0; i < cnt; ++i) store_out(o, m0 + i, ni, acc[i]);
  } else if ((ni & 1) == 0) {
    std::copy(acc, acc + cnt, pending);
  } else {
    for (int64_t i = 0; i < cnt; ++i) store_gated(o, m0 + i, ni - 1, pending[i], acc[i]);
  }
}

// Copy rows [m0, m0 + mc) of x [m, k] to fp32 dst [mc, ld], zero-filling columns k..ld.
void rows_to_f32(const void* x, DType xdt, int64_t k, int64_t m0, int64_t mc, int64_t ld,
                 float* dst) {
  for (int64_t i = 0; i < mc; ++i) {
    float* d = dst + size_t(i) * size_t(ld);
    const size_t base = size_t(m0 + i) * size_t(k);
    if (xdt == DType::F32) {
      std::memcpy(d, static_cast<const float*>(x) + base, size_t(k) * 4);
    } else {
      for (int64_t j = 0; j < k; ++j) d[j] = load_as_float(x, xdt, base + size_t(j));
    }
    std::fill(d + k, d + ld, 0.0f);
  }
}

inline float weight_at(const Compressed& w, size_t i) {
  return load_as_float(w.values.data(), w.dtype, i);
}

// Column of kept value j (0..15) of a 32-column block, given the row's block index word.
inline int kept_col(uint32_t word, int j) {
  return 4 * (j >> 1) + int((word >> (2 * j)) & 3u);
}

// ---- portable kernels (also compiled for AVX2 by the wrappers further down) -----------------

// Rows path: output rows [n0, n1), x rows xf [m, Kp] fp32 (padded with zeros).
template <int kMaxM>
inline __attribute__((always_inline)) void rows_generic(const Compressed& w, const float* xf,
                                                        int64_t m, int64_t n0, int64_t n1,
                                                        const Out& o) {
  const int64_t kp = w.cols_padded, kblocks = kp / 32;
  const size_t half = size_t(kp / 2);
  float pending[kMaxM] = {};  // a gate row's sums (gated epilogue)
  for (int64_t n = n0; n < n1; ++n) {
    float acc[kMaxM] = {};
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const uint32_t word = row_block_indices(w.meta.data(), kp, n, kb);
      float wv[16];
      int col[16];
      for (int j = 0; j < 16; ++j) {
        wv[j] = weight_at(w, size_t(n) * half + size_t(16 * kb + j));
        col[j] = int(32 * kb) + kept_col(word, j);
      }
      for (int64_t i = 0; i < m; ++i) {
        const float* xr = xf + size_t(i) * size_t(kp);
        float s = 0.0f;
        for (int j = 0; j < 16; ++j) s += wv[j] * xr[col[j]];
        acc[i] += s;
      }
    }
    store_row(o, n, 0, m, acc, pending);
  }
}

constexpr int kRowsPerPass = 4;  // weight rows accumulated together in the lanes kernel
constexpr int kKBlock = 64;      // K columns per decode block: a 64-lane xT slice of it is 16 KiB,
                                 // so it stays in L1 while every row of the N block uses it
                                 // (256 columns, 64 KiB, ran out of L2 bandwidth: 2x slower)
constexpr int kNBlock = 16;      // output rows per work item (rows_padded is a multiple of 16)
constexpr int kMChunk = 256;     // x rows transposed at once
constexpr int kLaneSlice = 64;   // M lanes accumulated in registers at once

// Decode kKBlock (or fewer) columns of rows [n, n + kRowsPerPass) into fp32 values and xT offsets
// (in floats: column within the block * row stride `mp` of the xT slice).
inline void decode_block(const Compressed& w, int64_t n, int64_t kc0, int kcols, int64_t mp,
                         float (*wbuf)[kKBlock / 2], int32_t (*obuf)[kKBlock / 2]) {
  const int64_t kp = w.cols_padded;
  const size_t half = size_t(kp / 2);
  for (int r = 0; r < kRowsPerPass; ++r)
    for (int b = 0; b < kcols / 32; ++b) {
      const int64_t kb = kc0 / 32 + b;
      const uint32_t word = row_block_indices(w.meta.data(), kp, n + r, kb);
      for (int j = 0; j < 16; ++j) {
        wbuf[r][16 * b + j] = weight_at(w, size_t(n + r) * half + size_t(16 * kb + j));
        obuf[r][16 * b + j] = int32_t((32 * b + kept_col(word, j)) * mp);
      }
    }
}

// Lanes path, one 64-lane (or narrower) slice of M: c[r][0:lanes] (+)= sum_j wbuf[r][j] * xT[..].
template <int kLanes>
inline __attribute__((always_inline)) void lanes_generic(const float* xt, int cnt, bool first,
                                                         const float (*wbuf)[kKBlock / 2],
                                                         const int32_t (*obuf)[kKBlock / 2],
                                                         float* c, int64_t ldc) {
  for (int r = 0; r < kRowsPerPass; ++r) {
    float acc[kLanes];
    for (int v = 0; v < kLanes; ++v) acc[v] = first ? 0.0f : c[r * ldc + v];
    for (int j = 0; j < cnt; ++j) {
      const float wj = wbuf[r][j];
      const float* p = xt + obuf[r][j];
      for (int v = 0; v < kLanes; ++v) acc[v] += wj * p[v];
    }
    for (int v = 0; v < kLanes; ++v) c[r * ldc + v] = acc[v];
  }
}

// ---- AVX-512 kernels -----------------------------------------------------------------------
// The all-lanes "maskz" forms below are the plain intrinsics in disguise: GCC 12's plain forms
// start from _mm512_undefined_*() and trip -Wmaybe-uninitialized (GCC bug 105593).
constexpr __mmask16 kAll16 = 0xffff;

__attribute__((target("avx512f"))) inline float hsum16(__m512 v) {
  const __m256 lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(v), 0));
  const __m256 hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xf, _mm512_castps_pd(v), 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  return _mm_cvtss_f32(s4);
}

__attribute__((target("avx512f"))) inline __m512 load16_as_f32(const uint8_t* p, DType dt) {
  switch (dt) {
    case DType::F16:
      return _mm512_maskz_cvtph_ps(kAll16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    case DType::BF16:
      return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(
          kAll16,
          _mm512_maskz_cvtepu16_epi32(kAll16,
                                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
          16));
    default:
      return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  }
}

// Lane j of the result = column of kept value j within its 32-column block.
__attribute__((target("avx512f"))) inline __m512i kept_cols16(uint32_t word) {
  const __m512i shifts =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i idx = _mm512_and_si512(
      _mm512_maskz_srlv_epi32(kAll16, _mm512_set1_epi32(int(word)), shifts), _mm512_set1_epi32(3));
  return _mm512_add_epi32(idx, base);
}

template <int kM>
__attribute__((target("avx512f"))) void rows_avx512(const Compressed& w, const float* xf,
                                                    int64_t n0, int64_t n1, const Out& o) {
  const int64_t kp = w.cols_padded, kblocks = kp / 32;
  const size_t es = dtype_size(w.dtype);
  const size_t half = size_t(kp / 2);
  float pending[kM] = {};  // a gate row's sums (gated epilogue)
  for (int64_t n = n0; n < n1; ++n) {
    __m512 acc[kM];
    for (int i = 0; i < kM; ++i) acc[i] = _mm512_setzero_ps();
    const uint8_t* vals = w.values.data() + size_t(n) * half * es;
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const __m512i cols = kept_cols16(row_block_indices(w.meta.data(), kp, n, kb));
      const __m512 wv = load16_as_f32(vals + size_t(16 * kb) * es, w.dtype);
      for (int i = 0; i < kM; ++i) {
        const float* xr = xf + size_t(i) * size_t(kp) + size_t(32 * kb);
        // Two-source permute = a 16-lane gather from the block's 32 x values, without gather's
        // cost.
        const __m512 g =
            _mm512_permutex2var_ps(_mm512_loadu_ps(xr), cols, _mm512_loadu_ps(xr + 16));
        acc[i] = _mm512_fmadd_ps(wv, g, acc[i]);
      }
    }
    float sums[kM];
    for (int i = 0; i < kM; ++i) sums[i] = hsum16(acc[i]);
    store_row(o, n, 0, kM, sums, pending);
  }
}

__attribute__((target("avx512f"))) void decode_block_avx512(const Compressed& w, int64_t n,
                                                            int64_t kc0, int kcols, int64_t mp,
                                                            float (*wbuf)[kKBlock / 2],
                                                            int32_t (*obuf)[kKBlock / 2]) {
  const int64_t kp = w.cols_padded;
  const size_t es = dtype_size(w.dtype);
  const size_t half = size_t(kp / 2);
  const __m512i block_step = _mm512_set1_epi32(32);
  const __m512i mpv = _mm512_set1_epi32(int(mp));
  for (int r = 0; r < kRowsPerPass; ++r) {
    const uint8_t* vals = w.values.data() + size_t(n + r) * half * es;
    __m512i block_base = _mm512_setzero_si512();
    for (int b = 0; b < kcols / 32; ++b) {
      const int64_t kb = kc0 / 32 + b;
      const __m512i cols = _mm512_add_epi32(
          kept_cols16(row_block_indices(w.meta.data(), kp, n + r, kb)), block_base);
      _mm512_storeu_si512(obuf[r] + 16 * b, _mm512_mullo_epi32(cols, mpv));
      _mm512_storeu_ps(wbuf[r] + 16 * b, load16_as_f32(vals + size_t(16 * kb) * es, w.dtype));
      block_base = _mm512_add_epi32(block_base, block_step);
    }
  }
}

template <int kV>
__attribute__((target("avx512f"))) void lanes_avx512(const float* xt, int cnt, bool first,
                                                     const float (*wbuf)[kKBlock / 2],
                                                     const int32_t (*obuf)[kKBlock / 2], float* c,
                                                     int64_t ldc) {
  __m512 acc[kRowsPerPass][kV];
  for (int r = 0; r < kRowsPerPass; ++r)
    for (int v = 0; v < kV; ++v)
      acc[r][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc + 16 * v);
  for (int j = 0; j < cnt; ++j) {
    for (int r = 0; r < kRowsPerPass; ++r) {
      const __m512 b = _mm512_set1_ps(wbuf[r][j]);
      const float* p = xt + obuf[r][j];
      for (int v = 0; v < kV; ++v)
        acc[r][v] = _mm512_fmadd_ps(b, _mm512_loadu_ps(p + 16 * v), acc[r][v]);
    }
  }
  for (int r = 0; r < kRowsPerPass; ++r)
    for (int v = 0; v < kV; ++v) _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

// ---- AVX2 and portable instantiations ------------------------------------------------------

template <int kLanes>
__attribute__((target("avx2,fma,f16c"))) void lanes_avx2(const float* xt, int cnt, bool first,
                                                         const float (*wbuf)[kKBlock / 2],
                                                         const int32_t (*obuf)[kKBlock / 2],
                                                         float* c, int64_t ldc) {
  lanes_generic<kLanes>(xt, cnt, first, wbuf, obuf, c, ldc);
}
template <int kLanes>
void lanes_portable(const float* xt, int cnt, bool first, const float (*wbuf)[kKBlock / 2],
                    const int32_t (*obuf)[kKBlock / 2], float* c, int64_t ldc) {
  lanes_generic<kLanes>(xt, cnt, first, wbuf, obuf, c, ldc);
}
__attribute__((target("avx2,fma,f16c"))) void rows_avx2(const Compressed& w, const float* xf,
                                                        int64_t m, int64_t n0, int64_t n1,
                                                        const Out& o) {
  rows_generic<16>(w, xf, m, n0, n1, o);
}
void rows_portable(const Compressed& w, const float* xf, int64_t m, int64_t n0, int64_t n1,
                   const Out& o) {
  rows_generic<16>(w, xf, m, n0, n1, o);
}

using LanesFn = void (*)(const float*, int, bool, const float (*)[kKBlock / 2],
                         const int32_t (*)[kKBlock / 2], float*, int64_t);
// Index = number of 16-lane vectors in the slice (1..4).
LanesFn lanes_kernel(CpuIsa isa, int vecs) {
  static const LanesFn k512[4] = {lanes_avx512<1>, lanes_avx512<2>, lanes_avx512<3>,
                                  lanes_avx512<4>};
  static const LanesFn k2[4] = {lanes_avx2<16>, lanes_avx2<32>, lanes_avx2<48>, lanes_avx2<64>};
  static const LanesFn kp[4] = {lanes_portable<16>, lanes_portable<32>, lanes_portable<48>,
                                lanes_portable<64>};
  if (isa == CpuIsa::Avx512) return k512[vecs - 1];
  if (isa == CpuIsa::Avx2) return k2[vecs - 1];
  return kp[vecs - 1];
}

void rows_dispatch(CpuIsa isa, const Compressed& w, const float* xf, int64_t m, int64_t n0,
                   int64_t n1, const Out& o) {
  if (isa == CpuIsa::Avx512) {
    using Fn = void (*)(const Compressed&, const float*, int64_t, int64_t, const Out&);
    static const Fn k[15] = {rows_avx512<1>,  rows_avx512<2>,  rows_avx512<3>,  rows_avx512<4>,
                             rows_avx512<5>,  rows_avx512<6>,  rows_avx512<7>,  rows_avx512<8>,
                             rows_avx512<9>,  rows_avx512<10>, rows_avx512<11>, rows_avx512<12>,
                             rows_avx512<13>, rows_avx512<14>, rows_avx512<15>};
    k[m - 1](w, xf, n0, n1, o);
  } else if (isa == CpuIsa::Avx2) {
    rows_avx2(w, xf, m, n0, n1, o);
  } else {
    rows_portable(w, xf, m, n0, n1, o);
  }
}

constexpr int64_t kRowsPathMaxM = 15;

void check_gemm_args(const void* x, DType xdt, int64_t m, int64_t k, void* y, DType ydt, int64_t n,
                     const Epilogue& ep, const char* what) {
  if (ep.gated && n % 2 != 0)
    fail(Status::InvalidArgument,
         "{}: a gated epilogue takes a fused gate/up weight (rows 2j, 2j + 1: gate and up of "
         "output j), so an even number of rows; this one has {}. Build it with s24::fuse_gate_up",
         what, n);
  if (ep.gated) n /= 2;  // y is [m, N / 2]
  auto is_act_type = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (m < 0) fail(Status::InvalidArgument, "{}: expected M >= 0, found {}", what, m);
  if (!is_act_type(xdt) || !is_act_type(ydt))
    fail(Status::InvalidArgument, "{}: x and y must be F32, F16 or BF16; found x {} and y {}", what,
         dtype_name(xdt), dtype_name(ydt));
  if (ep.bias && !is_act_type(ep.bias_dtype))
    fail(Status::InvalidArgument, "{}: bias must be F32, F16 or BF16, found {}", what,
         dtype_name(ep.bias_dtype));
  if (ep.residual && !is_act_type(ep.residual_dtype))
    fail(Status::InvalidArgument, "{}: residual must be F32, F16 or BF16, found {}", what,
         dtype_name(ep.residual_dtype));
  if (m > 0 && (x == nullptr || y == nullptr))
    fail(Status::InvalidArgument, "{}: x and y must not be null for M = {}", what, m);
  const auto* xb = static_cast<const uint8_t*>(x);
  const auto* yb = static_cast<const uint8_t*>(y);
  const size_t xbytes = size_t(m) * size_t(k) * dtype_size(xdt);
  const size_t ybytes = size_t(m) * size_t(n) * dtype_size(ydt);
  if (m > 0 && xb < yb + ybytes && yb < xb + xbytes)
    fail(Status::InvalidArgument,
         "{}: x and y overlap in memory; the kernel reads x while writing y, so give y its own "
         "buffer",
         what);
}

}  // namespace

void gemm_cpu(const Compressed& w, const void* x, DType x_dtype, int64_t m, void* y, DType y_dtype,
              const Epilogue& ep) {
  validate_compressed(w, "gemm_cpu");
  check_gemm_args(x, x_dtype, m, w.cols, y, y_dtype, w.rows, ep, "gemm_cpu");
  if (m == 0) return;
  const CpuIsa isa = cpu_isa();
  const Out o{y, y_dtype, m, ep.gated ? w.rows / 2 : w.rows, &ep};
  const int64_t kp = w.cols_padded, n_rows = w.rows;

  if (m <= kRowsPathMaxM) {
    std::vector<float> xf(size_t(m) * size_t(kp));  // [m, Kp] fp32, zero padded
    rows_to_f32(x, x_dtype, w.cols, 0, m, kp, xf.data());
    constexpr int64_t kChunk = 16;  // rows per work item: enough to amortise scheduling
    const int64_t chunks = (n_rows + kChunk - 1) / kChunk;
    const bool parallel = double(m) * double(n_rows) * double(kp) > 1e5;  // see gemm_dense_cpu
#pragma omp parallel for schedule(dynamic, 4) if (parallel)
    for (int64_t ci = 0; ci < chunks; ++ci)
      rows_dispatch(isa, w, xf.data(), m, ci * kChunk, std::min(n_rows, ci * kChunk + kChunk), o);
    return;
  }

  const int64_t mc_max = std::min<int64_t>(m, kMChunk);
  std::vector<float> xt_buf(size_t(kp) *
                            size_t((mc_max + kLaneSlice - 1) / kLaneSlice * kLaneSlice));
  float* xt = xt_buf.data();
  const int64_t nblocks = (w.rows_padded + kNBlock - 1) / kNBlock;
#pragma omp parallel
  {
    alignas(64) float wbuf[kNBlock][kKBlock / 2];         // decoded weights of the N block, fp32
    alignas(64) int32_t obuf[kNBlock][kKBlock / 2];       // their xT offsets (column * mp)
    std::vector<float> ctile(size_t(kNBlock) * kMChunk);  // [kNBlock, mp] fp32 accumulators
    std::vector<float> pending(ep.gated ? size_t(kMChunk) : 0);  // a gate row (store_row)
    for (int64_t m0 = 0; m0 < m; m0 += kMChunk) {
      const int64_t mc = std::min<int64_t>(kMChunk, m - m0);
      const int64_t mp = (mc + 15) / 16 * 16;
      // xT[lane / 64][k][lane % 64] = x[m0 + lane, k]; lanes >= mc and columns >= K are zero.
#pragma omp for schedule(static)
      for (int64_t k0 = 0; k0 < kp; k0 += 64) {
        const int64_t k1 = std::min(kp, k0 + 64);
        for (int64_t lane = 0; lane < mp; ++lane) {
          float* dst =
              xt + size_t(lane / kLaneSlice) * size_t(kp) * kLaneSlice + size_t(lane % kLaneSlice);
          const size_t xrow = size_t(m0 + lane) * size_t(w.cols);
          for (int64_t kk = k0; kk < k1; ++kk)
            dst[size_t(kk) * kLaneSlice] =
                lane < mc && kk < w.cols ? load_as_float(x, x_dtype, xrow + size_t(kk)) : 0.0f;
        }
      }
      // (implicit barrier: xT is complete)
#pragma omp for schedule(dynamic, 1)
      for (int64_t nb = 0; nb < nblocks; ++nb) {
        const int64_t nb0 = nb * kNBlock, nb1 = std::min(w.rows_padded, nb0 + kNBlock);
        for (int64_t kc0 = 0; kc0 < kp; kc0 += kKBlock) {
          const int kcols = int(std::min<int64_t>(kKBlock, kp - kc0));
          for (int64_t n = nb0; n < nb1; n += kRowsPerPass) {
            const int64_t r = n - nb0;
            if (isa == CpuIsa::Avx512)
              decode_block_avx512(w, n, kc0, kcols, kLaneSlice, wbuf + r, obuf + r);
            else
              decode_block(w, n, kc0, kcols, kLaneSlice, wbuf + r, obuf + r);
          }
          // Slice-outer: the slice's xT rows stay in L1 across all rows of the block.
          for (int64_t l0 = 0; l0 < mp; l0 += kLaneSlice) {
            const LanesFn kern =
                lanes_kernel(isa, int(std::min<int64_t>(kLaneSlice, mp - l0) / 16));
            for (int64_t r = 0; r < nb1 - nb0; r += kRowsPerPass)
              kern(xt + size_t(l0) * size_t(kp) + size_t(kc0) * kLaneSlice, kcols / 2, kc0 == 0,
                   wbuf + r, obuf + r, ctile.data() + size_t(r) * size_t(mp) + size_t(l0), mp);
          }
        }
        for (int64_t n = nb0; n < std::min(nb1, n_rows); ++n)
          store_row(o, n, m0, mc, ctile.data() + size_t(n - nb0) * size_t(mp), pending.data());
      }
      // (implicit barrier before xT is rebuilt)
    }
  }
}

// ---- dense reference -----------------------------------------------------------------------

namespace {

typedef float v16f __attribute__((vector_size(64)));

// 4 dot products of length k sharing one weight row (x rows are contiguous fp32).
inline __attribute__((always_inline)) void dot4(const float* wr, const float* x0, int64_t ldx,
                                                int cnt, int64_t k, float* out) {
  v16f acc[4] = {};
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    v16f wv;
    std::memcpy(&wv, wr + j, 64);
    for (int i = 0; i < 4; ++i) {
      if (i >= cnt) break;
      v16f xv;
      std::memcpy(&xv, x0 + i * ldx + j, 64);
      acc[i] += wv * xv;
    }
  }
  for (int i = 0; i < cnt; ++i) {
    float s = 0.0f;
    for (int l = 0; l < 16; ++l) s += acc[i][l];
    for (int64_t t = j; t < k; ++t) s += wr[t] * x0[i * ldx + t];
    out[i] = s;
  }
}

// Widens one weight row to fp32. The scalar form is the portable fallback; the ISA-specific ones
// below convert 8 or 16 elements per instruction, so the dense path is bound by reading W rather
// than by converting it (a scalar fp16 conversion made it several times slower than memory).
inline void row_to_f32_scalar(const MatrixView& w, size_t base, float* out) {
  for (int64_t j = 0; j < w.cols; ++j) out[j] = load_as_float(w.data, w.dtype, base + size_t(j));
}

// pending: m floats, a gate row's sums (gated epilogue, store_row).
template <typename RowToF32>
inline __attribute__((always_inline)) void dense_rows_body(const MatrixView& w, const float* xf,
                                                           int64_t m, int64_t n0, int64_t n1,
                                                           float* wrow, float* pending,
                                                           const Out& o, RowToF32 row_to_f32) {
  for (int64_t n = n0; n < n1; ++n) {
    const size_t base = size_t(n) * size_t(w.cols);
    row_to_f32(w, base, wrow);
    for (int64_t i = 0; i < m; i += 4) {
      float s[4];
      const int cnt = int(std::min<int64_t>(4, m - i));
      dot4(wrow, xf + size_t(i) * size_t(w.cols), w.cols, cnt, w.cols, s);
      store_row(o, n, i, cnt, s, pending + i);
    }
  }
}

__attribute__((target("avx512f"))) void row_to_f32_avx512(const MatrixView& w, size_t base,
                                                          float* out) {
  const size_t es = dtype_size(w.dtype);
  const uint8_t* p = static_cast<const uint8_t*>(w.data) + base * es;
  int64_t j = 0;
  for (; j + 16 <= w.cols; j += 16)
    _mm512_storeu_ps(out + j, load16_as_f32(p + size_t(j) * es, w.dtype));
  for (; j < w.cols; ++j) out[j] = load_as_float(w.data, w.dtype, base + size_t(j));
}
__attribute__((target("avx2,fma,f16c"))) void row_to_f32_avx2(const MatrixView& w, size_t base,
                                                              float* out) {
  const size_t es = dtype_size(w.dtype);
  const uint8_t* p = static_cast<const uint8_t*>(w.data) + base * es;
  int64_t j = 0;
  if (w.dtype == DType::F16) {
    for (; j + 8 <= w.cols; j += 8)
      _mm256_storeu_ps(
          out + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * j))));
  } else if (w.dtype == DType::BF16) {
    for (; j + 8 <= w.cols; j += 8) {
      const __m256i wide =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * j)));
      _mm256_storeu_ps(out + j, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
    }
  } else {
    std::memcpy(out, p, size_t(w.cols) * 4);
    j = w.cols;
  }
  for (; j < w.cols; ++j) out[j] = load_as_float(w.data, w.dtype, base + size_t(j));
}

// One activation row (decode): 8 weight rows at a time, so 8 independent accumulator chains hide
// the FMA latency that a single row's dot product waits on, with each row widened straight from
// memory (no fp32 copy of the row). Each row's arithmetic is dot4's for cnt = 1 (the same lanes,
// the same order), so decode and prefill agree bit for bit.
template <typename Load16>
inline __attribute__((always_inline)) void dense_rows_m1_body(const MatrixView& w, const float* x,
                                                              int64_t n0, int64_t n1,
                                                              float* pending, const Out& o,
                                                              Load16 load16) {
  constexpr int kRows = 8;
  const int64_t k = w.cols, k16 = k / 16 * 16;
  const size_t es = dtype_size(w.dtype);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t n = n0; n < n1; n += kRows) {
    const int rows = int(std::min<int64_t>(kRows, n1 - n));
    const uint8_t* wr[kRows];
    for (int r = 0; r < kRows; ++r)  // a short last group repeats its last row (not stored)
      wr[r] = base + size_t(n + std::min(r, rows - 1)) * size_t(k) * es;
    v16f acc[kRows] = {};
    for (int64_t j = 0; j < k16; j += 16) {
      v16f xv;
      std::memcpy(&xv, x + j, 64);
      for (int r = 0; r < kRows; ++r) {
        v16f wv;
        load16(wr[r] + size_t(j) * es, wv);
        acc[r] += wv * xv;
      }
    }
    for (int r = 0; r < rows; ++r) {
      float s = 0.0f;
      for (int l = 0; l < 16; ++l) s += acc[r][l];
      for (int64_t t = k16; t < k; ++t)
        s += load_as_float(w.data, w.dtype, size_t(n + r) * size_t(k) + size_t(t)) * x[t];
      store_row(o, n + r, 0, 1, &s, pending);
    }
  }
}

// 16 weights of type DT widened to fp32, written to `out` (a v16f return value would change the
// ABI of the AVX2 build). The type is a template argument so the inner loop has no branch.
template <DType DT>
struct Load16Avx512 {
  __attribute__((target("avx512f"))) void operator()(const uint8_t* p, v16f& out) const {
    const __m512 v = load16_as_f32(p, DT);
    std::memcpy(&out, &v, 64);
  }
};
template <DType DT>
struct Load16Avx2 {
  __attribute__((target("avx2,fma,f16c"))) void operator()(const uint8_t* p, v16f& out) const {
    __m256 lo, hi;
    if constexpr (DT == DType::F16) {
      lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
    } else if constexpr (DT == DType::BF16) {
      lo = _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
      hi = _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))), 16));
    } else {
      lo = _mm256_loadu_ps(reinterpret_cast<const float*>(p));
      hi = _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8);
    }
    std::memcpy(&out, &lo, 32);
    std::memcpy(reinterpret_cast<char*>(&out) + 32, &hi, 32);
  }
};

template <template <DType> class Load16>
inline __attribute__((always_inline)) void dense_rows_m1_dispatch(const MatrixView& w,
                                                                  const float* x, int64_t n0,
                                                                  int64_t n1, float* pending,
                                                                  const Out& o) {
  switch (w.dtype) {
    case DType::F16:
      return dense_rows_m1_body(w, x, n0, n1, pending, o, Load16<DType::F16>{});
    case DType::BF16:
      return dense_rows_m1_body(w, x, n0, n1, pending, o, Load16<DType::BF16>{});
    default:
      return dense_rows_m1_body(w, x, n0, n1, pending, o, Load16<DType::F32>{});
  }
}

__attribute__((target("avx512f"))) void dense_rows_m1_avx512(const MatrixView& w, const float* x,
                                                             int64_t n0, int64_t n1, float* pending,
                                                             const Out& o) {
  dense_rows_m1_dispatch<Load16Avx512>(w, x, n0, n1, pending, o);
}
__attribute__((target("avx2,fma,f16c"))) void dense_rows_m1_avx2(const MatrixView& w,
                                                                 const float* x, int64_t n0,
                                                                 int64_t n1, float* pending,
                                                                 const Out& o) {
  dense_rows_m1_dispatch<Load16Avx2>(w, x, n0, n1, pending, o);
}

__attribute__((target("avx512f"))) void dense_rows_avx512(const MatrixView& w, const float* xf,
                                                          int64_t m, int64_t n0, int64_t n1,
                                                          float* wrow, float* pending,
                                                          const Out& o) {
  dense_rows_body(w, xf, m, n0, n1, wrow, pending, o, row_to_f32_avx512);
}
__attribute__((target("avx2,fma,f16c"))) void dense_rows_avx2(const MatrixView& w, const float* xf,
                                                              int64_t m, int64_t n0, int64_t n1,
                                                              float* wrow, float* pending,
                                                              const Out& o) {
  dense_rows_body(w, xf, m, n0, n1, wrow, pending, o, row_to_f32_avx2);
}
void dense_rows_portable(const MatrixView& w, const float* xf, int64_t m, int64_t n0, int64_t n1,
                         float* wrow, float* pending, const Out& o) {
  dense_rows_body(w, xf, m, n0, n1, wrow, pending, o, row_to_f32_scalar);
}

}  // namespace

void gemm_dense_cpu(const MatrixView& w, const void* x, DType x_dtype, int64_t m, void* y,
                    DType y_dtype, const Epilogue& ep) {
  if (w.data == nullptr || w.rows <= 0 || w.cols <= 0 ||
      (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16))
    fail(Status::InvalidArgument,
         "gemm_dense_cpu: expected a non-empty F32/F16/BF16 weight matrix, found {} [{}, {}]{}",
         dtype_name(w.dtype), w.rows, w.cols, w.data ? "" : " with a null data pointer");
  check_gemm_args(x, x_dtype, m, w.cols, y, y_dtype, w.rows, ep, "gemm_dense_cpu");
  if (m == 0) return;
  const CpuIsa isa = cpu_isa();
  const Out o{y, y_dtype, m, ep.gated ? w.rows / 2 : w.rows, &ep};
  std::vector<float> xf(size_t(m) * size_t(w.cols));  // [m, K] fp32
  rows_to_f32(x, x_dtype, w.cols, 0, m, w.cols, xf.data());
  constexpr int64_t kChunk = 8;
  const int64_t chunks = (w.rows + kChunk - 1) / kChunk;
  // Below ~50k multiply-adds (a 64 KB fp16 weight read, ~10 us on one core) a parallel region's
  // wake-up (1-3 us with spinning threads) costs more than it saves. A higher bound, 5e5, left
  // SmolLM2's 576x576 and 192x576 decode products on one thread: 0.69 of 2.7 s of a 128-token
  // decode ran serially, and 2 threads were 1.36x one thread instead of 1.8x.
  const bool parallel = double(m) * double(w.rows) * double(w.cols) > 5e4;
  if (m == 1 && (isa == CpuIsa::Avx512 || isa == CpuIsa::Avx2)) {
    // Decode reads W once and is bound by memory: equal contiguous row ranges per thread (each a
    // sequential stream the prefetchers follow) in groups of 8 rows, which keeps a gated
    // product's gate/up row pairs together.
    const int64_t groups = (w.rows + 7) / 8;
#pragma omp parallel if (parallel)
    {
      float pending = 0.0f;
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t n0 = g * 8, n1 = std::min(w.rows, n0 + 8);
        if (isa == CpuIsa::Avx512)
          dense_rows_m1_avx512(w, xf.data(), n0, n1, &pending, o);
        else
          dense_rows_m1_avx2(w, xf.data(), n0, n1, &pending, o);
      }
    }
    return;
  }
#pragma omp parallel if (parallel)
  {
    std::vector<float> wrow(size_t(w.cols));
    std::vector<float> pending(ep.gated ? size_t(m) : 0);
#pragma omp for schedule(dynamic, 2)
    for (int64_t ci = 0; ci < chunks; ++ci) {
      const int64_t n0 = ci * kChunk, n1 = std::min(w.rows, n0 + kChunk);
      if (isa == CpuIsa::Avx512)
        dense_rows_avx512(w, xf.data(), m, n0, n1, wrow.data(), pending.data(), o);
      else if (isa == CpuIsa::Avx2)
        dense_rows_avx2(w, xf.data(), m, n0, n1, wrow.data(), pending.data(), o);
      else
        dense_rows_portable(w, xf.data(), m, n0, n1, wrow.data(), pending.data(), o);
    }
  }
}

void gemv_dense_cpu(std::span<const GemvTarget> targets, const float* x) {
  if (targets.empty()) return;
  const CpuIsa isa = cpu_isa();
  const int64_t K = targets[0].w.cols;
  bool fused = isa == CpuIsa::Avx512 || isa == CpuIsa::Avx2;
  double work = 0;
  for (const auto& t : targets) {
    if (t.w.cols != K)
      fail(Status::InvalidArgument,
           "gemv_dense_cpu: every target reads the same row of {} values, found a [{}, {}] weight",
           K, t.w.rows, t.w.cols);
    if (t.ep.gated) fused = false;
    work += double(t.w.rows) * double(K);
  }
  if (!fused) {  // one product after another, as the caller would have done
    for (const auto& t : targets) gemm_dense_cpu(t.w, x, DType::F32, 1, t.y, DType::F32, t.ep);
    return;
  }
  std::vector<Out> outs;
  std::vector<int64_t> first(targets.size() + 1, 0);  // first[t]: target t's first 8-row group
  for (size_t t = 0; t < targets.size(); ++t) {
    const auto& g = targets[t];
    if (g.w.data == nullptr || g.w.rows <= 0 ||
        (g.w.dtype != DType::F32 && g.w.dtype != DType::F16 && g.w.dtype != DType::BF16))
      fail(Status::InvalidArgument,
           "gemv_dense_cpu: expected a non-empty F32/F16/BF16 weight, found {} [{}, {}]",
           dtype_name(g.w.dtype), g.w.rows, g.w.cols);
    check_gemm_args(x, DType::F32, 1, K, g.y, DType::F32, g.w.rows, g.ep, "gemv_dense_cpu");
    outs.push_back(Out{g.y, DType::F32, 1, g.w.rows, &g.ep});
    first[t + 1] = first[t] + (g.w.rows + 7) / 8;
  }
  const int64_t groups = first.back();
#pragma omp parallel if (work > 5e4)
  {
    float pending = 0.0f;
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const size_t t = size_t(std::upper_bound(first.begin(), first.end(), gi) - first.begin()) - 1;
      const MatrixView& w = targets[t].w;
      const int64_t n0 = (gi - first[t]) * 8, n1 = std::min(w.rows, n0 + 8);
      if (isa == CpuIsa::Avx512)
        dense_rows_m1_avx512(w, x, n0, n1, &pending, outs[t]);
      else
        dense_rows_m1_avx2(w, x, n0, n1, &pending, outs[t]);
    }
  }
}

}  // namespace sf::s24
