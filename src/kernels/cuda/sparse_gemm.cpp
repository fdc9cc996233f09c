// SparseGemm: weight upload into the kernel layout, the kernel table, the tuning cache, dispatch.
#include "kernels/cuda/sparse_gemm.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.hpp"
#include "kernels/cuda/check.hpp"
#include "kernels/cuda/decode_kernels.hpp"
#include "kernels/cuda/prefill_kernels.hpp"

namespace sf::cuda {

// ---- the kernel table -------------------------------------------------------------------------
// Chosen by architecture and M bucket when the tuning cache (sparseflow tune) has no entry for the
// shape. splits = 0 lets resolve_splits() size split-K so the grid has ~8 blocks per SM. Each row
// names the measurement that justified it (bench/results/, H100 SXM, 4 weight shapes).
namespace {
struct TableRow {
  int min_arch;  // 10 * major + minor; rows are scanned in order, first match wins
  int64_t m_max;
  GemmPath path;
  int warps;
  int splits;
  bool shared_x;
  int kgroups;
  int tile_m = 128;
};
constexpr TableRow kTable[] = {
    // sm_90 (H100, H200). M <= 64: the shared-x decode kernel (x staged once per block in shared
    // memory). The first H100 run (2026-11-22) measured the one-row-block-per-block variant at 1.7x
    // dense for M = 1 but only 0.9-1.0x at M = 16: every 16-row block re-read x from L2, 134 MB for
    // 8192x8192 at M = 16 against 38 MB of W. With 8 row warps and 1 k-group (H200 run 1) M = 16
    // fell to 0.9-1.3x dense: too few warps per 16-row block, so split-K over the grid, whose
    // partials and last-block pass cost as much as the loads; 4 row warps x 4 k-groups (16 warps,
    // reduced in shared memory) keep the loads in flight with fewer splits. H200 run 2 (tuned,
    // bench/results/2026-11-22-NVIDIA-H200-gemm.md) picked, per M bucket over the 4 shapes:
    // M <= 16: 4x4 or 4x2 / 8x2 (1.14-1.46x dense at M = 16, 1.40-1.79x at M = 8); M <= 32: 8x2
    // (0.78-1.21x); M <= 64: 4 row warps x 1 (0.38-0.71x; dense would win there).
    // M <= 4: the plain kernel (one 16-row block per block, x re-read from L1/L2, cheap at 4 tokens),
    // no split: the untuned H100 run of 2026-11-22 (bench/results/2026-11-22-NVIDIA-H100-80GB-HBM3-
    // gemm-table.md) measured the shared-x 4x4 kernel at 1.21x dense on 4096x4096 where this one,
    // tuned, ran 1.75x.
    {90, 4, GemmPath::Decode, 8, 1, false, 1},
    {90, 16, GemmPath::Decode, 4, 0, true, 4},
    {90, 32, GemmPath::Decode, 8, 0, true, 2},
    {90, 64, GemmPath::Decode, 4, 0, true, 1},
    // M = 65..1024: the wgmma.sp kernel (prefill_sm90.cu, 128-row blocks), which the H100 tuner
    // picked at M = 256 on all four shapes (0.35-0.62x of a resident dense weight, 128-row blocks on
    // three of them; bench/results/2026-12-05-NVIDIA-H100-80GB-HBM3-gemm-wgmma.md) where W
    // decompressed into scratch + cuBLAS had run 0.20-0.23x (H200, bench/results/2026-11-22-NVIDIA-
    // H200-gemm.md). From M = 1025 on: the decompress + cuBLAS
    // fallback, which the same H100 run picked at M = 2048 and 8192 on three of the four shapes
    // (0.55-0.94x); the wgmma kernel won on 4096x16384 (0.59x, 0.68x). Without a tuning cache the table
    // used to keep the mma.sp prefill kernel at every M > 64: an OPT-6.7B 2:4 prefill of 2046 tokens
    // ran its products at 0.33x dense on the H200 (2026-12-03). Up to 2026-12-05 M = 65..128 still
    // ran the mma.sp kernel with 64-token tiles: an OPT-6.7B 2:4 prefill of 128 tokens took 16.4 ms
    // against 6.9 ms dense (H100), fc2 (4096x16384) at 80 TFLOP/s, out_proj at 47.
    {90, 1024, GemmPath::PrefillSm90, 0, 0, false, 1, 128},
    {90, INT64_MAX, GemmPath::DenseFallback, 0, 0, false, 1},
    // sm_80/86/89: the same kernels (mma.sp exists from sm_80); not measured here, sm_90's choices.
    {80, 4, GemmPath::Decode, 8, 1, false, 1},
    {80, 16, GemmPath::Decode, 4, 0, true, 4},
    {80, 32, GemmPath::Decode, 8, 0, true, 2},
    {80, 64, GemmPath::Decode, 4, 0, true, 1},
    {80, 256, GemmPath::Prefill, 0, 0, false, 1, 64},
    {80, INT64_MAX, GemmPath::Prefill, 0, 0, false, 1, 128},
};
}  // namespace

std::string KernelChoice::name() const {
  if (path == GemmPath::DenseFallback) return "dense_fallback(cublas)";
  if (path == GemmPath::Prefill) return fmt::format("prefill_m{}", tile_m);
  if (path == GemmPath::PrefillSm90) return fmt::format("prefill_wgmma_{}x128", tile_m == 256 ? 256 : 128);
  if (shared_x && kgroups > 1) return fmt::format("decode_sx_w{}x{}_s{}", warps, kgroups, splits);
  return fmt::format("{}_w{}_s{}", shared_x ? "decode_sx" : "decode", warps, splits);
}

// ---- tuning cache -----------------------------------------------------------------------------
struct SparseGemm::Tuned {
  struct Entry {
    int64_t n, k, m;
    DType dtype;
    KernelChoice choice;
  };
  std::vector<Entry> entries;
};

std::string tune_cache_path(const std::string& gpu_name) {
  if (const char* p = std::getenv("SPARSEFLOW_TUNE_CACHE"); p && *p) return p;
  std::string dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = std::string(x) + "/sparseflow";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = std::string(h) + "/.cache/sparseflow";
  else dir = ".";
  std::string tag;
  for (char c : gpu_name) tag += std::isalnum(static_cast<unsigned char>(c)) ? char(std::tolower(c)) : '-';
  return dir + "/tune-" + tag + ".json";
}

// ---- upload -----------------------------------------------------------------------------------
DeviceWeight24 upload_weight(const s24::Compressed& c, cudaStream_t stream) {
  if (c.dtype != DType::F16 && c.dtype != DType::BF16)
    fail(Status::UnsupportedShape, "the 2:4 GPU kernels take fp16 or bf16 weights; this one is {}. "
         "Convert the checkpoint to fp16 or bf16 first", dtype_name(c.dtype));
  if (c.rows_padded % 16 || c.cols_padded % 32 || c.values.size() != size_t(c.rows_padded * c.cols_padded) ||
      c.meta.size() != size_t(c.rows_padded / 16 * (c.cols_padded / 32) * 16))
    fail(Status::InvalidArgument, "upload_weight: the compressed matrix is inconsistent ({}x{} padded to "
         "{}x{}, {} value bytes, {} metadata words); build it with s24::compress()",
         c.rows, c.cols, c.rows_padded, c.cols_padded, c.values.size(), c.meta.size());
  DeviceWeight24 w;
  w.dtype = c.dtype;
  w.n = c.rows;
  w.k = c.cols;
  w.row_blocks = c.rows_padded / 16;
  const int64_t host_tiles = c.cols_padded / 32;
  w.k_tiles = (host_tiles + 3) / 4 * 4;

  // values: lane (g, t) of tile (rb, kt) gets rows g, g + 8 and compressed columns 2t, 2t + 8 of the
  // tile, in mma.sp A-fragment register order: {r g c 2t}, {r g+8 c 2t}, {r g c 2t+8}, {r g+8 c 2t+8}.
  std::vector<uint32_t> vals(w.value_bytes() / 4, 0u);
  std::vector<uint32_t> meta(w.meta_bytes() / 4, 0x44444444u);
  const int64_t vcols = c.cols_padded / 2;  // compressed elements per row
  const auto* src = reinterpret_cast<const uint16_t*>(c.values.data());
#pragma omp parallel for schedule(static)
  for (int64_t rb = 0; rb < w.row_blocks; ++rb) {
    for (int64_t kt = 0; kt < host_tiles; ++kt) {
      uint32_t* dst = vals.data() + size_t(rb * w.k_tiles + kt) * 128;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; ++r) {
          const int64_t row = rb * 16 + g + 8 * (r & 1);
          const int64_t col = kt * 16 + 2 * t + 8 * (r >> 1);
          uint32_t v;
          std::memcpy(&v, src + size_t(row * vcols + col), 4);
          dst[lane * 4 + r] = v;
        }
      }
      // metadata: the host words are already per-lane mma.sp registers (docs/SPARSE24.md); group 4
      // k-tiles per slot so one 16-byte load feeds 4 mma.sp.
      const uint32_t* hm = c.meta.data() + size_t(rb * host_tiles + kt) * 16;
      uint32_t* dm = meta.data() + size_t((rb * (w.k_tiles / 4) + kt / 4) * 16) * 4 + kt % 4;
      for (int s = 0; s < 16; ++s) dm[s * 4] = hm[s];
    }
  }
  SF_CUDA_CHECK(cudaMalloc(&w.values, w.value_bytes()));
  SF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&w.meta), w.meta_bytes()));
  SF_CUDA_CHECK(cudaMemcpyAsync(w.values, vals.data(), w.value_bytes(), cudaMemcpyHostToDevice, stream));
  SF_CUDA_CHECK(cudaMemcpyAsync(w.meta, meta.data(), w.meta_bytes(), cudaMemcpyHostToDevice, stream));
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host staging vectors die here
  return w;
}

