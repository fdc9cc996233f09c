// 2:4 structured sparsity along the input dimension K of y = x W^T.
//
// W is [N, K] row-major (N outputs, K inputs). Every aligned group of 4 consecutive elements of a
// row keeps at most 2 nonzeros. The compressed form is what the sparse tensor cores consume
// (mma.sp m16n8k32 for 16-bit types); docs/SPARSE24.md specifies it bit by bit.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/dtype.hpp"

namespace sf::s24 {

// A read-only view of a dense row-major matrix of a float dtype (F32, F16 or BF16).
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;  // N
  int64_t cols = 0;  // K
};

// ---- masks ---------------------------------------------------------------------------------
// A mask holds one byte per element (1 = keep), [rows, cols] row-major, exactly 2 kept per group.
// Magnitude: keep the 2 largest |w| of each group, ties to the lower index. NaN counts as larger
// than any number (so it is kept and shows up downstream instead of being silently dropped);
// +-Inf counts as larger than any finite value. Throws Error(UnsupportedShape) when cols % 4 != 0
// or the matrix is empty.
std::vector<uint8_t> magnitude_mask(const MatrixView& w);
// Wanda-style activation-aware: score_ij = |w_ij| * act_norm_j, act_norm has cols entries (the
// L2 norm of input channel j over calibration tokens). Same tie and NaN rules as magnitude.
std::vector<uint8_t> wanda_mask(const MatrixView& w, std::span<const float> act_norm);
// Zero every element whose mask byte is 0, in place (data must be writable, same dtype as view).
void apply_mask(void* data, DType dtype, int64_t rows, int64_t cols, std::span<const uint8_t> mask);

// ---- validation ----------------------------------------------------------------------------
struct Violation {
  int64_t row = 0;
  int64_t group = 0;  // group index along the row; columns [4*group, 4*group+4)
  int nonzeros = 0;   // how many of the 4 are nonzero (> 2). NaN counts as nonzero.
};
// nullopt when w is 2:4 along cols; otherwise the first violation in row-major order.
// Throws Error(UnsupportedShape) when cols % 4 != 0 or the matrix is empty.
std::optional<Violation> find_violation(const MatrixView& w);

// ---- compressed form -----------------------------------------------------------------------
// See docs/SPARSE24.md. Summary:
//   rows_padded = round_up(rows, 16), cols_padded = round_up(cols, 32); padding is zeros.
//   values: [rows_padded, cols_padded / 2] row-major, element type = dtype; the two kept elements
//           of each group in ascending column order (a group with fewer than 2 nonzeros keeps
//           zeros at the lowest free indices so every group stores exactly 2 indices i0 < i1;
//           a -0.0 is preferred over a +0.0 as filler so that it survives the round trip).
//   meta:   uint32 words in mma.sp m16n8k32 fragment order: for each 16-row block rb and each
//           32-column block kb, 16 consecutive words at meta[(rb * (cols_padded/32) + kb) * 16 +
//           w]; word w is the metadata register that lane (4 * (w / 2) + (w % 2)) hands to mma.sp
//           with sparsity selector 0. docs/SPARSE24.md gives the bit layout inside each word.
struct Compressed {
  DType dtype = DType::F16;
  int64_t rows = 0, cols = 0;  // logical dense shape [N, K]
  int64_t rows_padded = 0, cols_padded = 0;
  std::vector<uint8_t> values;  // rows_padded * cols_padded / 2 elements of dtype
  std::vector<uint32_t> meta;   // rows_padded/16 * cols_padded/32 * 16 words

  size_t value_bytes() const { return values.size(); }
  size_t meta_bytes() const { return meta.size() * sizeof(uint32_t); }
  // The bytes a kernel must read to use W once: the figure bandwidth is reported against.
  size_t compressed_bytes() const { return value_bytes() + meta_bytes(); }
};

// Compress a matrix that is already 2:4 (find_violation == nullopt); throws Error(InvalidArgument)
// naming the first violating row and group otherwise. dtype of the result = w.dtype.
Compressed compress(const MatrixView& w);
// Exact inverse: writes rows * cols elements of c.dtype (bit-exact for every input compress took).
void decompress(const Compressed& c, void* out);
// The 2-bit indices (i0, i1) kept for group g of row r, read back from the metadata words.
std::pair<int, int> group_indices(const Compressed& c, int64_t row, int64_t group);

// A group whose metadata field is not two kept positions in increasing order (0 <= i0 < i1 <= 3).
struct BadMetadata {
  int64_t row = 0;     // of the padded matrix: row >= rows is a padding row
  int64_t group = 0;   // columns [4*group, 4*group+4) of the padded matrix
  int i0 = 0, i1 = 0;  // what the field holds
};
// nullopt when every metadata field of c (padding included) is a valid index pair; otherwise the
// first bad group in row-major order. Metadata from outside (a file) must pass this before any
// kernel reads it: mma.sp's result is undefined for i0 >= i1, and decompress would write both
// values to one column. A few bit operations per word, so it runs at memory speed.
std::optional<BadMetadata> find_bad_metadata(const Compressed& c);
// The same over the metadata words of a [rows_padded, cols_padded] matrix, e.g. straight from a
// file mapping. Throws Error(InvalidArgument) unless rows_padded % 16 == 0, cols_padded % 32 == 0
// (both > 0) and meta holds rows_padded * cols_padded / 32 words.
std::optional<BadMetadata> find_bad_metadata(std::span<const uint32_t> meta, int64_t rows_padded,
                                             int64_t cols_padded);

