// GPU tests of grouped-query attention with rotary positions (src/kernels/cuda/model/attention.cu,
// prefill_attention.cu, rope.cuh) against CPU references:
//   - qkv_to_cache: q (rotated, scaled), k (rotated) and v rows against HF's rounding sequence
//     emulated on the host (kernels/cpu/rope.hpp gives cos / sin), every scaling, full and partial
//     rotary, head_dim 64/80/96/128 and an odd one (the scalar path), positions around 4000;
//   - decode: batch 3, positions 0, 37 and 4000, kv_heads in {heads, heads / 3, 1} with 9 and 32
//     query heads (and the other group sizes of the kernel table), the fused merge (counters) and
//     the merge kernel (bit-identical), the new cache row checked like qkv_to_cache;
//   - prefill: chunked (a first chunk of `past` tokens, then the attended chunk), GQA, fp16 / bf16,
//     head_dim 64/80/96/128, past up to 3990.
// Every output buffer is NaN-poisoned with a poisoned guard behind it; cache rows no launch should
// write keep their poison (or their contents), and rows past the sequence's length hold NaN, so a
// kernel reading them unmasked fails. Skips with the reason when no GPU is present.
//
// Tolerances. Rotation: the kernels and the emulation take the same steps, so they agree exactly
// but where GPU sincosf (<= 2 ulp) and the host's correctly rounded cos / sin round to different
// 16-bit values (rare: 2^-13 of elements for fp16): then by 2 units of the type times |x| +
// |partner|; at least 99% must match bit for bit. Attention outputs, relative to the row's largest
// |o|: decode rounds the output once (1 unit of the type) after fp32 softmax / accumulation over up
// to 4001 keys
// (< 3e-4); prefill also rounds P to the type before P V (as the test of the OPT kernel allows:
// 4e-3 fp16, 3e-2 bf16).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "kernel_test_util.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cuda/cuda_api.hpp"
#include "kernels/cuda/model/model_kernels.hpp"