void free_weight(DeviceWeight24& w) {
  if (w.values) cudaFree(w.values);
  if (w.meta) cudaFree(w.meta);
  w.values = nullptr;
  w.meta = nullptr;
}

DeviceWeight24 clone_weight(const DeviceWeight24& w, cudaStream_t stream) {
  DeviceWeight24 c = w;
  SF_CUDA_CHECK(cudaMalloc(&c.values, w.value_bytes()));
  SF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&c.meta), w.meta_bytes()));
  SF_CUDA_CHECK(cudaMemcpyAsync(c.values, w.values, w.value_bytes(), cudaMemcpyDeviceToDevice, stream));
  SF_CUDA_CHECK(cudaMemcpyAsync(c.meta, w.meta, w.meta_bytes(), cudaMemcpyDeviceToDevice, stream));
  return c;
}

void decompress_on_device(const DeviceWeight24& w, void* dense, cudaStream_t stream) {
  launch_decompress(w.values, w.meta, w.n, w.k, w.k_tiles, dense, stream);
}

// ---- SparseGemm -------------------------------------------------------------------------------
SparseGemm::SparseGemm(cudaStream_t stream) : stream_(stream), tuned_(new Tuned) {
  int dev = 0;
  SF_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  SF_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  sm_count_ = prop.multiProcessorCount;
  smem_optin_ = prop.sharedMemPerBlockOptin;
  arch_ = prop.major * 10 + prop.minor;
  gpu_name_ = prop.name;
  // The tuning cache is optional: a missing or unreadable file leaves the built-in table in charge.
  std::ifstream in(tune_cache_path(gpu_name_));
  if (in) {
    try {
      const auto j = nlohmann::json::parse(in);
      for (const auto& e : j.at("entries")) {
        Tuned::Entry t;
        t.n = e.at("n");
        t.k = e.at("k");
        t.m = e.at("m");
        t.dtype = *dtype_from_cli(e.at("dtype").get<std::string>());
        const std::string path = e.at("path").get<std::string>();
        t.choice.path = path == "dense_fallback" ? GemmPath::DenseFallback
                        : path == "prefill"      ? GemmPath::Prefill
                        : path == "prefill_wgmma" ? GemmPath::PrefillSm90
                                                 : GemmPath::Decode;
        t.choice.tile_m = e.value("tile_m", 128);
        t.choice.shared_x = path == "decode_sx";
        t.choice.warps = e.value("warps", 4);
        t.choice.splits = e.value("splits", 0);
        t.choice.kgroups = e.value("kgroups", 1);
        tuned_->entries.push_back(t);
      }
    } catch (const std::exception&) {
      tuned_->entries.clear();
    }
  }
}