// ---- CPU GEMM ------------------------------------------------------------------------------
// GELU is the exact erf form (HF "gelu"); GELUTanh is the tanh approximation GPT-2 was trained
// with (HF "gelu_new" / "gelu_pytorch_tanh"): 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))).
// SiLU (Llama's gate activation) is v * sigmoid(v). 0..3 are the C ABI's sf_activation codes.
enum class Activation { None = 0, ReLU = 1, GELU = 2, SiLU = 3, GELUTanh = 4 };

struct Epilogue {
  const void* bias = nullptr;  // [N], dtype bias_dtype, optional
  DType bias_dtype = DType::F32;
  Activation act = Activation::None;
  const void* residual = nullptr;  // [M, N] ([M, N / 2] when gated), dtype residual_dtype,
                                   // optional; added after act
  DType residual_dtype = DType::F32;
  // W is a fused gate/up weight (fuse_gate_up below: row 2j gate j, row 2j + 1 up j), v = x W^T,
  // and y is [M, N / 2]:
  //   y[m, j] = act(v[m, 2j] + bias[2j]) * (v[m, 2j + 1] + bias[2j + 1]) + residual[m, j].
  // N must be even; a bias is in the fused row order (fuse it as a one-column matrix).
  bool gated = false;
};

// y[M, N] = act(x[M, K] W^T + bias) + residual, fp32 accumulation (y [M, N / 2] with ep.gated). x
// is x_dtype (F32/F16/BF16), y is y_dtype (F32/F16/BF16). Multithreaded (OpenMP) and vectorized. x
// and y must not alias.
void gemm_cpu(const Compressed& w, const void* x, DType x_dtype, int64_t m, void* y, DType y_dtype,
              const Epilogue& ep = {});

// Dense reference with the same contract, W dense [N, K]; used by tests and as the "own dense"
// path.
void gemm_dense_cpu(const MatrixView& w, const void* x, DType x_dtype, int64_t m, void* y,
                    DType y_dtype, const Epilogue& ep = {});

// Several dense products of one fp32 activation row (a decode step's q, k and v, or gate and up)
// in one parallel pass, so the threads meet once instead of once per product: for each target,
// y = act(x W^T + bias) + residual in fp32, as gemm_dense_cpu with m = 1 computes it bit for bit.
// Targets with a gated epilogue are not taken (fuse them into one weight instead).
struct GemvTarget {
  MatrixView w;
  float* y;
  Epilogue ep;
};
void gemv_dense_cpu(std::span<const GemvTarget> targets, const float* x);

float apply_activation(Activation a, float v);

// ---- gated products (SwiGLU, GeGLU) ----------------------------------------------------------
// A gated MLP's first half, act(x gate^T) * (x up^T) with gate and up [F, H], runs as one product
// over a fused [2F, H] weight whose rows alternate: row 2j is gate row j, row 2j + 1 is up row j.
// Pairs of adjacent rows, not tiles, because that pair lands together in every kernel without
// changing its inner loop: in one thread (CPU kernels: rows in order within a work item that starts
// at an even row; GEMV bulk), in two lanes of one warp (mma fragments hold rows g and g + 8 per
// lane, so row 2j + 1 is lane ^ 4), in adjacent elements of a shared-memory output tile, or in
// adjacent warps of a block (GEMV, one warp per row). docs/KERNELS.md lists where each kernel pairs
// them.
//
// Dense: writes the fused [2F, cols] matrix (gate's dtype) to out. gate and up must agree in dtype
// (F32/F16/BF16) and shape. A bias [F] fuses the same way, as a one-column matrix.
void fuse_gate_up(const MatrixView& gate, const MatrixView& up, void* out);
// 2:4: the fused weight straight from the compressed gate and up (same dtype, rows and cols). The
// 2:4 groups run along K = H, so pruning gate and up separately and interleaving their compressed
// rows and metadata fields is exact: it decompresses to fuse_gate_up of the two decompressed
// inputs (and, for inputs compress() made, equals compress() of that fused matrix bit for bit).
Compressed fuse_gate_up(const Compressed& gate, const Compressed& up);

// Which CPU kernels gemm_cpu / gemm_dense_cpu use. Auto picks the best the CPU supports
// (AVX-512F, else AVX2+FMA+F16C, else portable C++); tests force the others to cover them.
enum class CpuIsa { Auto = 0, Generic = 1, Avx2 = 2, Avx512 = 3 };
CpuIsa cpu_isa_supported();    // the best this CPU runs
CpuIsa cpu_isa();              // the one in use now
void set_cpu_isa(CpuIsa isa);  // process-wide; throws Error(UnsupportedShape) above supported
const char* cpu_isa_name(CpuIsa isa);

}  // namespace sf::s24