namespace sf::cuda::model {
namespace {

using cpu::RopeParams;
using test::Dev;

float round_to(float x, DType t) {
  uint8_t buf[8];
  store_from_float(buf, t, 0, x);
  return load_as_float(buf, t, 0);
}
double ulp_of(DType t) {
  return t == DType::F32 ? 0x1p-23 : t == DType::F16 ? 0x1p-10 : 0x1p-7;
}
size_t esize(DType t) {
  return dtype_size(t);
}

// A model's rotary setup, the table uploaded once.
struct Rope {
  RopeParams params;
  std::vector<float> inv;
  float af = 1.0f;
  bool on() const { return !inv.empty(); }
  int64_t dims() const { return int64_t(inv.size()) * 2; }
};

Rope make_rope(RopeParams::Scaling scaling, int64_t rotary_dims, double theta) {
  Rope r;
  if (rotary_dims == 0) return r;
  r.params.theta = theta;
  r.params.rotary_dims = rotary_dims;
  r.params.scaling = scaling;
  r.params.factor = scaling == RopeParams::Llama3 ? 8.0 : 4.0;
  r.params.original_max_positions = 2048;
  r.inv = cpu::rope_inv_freq(r.params);
  r.af = cpu::rope_attention_factor(r.params);
  return r;
}

// One head x[0..d) of a qkv row as the kernels leave it (HF's steps in t): rounded to t, the first
// rotary_dims elements rotated. Without rotary positions: unchanged (the caller rounds, once).
void rotate_head(const float* x, int64_t d, const Rope& r, int64_t pos, DType t, float* out) {
  if (!r.on()) {
    std::copy(x, x + d, out);
    return;
  }
  const int64_t half = int64_t(r.inv.size());
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  cpu::rope_cos_sin(pos, r.inv, r.af, c.data(), s.data());
  for (auto& v : c) v = round_to(v, t);
  for (auto& v : s) v = round_to(v, t);
  for (int64_t e = 0; e < d; ++e) {
    const float v = round_to(x[e], t);
    if (e >= 2 * half) {
      out[e] = v;
      continue;
    }
    const bool lo = e < half;
    const size_t i = size_t(lo ? e : e - half);
    const float p = round_to(x[lo ? e + half : e - half], t);
    const float xc = round_to(v * c[i], t), ps = round_to((lo ? -p : p) * s[i], t);
    out[e] = round_to(xc + ps, t);
  }
}

// |x[e]| + |partner| per element of a head: the scale of a rotation's rounding differences.
double rotation_magnitude(const float* x, int64_t e, int64_t rd) {
  if (e >= rd) return std::abs(x[e]);
  const int64_t half = rd / 2;
  return std::abs(x[e]) + std::abs(x[e < half ? e + half : e - half]);
}

// Compares a rotated row (got, in t) with the emulation; counts exact matches.
struct RotationCheck {
  size_t n = 0, exact = 0, bad = 0;
  template <typename What>  // what(): the element's name, built only for a failure
  void add(float got, float want, double magnitude, DType t, const What& what) {
    ++n;
    if (got == want) ++exact;
    const double tol =
        t == DType::F32 ? 4e-7 * magnitude + 1e-30 : 2.0 * ulp_of(t) * magnitude + 0x1p-23;
    if (!(std::abs(double(got) - double(want)) <= tol) && bad++ < 5)
      ADD_FAILURE() << what() << ": got " << got << ", expected " << want;
  }
  void finish(DType t) const {
    EXPECT_EQ(bad, 0u);
    if (t != DType::F32 && n > 0) {
      EXPECT_GE(double(exact), 0.99 * double(n)) << "the rotation does not round where HF's does";
    }
  }
};

bool all_ff(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0xff) return false;
  return true;
}

template <typename T>
void upload(Dev& d, const std::vector<T>& v) {
  ASSERT_EQ(cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
}
std::vector<uint8_t> download(const void* p, size_t bytes) {
  std::vector<uint8_t> v(bytes);
  EXPECT_EQ(cudaMemcpy(v.data(), p, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

struct Shape {
  int64_t heads, kv_heads, head_dim;
  Rope rope;
  std::string name;
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
  int64_t row() const { return q_dim() + 2 * kv_dim(); }
};

std::vector<Shape> shapes() {
  using S = RopeParams;
  return {
      {9, 9, 64, make_rope(S::None, 64, 1e5), "9/9 heads of 64, rope 1e5"},
      {9, 3, 64, make_rope(S::None, 64, 1e5), "9/3 heads of 64 (SmolLM2-135M), rope 1e5"},
      {9, 1, 64, make_rope(S::Linear, 64, 1e4), "9/1 heads of 64 (MQA, two passes), linear"},
      {32, 8, 128, make_rope(S::Llama3, 128, 5e5), "32/8 heads of 128 (Llama 3), llama3"},
      {32, 1, 128, make_rope(S::Yarn, 128, 1e6), "32/1 heads of 128 (four passes), yarn"},
      {12, 2, 96, make_rope(S::Yarn, 48, 1e4), "12/2 heads of 96, yarn partial 48"},
      {6, 3, 80, make_rope(S::Linear, 80, 1e4), "6/3 heads of 80, linear"},
      {14, 2, 64, make_rope(S::None, 32, 1e6), "14/2 heads of 64 (Qwen2-0.5B's group), partial 32"},
      {4, 4, 128, Rope{}, "4/4 heads of 128, no rope (OPT)"},
      {4, 2, 80, Rope{}, "4/2 heads of 80, no rope"},
  };
}

void set_args(AttentionArgs& a, const Shape& s, int64_t batch, int64_t cap, int dt, const Rope& r,
              const Dev* inv) {
  a.batch = batch;
  a.capacity = cap;
  a.heads = s.heads;
  a.kv_heads = s.kv_heads;
  a.head_dim = s.head_dim;
  a.act_dt = dt;
  if (r.on()) {
    a.rope_inv_freq = inv->f();
    a.rotary_dims = r.dims();
    a.rope_attention_factor = r.af;
  }
}

// ---- qkv_to_cache ------------------------------------------------------------------------------

void run_qkv_to_cache(const Shape& s, int act, int qkv_dt, int64_t pos, int64_t n,
                      std::mt19937_64& rng) {
  SCOPED_TRACE(s.name + " act " + std::to_string(act) + " qkv_dt " + std::to_string(qkv_dt) +
               " pos " + std::to_string(pos) + " n " + std::to_string(n));
  const DType t = DType(act), qt = DType(qkv_dt);
  const int64_t batch = 2, seq = 1, cap = pos + n + 5, d = s.head_dim;
  const int64_t QD = s.q_dim(), KD = s.kv_dim(), W = s.row();
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint8_t> rows(size_t(n * W) * esize(qt));
  std::vector<float> rowf(size_t(n * W));
  for (size_t i = 0; i < rowf.size(); ++i) {
    store_from_float(rows.data(), qt, i, nd(rng) * 2.0f);
    rowf[i] = load_as_float(rows.data(), qt, i);
  }
  const size_t cache_bytes = size_t(batch * cap * KD) * esize(t),
               q_bytes = size_t(n * QD) * esize(t);
  const size_t guard = 256;
  Dev dqkv(rows.size()), dk(cache_bytes), dv(cache_bytes), dq(q_bytes + guard), dpos(sizeof(int)),
      dinv(s.rope.inv.size() * 4);
  upload(dqkv, rows);
  if (s.rope.on()) upload(dinv, s.rope.inv);
  const int p32 = int(pos);
  ASSERT_EQ(cudaMemcpy(dpos.p, &p32, sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dk.p, 0xff, cache_bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(dv.p, 0xff, cache_bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(dq.p, 0xff, q_bytes + guard), cudaSuccess);
  AttentionArgs a;
  set_args(a, s, batch, cap, act, s.rope, &dinv);
  a.qkv = static_cast<const float*>(dqkv.p);
  a.k_cache = dk.p;
  a.v_cache = dv.p;
  a.pos = static_cast<const int*>(dpos.p);
  launch_qkv_to_cache(a, seq, n, dq.p, nullptr, qkv_dt);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto k = download(dk.p, cache_bytes), v = download(dv.p, cache_bytes),
             q = download(dq.p, q_bytes + guard);

  const float scale = 1.0f / std::sqrt(float(d));
  const int64_t rd = s.rope.dims();
  RotationCheck rot;
  std::vector<float> want(static_cast<size_t>(d));
  for (int64_t i = 0; i < n; ++i) {
    const float* r = rowf.data() + i * W;
    for (int64_t h = 0; h < s.heads; ++h) {
      rotate_head(r + h * d, d, s.rope, pos + i, t, want.data());
      for (int64_t e = 0; e < d; ++e) {
        const float w = round_to(want[size_t(e)] * scale, t);
        rot.add(load_as_float(q.data(), t, size_t(i * QD + h * d + e)), w,
                rotation_magnitude(r + h * d, e, rd) * scale, t, [&] {
                  return "q token " + std::to_string(i) + " head " + std::to_string(h) +
                         " element " + std::to_string(e);
                });
      }
    }
    const size_t crow = size_t((seq * cap + pos + i) * KD);
    for (int64_t h = 0; h < s.kv_heads; ++h) {
      rotate_head(r + QD + h * d, d, s.rope, pos + i, t, want.data());
      for (int64_t e = 0; e < d; ++e) {
        rot.add(load_as_float(k.data(), t, crow + size_t(h * d + e)), round_to(want[size_t(e)], t),
                rotation_magnitude(r + QD + h * d, e, rd), t, [&] {
                  return "k token " + std::to_string(i) + " head " + std::to_string(h) +
                         " element " + std::to_string(e);
                });
        ASSERT_EQ(load_as_float(v.data(), t, crow + size_t(h * d + e)),
                  round_to(r[QD + KD + h * d + e], t));
      }
    }
  }
  rot.finish(t);
  EXPECT_TRUE(all_ff(q.data() + q_bytes, guard)) << "q written past its rows";
  // Every cache row but the n written ones keeps its poison.
  const size_t rb = size_t(KD) * esize(t);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t p = 0; p < cap; ++p) {
      if (b == seq && p >= pos && p < pos + n) continue;
      const size_t off = size_t(b * cap + p) * rb;
      ASSERT_TRUE(all_ff(k.data() + off, rb) && all_ff(v.data() + off, rb))
          << "cache row " << p << " of sequence " << b;
    }
}

TEST(CudaAttentionGqa, QkvToCacheRotates) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(1);
  for (const Shape& s : shapes())
    for (int act : {1, 2})
      for (int qkv_dt : {0, act}) run_qkv_to_cache(s, act, qkv_dt, 3990, 13, rng);
  // fp32 activations, and head_dim 6 with 4 rotary dims: the one-element path.
  const Shape odd{3, 1, 6, make_rope(RopeParams::None, 4, 1e4), "3/1 heads of 6, rope 4"};
  for (int act : {0, 1, 2}) run_qkv_to_cache(odd, act, 0, 37, 5, rng);
  run_qkv_to_cache(shapes()[3], 0, 0, 4000, 3, rng);
}

// ---- decode ------------------------------------------------------------------------------------

void run_decode(const Shape& s, int act, int64_t pos, std::mt19937_64& rng) {
  SCOPED_TRACE(s.name + " act " + std::to_string(act) + " pos " + std::to_string(pos));
  const DType t = DType(act);
  const int64_t batch = 3, cap = pos + 1 + 11, d = s.head_dim;  // 11 rows past the token: NaN
  const int64_t QD = s.q_dim(), KD = s.kv_dim(), W = s.row(), G = s.heads / s.kv_heads;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Cache rows 0..pos-1 of every sequence random (stored in t), row pos poisoned (the kernel writes
  // it), rows past it NaN.
  const size_t cache_elems = size_t(batch * cap * KD), cache_bytes = cache_elems * esize(t);
  std::vector<uint8_t> kc(cache_bytes), vc(cache_bytes);
  const float nan = std::nanf("");
  for (size_t i = 0; i < cache_elems; ++i) {
    const int64_t p = int64_t(i / size_t(KD)) % cap;
    store_from_float(kc.data(), t, i, p < pos ? nd(rng) : nan);
    store_from_float(vc.data(), t, i, p < pos ? nd(rng) : nan);
  }
  // q spread 3: some rows peaked, some flat (as the prefill test).
  std::vector<float> qkv(size_t(batch * W));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < W; ++j) qkv[size_t(b * W + j)] = nd(rng) * (j < QD ? 3.0f : 1.0f);

  const size_t out_bytes = size_t(batch * QD) * esize(t), guard = 256;
  Dev dk(cache_bytes), dv(cache_bytes), dqkv(qkv.size() * 4), dout(out_bytes + guard),
      dpos(sizeof(int)), dinv(s.rope.inv.size() * 4),
      dpart(decode_attention_partial_floats(batch, s.heads, cap, d) * 4),
      dcount(size_t(batch * s.heads) * 4);
  upload(dqkv, qkv);
  if (s.rope.on()) upload(dinv, s.rope.inv);
  const int p32 = int(pos);
  ASSERT_EQ(cudaMemcpy(dpos.p, &p32, sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dcount.p, 0, size_t(batch * s.heads) * 4), cudaSuccess);
  AttentionArgs a;
  set_args(a, s, batch, cap, act, s.rope, &dinv);
  a.qkv = static_cast<const float*>(dqkv.p);
  a.k_cache = dk.p;
  a.v_cache = dv.p;
  a.out = dout.p;
  a.pos = static_cast<const int*>(dpos.p);
  a.partials = dpart.f();

  std::vector<uint8_t> outs[2], kafter, vafter;
  for (int fused : {1, 0}) {
    upload(dk, kc);
    upload(dv, vc);
    ASSERT_EQ(cudaMemset(dout.p, 0xff, out_bytes + guard), cudaSuccess);
    ASSERT_EQ(
        cudaMemset(dpart.p, 0xff, decode_attention_partial_floats(batch, s.heads, cap, d) * 4),
        cudaSuccess);
    a.counters = fused ? static_cast<unsigned*>(dcount.p) : nullptr;
    launch_decode_attention(a, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    outs[fused] = download(dout.p, out_bytes + guard);
    EXPECT_TRUE(all_ff(outs[fused].data() + out_bytes, guard)) << "output written past its rows";
    if (fused) {
      const auto cnt = download(dcount.p, size_t(batch * s.heads) * 4);
      EXPECT_TRUE(std::all_of(cnt.begin(), cnt.end(), [](uint8_t c) { return c == 0; }))
          << "the counters are not back to zero";
      kafter = download(dk.p, cache_bytes);
      vafter = download(dv.p, cache_bytes);
    }
  }
  EXPECT_EQ(std::memcmp(outs[0].data(), outs[1].data(), out_bytes), 0)
      << "fused merge and merge kernel differ";

  // The new rows (pos) against the emulation; every other row unchanged.
  const size_t rb = size_t(KD) * esize(t);
  RotationCheck rot;
  std::vector<float> want(static_cast<size_t>(d));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t p = 0; p < cap; ++p) {
      if (p == pos) continue;
      const size_t off = size_t(b * cap + p) * rb;
      ASSERT_EQ(std::memcmp(kafter.data() + off, kc.data() + off, rb), 0)
          << "k row " << p << " of sequence " << b;
      ASSERT_EQ(std::memcmp(vafter.data() + off, vc.data() + off, rb), 0)
          << "v row " << p << " of sequence " << b;
    }
    const float* r = qkv.data() + b * W;
    const size_t crow = size_t((b * cap + pos) * KD);
    for (int64_t h = 0; h < s.kv_heads; ++h) {
      rotate_head(r + QD + h * d, d, s.rope, pos, t, want.data());
      for (int64_t e = 0; e < d; ++e) {
        rot.add(load_as_float(kafter.data(), t, crow + size_t(h * d + e)),
                round_to(want[size_t(e)], t), rotation_magnitude(r + QD + h * d, e, s.rope.dims()),
                t, [&] {
                  return "new k of sequence " + std::to_string(b) + " head " + std::to_string(h) +
                         " element " + std::to_string(e);
                });
        ASSERT_EQ(load_as_float(vafter.data(), t, crow + size_t(h * d + e)),
                  round_to(r[QD + KD + h * d + e], t));
      }
    }
  }
  rot.finish(t);

  // Attention in fp64 over the stored keys and values (the new row as the kernel stored it), q as
  // the kernel forms it: rotated in t, times the scale in fp32.
  std::vector<float> kf(cache_elems), vf(cache_elems);
  for (size_t i = 0; i < cache_elems; ++i) {
    kf[i] = load_as_float(kafter.data(), t, i);
    vf[i] = load_as_float(vafter.data(), t, i);
  }
  const float scale = 1.0f / std::sqrt(float(d));
  const double tol = ulp_of(t) + 3e-4;
  double worst = 0;
  std::vector<double> sc(size_t(pos + 1)), o(static_cast<size_t>(d));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t kvh = h / G;
      rotate_head(qkv.data() + b * W + h * d, d, s.rope, pos, t, want.data());
      double mx = -INFINITY;
      for (int64_t j = 0; j <= pos; ++j) {
        double dot = 0;
        const float* kr = kf.data() + (b * cap + j) * KD + kvh * d;
        for (int64_t e = 0; e < d; ++e) dot += double(want[size_t(e)] * scale) * kr[e];
        sc[size_t(j)] = dot;
        mx = std::max(mx, dot);
      }
      double sum = 0;
      for (auto& v : sc) sum += (v = std::exp(v - mx));
      double big = 0;
      for (int64_t e = 0; e < d; ++e) {
        double acc = 0;
        for (int64_t j = 0; j <= pos; ++j)
          acc += sc[size_t(j)] * vf[size_t((b * cap + j) * KD + kvh * d + e)];
        o[size_t(e)] = acc / sum;
        big = std::max(big, std::abs(o[size_t(e)]));
      }
      for (int64_t e = 0; e < d; ++e) {
        const float g = load_as_float(outs[1].data(), t, size_t(b * QD + h * d + e));
        ASSERT_TRUE(std::isfinite(g)) << "sequence " << b << " head " << h << " element " << e;
        const double err = std::abs(double(g) - o[size_t(e)]) / std::max(big, 1e-6);
        worst = std::max(worst, err);
        ASSERT_LT(err, tol) << "sequence " << b << " head " << h << " element " << e << ": got "
                            << g << ", want " << o[size_t(e)];
      }
    }
  std::printf("%-52s act %d pos %4lld: max error %.2g of the row's largest value\n", s.name.c_str(),
              act, (long long)pos, worst);
}

TEST(CudaAttentionGqa, DecodeMatchesFp64Reference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(2);
  for (const Shape& s : shapes())
    for (int act : {1, 2})
      for (int64_t pos : {0, 37, 4000}) run_decode(s, act, pos, rng);
  for (int64_t pos : {37, 4000}) run_decode(shapes()[1], 0, pos, rng);  // fp32: <4, 1, multi>
  run_decode(shapes()[8], 0, 37, rng);                                  // fp32, one pass
  // head_dim 20: not whole 16-byte words, the element-by-element kernels (one pass and several).
  const Shape words_off[] = {
      {3, 3, 20, make_rope(RopeParams::None, 20, 1e4), "3/3 heads of 20, rope 20"},
      {6, 2, 20, make_rope(RopeParams::Linear, 12, 1e4), "6/2 heads of 20, partial 12"}};
  for (const Shape& s : words_off)
    for (int act : {1, 2})
      for (int64_t pos : {5, 300}) run_decode(s, act, pos, rng);
}

TEST(CudaAttentionGqa, RefusesBadShapes) {
  SKIP_WITHOUT_GPU();
  Dev part(1 << 16), out(1 << 12);
  AttentionArgs a;
  a.batch = 1;
  a.capacity = 8;
  a.heads = 9;
  a.kv_heads = 2;  // does not divide 9
  a.head_dim = 64;
  a.partials = part.f();
  a.out = out.p;
  EXPECT_THROW(launch_decode_attention(a, nullptr), Error);
  a.kv_heads = 3;
  a.rope_inv_freq = part.f();
  a.rotary_dims = 65;  // odd
  EXPECT_THROW(launch_decode_attention(a, nullptr), Error);
  a.rotary_dims = 128;  // beyond head_dim
  EXPECT_THROW(launch_decode_attention(a, nullptr), Error);
  a.rotary_dims = 64;
  a.head_dim = 160;  // beyond the decode kernel's 128
  EXPECT_THROW(launch_decode_attention(a, nullptr), Error);
}

// ---- prefill -----------------------------------------------------------------------------------

void run_prefill(const Shape& s, int act, int64_t past, int64_t n, std::mt19937_64& rng) {
  SCOPED_TRACE(s.name + " act " + std::to_string(act) + " past " + std::to_string(past) + " n " +
               std::to_string(n));
  const DType t = DType(act);
  const int64_t batch = 2, seq = 1, len = past + n, cap = len + 9, d = s.head_dim;
  const int64_t QD = s.q_dim(), KD = s.kv_dim(), W = s.row(), G = s.heads / s.kv_heads;
  ASSERT_TRUE(fused_prefill_attention_supported(act, d, QD) &&
              fused_prefill_attention_supported(act, d, KD));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // The prompt's qkv rows (16-bit, as the prefill's cuBLASLt product writes them), q spread 3.
  std::vector<uint8_t> rows(size_t(len * W) * 2);
  for (int64_t i = 0; i < len; ++i)
    for (int64_t j = 0; j < W; ++j)
      store_from_float(rows.data(), t, size_t(i * W + j), nd(rng) * (j < QD ? 3.0f : 1.0f));
  const size_t cache_bytes = size_t(batch * cap * KD) * 2, q_bytes = size_t(len * QD) * 2,
               guard = 256;
  Dev dk(cache_bytes), dv(cache_bytes), dqkv(rows.size()), dq(q_bytes),
      dout(size_t(n * QD) * 2 + guard), dpos(sizeof(int)), dinv(s.rope.inv.size() * 4);
  upload(dqkv, rows);
  if (s.rope.on()) upload(dinv, s.rope.inv);
  // Every cache row NaN (0xff bytes) until qkv_to_cache writes it: rows len.. and sequence 0 stay
  // so.
  ASSERT_EQ(cudaMemset(dk.p, 0xff, cache_bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(dv.p, 0xff, cache_bytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(dout.p, 0xff, size_t(n * QD) * 2 + guard), cudaSuccess);
  AttentionArgs a;
  set_args(a, s, batch, cap, act, s.rope, &dinv);
  a.k_cache = dk.p;
  a.v_cache = dv.p;
  a.out = dout.p;
  a.pos = static_cast<const int*>(dpos.p);
  // Chunk 1: tokens 0..past-1 into the cache; chunk 2: tokens past..len-1, attended.
  for (auto [c0, cn] : {std::pair<int64_t, int64_t>{0, past}, {past, n}}) {
    if (cn == 0) continue;
    const int p32 = int(c0);
    ASSERT_EQ(cudaMemcpy(dpos.p, &p32, sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
    a.qkv =
        reinterpret_cast<const float*>(static_cast<const uint8_t*>(dqkv.p) + size_t(c0 * W) * 2);
    launch_qkv_to_cache(a, seq, cn, static_cast<uint8_t*>(dq.p) + size_t(c0 * QD) * 2, nullptr,
                        act);
  }
  launch_prefill_attention(a, seq, n, past, static_cast<uint8_t*>(dq.p) + size_t(past * QD) * 2,
                           nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto k = download(dk.p, cache_bytes), v = download(dv.p, cache_bytes),
             q = download(dq.p, q_bytes), out = download(dout.p, size_t(n * QD) * 2 + guard);
  EXPECT_TRUE(all_ff(out.data() + size_t(n * QD) * 2, guard)) << "output written past its rows";

  // The chunk's q and k rows against the emulation (qkv_to_cache's own test covers the rest).
  RotationCheck rot;
  std::vector<float> want(static_cast<size_t>(d)), rowf(static_cast<size_t>(W));
  const float scale = 1.0f / std::sqrt(float(d));
  for (int64_t i = past; i < len; ++i) {
    for (int64_t j = 0; j < W; ++j)
      rowf[size_t(j)] = load_as_float(rows.data(), t, size_t(i * W + j));
    for (int64_t h = 0; h < s.kv_heads; ++h) {
      rotate_head(rowf.data() + QD + h * d, d, s.rope, i, t, want.data());
      for (int64_t e = 0; e < d; ++e)
        rot.add(load_as_float(k.data(), t, size_t((seq * cap + i) * KD + h * d + e)),
                round_to(want[size_t(e)], t),
                rotation_magnitude(rowf.data() + QD + h * d, e, s.rope.dims()), t,
                [&] { return "k row " + std::to_string(i) + " element " + std::to_string(e); });
    }
    for (int64_t h = 0; h < s.heads; ++h) {
      rotate_head(rowf.data() + h * d, d, s.rope, i, t, want.data());
      for (int64_t e = 0; e < d; ++e)
        rot.add(load_as_float(q.data(), t, size_t(i * QD + h * d + e)),
                round_to(want[size_t(e)] * scale, t),
                rotation_magnitude(rowf.data() + h * d, e, s.rope.dims()) * scale, t,
                [&] { return "q row " + std::to_string(i) + " element " + std::to_string(e); });
    }
  }
  rot.finish(t);

  // Causal attention in fp64 over what the cache and q hold.
  const double tol = act == 1 ? 4e-3 : 3e-2;
  double worst = 0;
  std::vector<float> kf(size_t(len * KD)), vf(kf.size()), qf(size_t(n * QD));
  for (size_t i = 0; i < kf.size(); ++i) {
    kf[i] = load_as_float(k.data(), t, size_t(seq * cap * KD) + i);
    vf[i] = load_as_float(v.data(), t, size_t(seq * cap * KD) + i);
  }
  for (size_t i = 0; i < qf.size(); ++i) qf[i] = load_as_float(q.data(), t, size_t(past * QD) + i);
  std::vector<double> sc(static_cast<size_t>(len)), o(static_cast<size_t>(d));
  for (int64_t h = 0; h < s.heads; ++h) {
    const int64_t kc = (h / G) * d;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t visible = past + i + 1;
      double mx = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        double dot = 0;
        const float* qr = qf.data() + i * QD + h * d;
        const float* kr = kf.data() + j * KD + kc;
        for (int64_t e = 0; e < d; ++e) dot += double(qr[e]) * kr[e];
        sc[size_t(j)] = dot;
        mx = std::max(mx, dot);
      }
      double sum = 0;
      for (int64_t j = 0; j < visible; ++j) sum += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
      double big = 0;
      for (int64_t e = 0; e < d; ++e) {
        double acc = 0;
        for (int64_t j = 0; j < visible; ++j) acc += sc[size_t(j)] * vf[size_t(j * KD + kc + e)];
        o[size_t(e)] = acc / sum;
        big = std::max(big, std::abs(o[size_t(e)]));
      }
      for (int64_t e = 0; e < d; ++e) {
        const float g = load_as_float(out.data(), t, size_t(i * QD + h * d + e));
        ASSERT_TRUE(std::isfinite(g)) << "query " << i << " head " << h << " element " << e;
        const double err = std::abs(double(g) - o[size_t(e)]) / std::max(big, 1e-3);
        worst = std::max(worst, err);
        ASSERT_LT(err, tol) << "query " << i << " head " << h << " element " << e << ": got " << g
                            << ", want " << o[size_t(e)];
      }
    }
  }
  std::printf("%-52s act %d past %4lld n %3lld: max error %.2g of the row's largest value\n",
              s.name.c_str(), act, (long long)past, (long long)n, worst);
}

TEST(CudaAttentionGqa, ChunkedPrefillMatchesFp64Reference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(3);
  for (const Shape& s : shapes())
    for (int act : {1, 2})
      for (auto [past, n] : {std::pair<int64_t, int64_t>{0, 65}, {37, 1}, {37, 130}})
        run_prefill(s, act, past, n, rng);
  // Far into the cache: a 3990-token first chunk, then 70 attended tokens.
  for (int act : {1, 2}) {
    run_prefill(shapes()[1], act, 3990, 70, rng);
    run_prefill(shapes()[3], act, 3990, 70, rng);
  }
}

TEST(CudaAttentionGqa, PrefillSupportTable) {
  for (int64_t d : {64, 80, 96, 128}) {
    EXPECT_TRUE(fused_prefill_attention_supported(1, d, 9 * d));
    EXPECT_TRUE(fused_prefill_attention_supported(2, d, 3 * d));
    EXPECT_FALSE(fused_prefill_attention_supported(0, d, 9 * d));
  }
  EXPECT_FALSE(fused_prefill_attention_supported(1, 112, 112));
  EXPECT_FALSE(fused_prefill_attention_supported(1, 256, 256));
}

}  // namespace
}  // namespace sf::cuda::model