SparseGemm::~SparseGemm() {
  if (partials_) cudaFree(partials_);
  if (counters_) cudaFree(counters_);
  if (scratch_) cudaFree(scratch_);
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  delete tuned_;
}

KernelChoice SparseGemm::choose(const DeviceWeight24& w, int64_t m) const {
  // Tuned: the entry of this shape with the smallest measured M >= m (else the largest M).
  const Tuned::Entry* best = nullptr;
  for (const auto& e : tuned_->entries) {
    if (e.n != w.n || e.k != w.k || e.dtype != w.dtype) continue;
    if (e.m >= m && (!best || best->m < m || e.m < best->m)) best = &e;
    else if (e.m < m && (!best || (best->m < m && e.m > best->m))) best = &e;
  }
  if (best) return best->choice;
  for (const auto& r : kTable)
    if (arch_ >= r.min_arch && m <= r.m_max) return KernelChoice{r.path, r.warps, r.splits, r.shared_x, r.kgroups, r.tile_m};
  return KernelChoice{GemmPath::DenseFallback, 0, 0};
}

int SparseGemm::resolve_splits(const DeviceWeight24& w, int64_t m, int warps, bool shared_x, int kgroups) const {
  // Aim for ~32 resident warps per SM (enough 16-byte loads in flight to cover HBM latency), but
  // give every warp at least one 8-tile step of its split.
  const int kg = shared_x ? std::max(1, kgroups) : 1;
  const int64_t chunks = (m + 63) / 64;
  const int64_t blocks = (shared_x ? (w.row_blocks + warps - 1) / warps : w.row_blocks) * chunks;
  const int64_t target = int64_t(sm_count_) * 32 / (warps * kg);
  const int64_t s = (target + blocks - 1) / blocks;
  const int64_t max_s = std::max<int64_t>(1, shared_x ? w.k_quads() / (2 * kg) : w.k_quads() / (2 * warps));
  return int(std::clamp<int64_t>(s, 1, std::min<int64_t>(max_s, 64)));
}

void SparseGemm::ensure_workspace(size_t floats, size_t counters) {
  if (floats > partial_floats_) {
    if (partials_) SF_CUDA_CHECK(cudaFree(partials_));
    partials_ = nullptr;
    SF_CUDA_CHECK(cudaMalloc(&partials_, floats * sizeof(float)));
    partial_floats_ = floats;
  }
  if (counters > counter_count_) {
    if (counters_) SF_CUDA_CHECK(cudaFree(counters_));
    counters_ = nullptr;
    SF_CUDA_CHECK(cudaMalloc(&counters_, counters * sizeof(int)));
    SF_CUDA_CHECK(cudaMemsetAsync(counters_, 0, counters * sizeof(int), stream_));
    counter_count_ = counters;
  }
}

void SparseGemm::ensure_scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return;
  if (scratch_) {
    SF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    SF_CUDA_CHECK(cudaFree(scratch_));
  }
  scratch_ = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&scratch_, bytes));
  scratch_bytes_ = bytes;
}

namespace {
EpilogueParams to_params(const DeviceEpilogue& ep, void* y, DType y_dtype, int64_t n) {
  EpilogueParams p;
  p.bias = ep.bias;
  p.bias_dt = int(ep.bias_dtype);
  p.residual = ep.residual;
  p.residual_dt = int(ep.residual_dtype);
  p.act = int(ep.act);
  p.y = y;
  p.y_dt = int(y_dtype);
  p.gated = ep.gated ? 1 : 0;
  p.ldy = ep.gated ? n / 2 : n;
  return p;
}

void check_dtype(DType t, const char* what) {
  if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
    fail(Status::UnsupportedShape, "{} must be fp32, fp16 or bf16, not {}", what, dtype_name(t));
}
}  // namespace

void SparseGemm::run(const DeviceWeight24& w, const void* x, int64_t m, void* y, DType y_dtype,
                     const DeviceEpilogue& ep) {
  run_with(choose(w, m), w, x, m, y, y_dtype, ep);
}

void SparseGemm::run_with(const KernelChoice& choice, const DeviceWeight24& w, const void* x, int64_t m,
                          void* y, DType y_dtype, const DeviceEpilogue& ep) {
  if (m < 0) fail(Status::InvalidArgument, "sparse GEMM: M = {} is negative", m);
  if (m == 0 || w.n == 0) return;
  if (!x || !y || !w.values) fail(Status::InvalidArgument, "sparse GEMM: null x, y or weight pointer");
  check_dtype(y_dtype, "the output dtype");
  if (ep.bias) check_dtype(ep.bias_dtype, "the bias dtype");
  if (ep.residual) check_dtype(ep.residual_dtype, "the residual dtype");
  if (ep.gated && w.n % 2 != 0)
    fail(Status::InvalidArgument,
         "sparse GEMM: a gated epilogue takes a fused gate/up weight (rows 2j, 2j + 1: gate and up "
         "of "
         "output j), so an even number of rows; this one has {}. Build it with s24::fuse_gate_up",
         w.n);
  if (int(ep.act) < 0 || int(ep.act) > int(s24::Activation::GELUTanh))
    fail(Status::InvalidArgument, "sparse GEMM: activation code {} is not an s24::Activation",
         int(ep.act));
  if (m > INT_MAX / 2 || w.n > INT_MAX / 2 || w.k > INT_MAX / 2)
    fail(Status::UnsupportedShape, "sparse GEMM: M={} N={} K={} exceeds the 32-bit index range", m, w.n, w.k);
  // x is read as 4-byte pairs: its rows must start 4-byte aligned (k % 4 == 0 keeps them so).
  const bool decode_ok = (reinterpret_cast<uintptr_t>(x) % 4 == 0) && w.k % 4 == 0;
  if (choice.path == GemmPath::Decode && decode_ok) return run_decode(choice, w, x, m, y, y_dtype, ep);
  // The prefill kernel copies x rows with 16-byte cp.async: rows must start 16-byte aligned.
  const bool prefill_ok = (reinterpret_cast<uintptr_t>(x) % 16 == 0) && w.k % 8 == 0 && arch_ >= 80;
  if (choice.path == GemmPath::PrefillSm90 && prefill_ok && arch_ == 90 && prefill_sm90_available(w.dtype) &&
      prefill_sm90_smem_bytes(choice.tile_m) <= smem_optin_)
    return run_prefill(choice, w, x, m, y, y_dtype, ep);
  // Elsewhere the Hopper kernel's request runs as the mma.sp prefill kernel.
  if ((choice.path == GemmPath::Prefill || choice.path == GemmPath::PrefillSm90) && prefill_ok)
    return run_prefill(KernelChoice{GemmPath::Prefill, 0, 0, false, 1, choice.tile_m}, w, x, m, y, y_dtype, ep);
  run_dense(w, x, m, y, y_dtype, ep);
}

void SparseGemm::run_prefill(const KernelChoice& c, const DeviceWeight24& w, const void* x, int64_t m, void* y,
                             DType y_dtype, const DeviceEpilogue& ep) {
  PrefillLaunch p;
  p.values = w.values;
  p.meta = w.meta;
  p.x = x;
  p.m = int(m);
  p.n = int(w.n);
  p.k = int(w.k);
  p.k_tiles = int(w.k_tiles);
  p.k_quads = int(w.k_quads());
  p.row_blocks = int(w.row_blocks);
  p.ep = to_params(ep, y, y_dtype, w.n);
  if (c.path == GemmPath::PrefillSm90) return launch_prefill_sm90(p, w.dtype, c.tile_m == 256 ? 256 : 128, stream_);
  // (128, 3) needs 156 KB per block (sm_80/90); sm_86/89 (99 KB) run (64, 2).
  int tile_m = c.tile_m == 64 ? 64 : 128, stages = tile_m == 128 ? 3 : 2;
  if (prefill_smem_bytes(tile_m, stages) > smem_optin_) tile_m = 64, stages = 2;
  if (prefill_smem_bytes(tile_m, stages) > smem_optin_) return run_dense(w, x, m, y, y_dtype, ep);
  launch_prefill(p, w.dtype, tile_m, stages, stream_);
}

void SparseGemm::run_decode(const KernelChoice& c, const DeviceWeight24& w, const void* x, int64_t m, void* y,
                            DType y_dtype, const DeviceEpilogue& ep) {
  int mt = m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
  int warps = c.warps == 8 ? 8 : 4;
  DecodeLaunch p;
  p.values = w.values;
  p.meta = w.meta;
  p.x = x;
  p.m = int(m);
  p.n = int(w.n);
  p.k = int(w.k);
  p.k_tiles = int(w.k_tiles);
  p.k_quads = int(w.k_quads());
  p.row_blocks = int(w.row_blocks);
  // The shared-x variant copies x with 16-byte cp.async: rows must start 16-byte aligned.
  const bool shared_x = c.shared_x && w.k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  int kgroups = shared_x ? std::clamp(c.kgroups <= 1 ? 1 : c.kgroups <= 2 ? 2 : 4, 1, decode_max_kgroups(mt)) : 1;
  // Only kDecodeConfigs is built: the plain kernel runs 8 tokens per block (more tokens tile
  // grid.z), and a shared-x request this bucket has no kernel for takes the bucket's own.
  if (!shared_x) {
    mt = 1;
    if (!decode_instantiated(mt, warps, 1, false)) warps = 4;
  } else if (!decode_instantiated(mt, warps, kgroups, true)) {
    for (const auto& d : kDecodeConfigs)
      if (d.shared_x && d.mt == mt) {
        warps = d.warps;
        kgroups = d.kgroups;
        break;
      }
  }
  int splits = c.splits > 0 ? c.splits : resolve_splits(w, m, warps, shared_x, kgroups);
  splits = std::clamp<int>(splits, 1, std::max<int>(1, p.k_quads));
  p.quads_per_split = (p.k_quads + splits - 1) / splits;
  p.quads_per_split = (p.quads_per_split + 2 * kgroups - 1) / (2 * kgroups) * (2 * kgroups);  // whole supersteps
  p.splits = (p.k_quads + p.quads_per_split - 1) / p.quads_per_split;
  p.ep = to_params(ep, y, y_dtype, w.n);
  if (p.splits > 1) {
    ensure_workspace(decode_partial_floats(p.m, p.row_blocks, p.splits, mt),
                     decode_counter_count(p.m, p.row_blocks, mt));
    p.partials = partials_;
    p.counters = counters_;
  }
  launch_decode(p, w.dtype, mt, warps, kgroups, shared_x, stream_);
}

void SparseGemm::run_dense(const DeviceWeight24& w, const void* x, int64_t m, void* y, DType y_dtype,
                           const DeviceEpilogue& ep) {
  if (!cublas_) {
    cublasHandle_t h;
    SF_CUBLAS_CHECK(cublasCreate(&h));
    cublas_ = h;
  }
  auto h = static_cast<cublasHandle_t>(cublas_);
  SF_CUBLAS_CHECK(cublasSetStream(h, stream_));
  const bool fused_none = !ep.bias && !ep.residual && ep.act == s24::Activation::None &&
                          !ep.gated && (y_dtype == w.dtype || y_dtype == DType::F32);
  const size_t wbytes = size_t(w.n) * size_t(w.k) * 2;
  const size_t wbytes_al = (wbytes + 255) / 256 * 256;
  const size_t acc_bytes = fused_none ? 0 : size_t(m) * size_t(w.n) * 4;
  ensure_scratch(wbytes_al + acc_bytes);
  void* dense = scratch_;
  decompress_on_device(w, dense, stream_);
  const cudaDataType ab = w.dtype == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: y^T [N, M] = W [N, K] (row-major = col-major K x N, transposed) * x^T [K, M].
  void* out = fused_none ? y : static_cast<char*>(scratch_) + wbytes_al;
  const cudaDataType ct = fused_none ? (y_dtype == DType::F32 ? CUDA_R_32F : ab) : CUDA_R_32F;
  SF_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(w.n), int(m), int(w.k), &alpha, dense, ab,
                               int(w.k), x, ab, int(w.k), &beta, out, ct, int(w.n), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  if (!fused_none) launch_epilogue(static_cast<const float*>(out), m, w.n, to_params(ep, y, y_dtype, w.n), stream_);
}

}  // namespace sf::cuda
