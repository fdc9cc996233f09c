// 2:4 masks (magnitude, Wanda), apply_mask and find_violation.
#include <cmath>
#include <limits>

#include "core/error.hpp"
#include "sparse24/internal.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {

void check_shape(const MatrixView& w, const char* what) {
  if (w.data == nullptr && w.rows * w.cols != 0)
    fail(Status::InvalidArgument, "{}: the matrix data pointer is null for a [{}, {}] matrix", what,
         w.rows, w.cols);
  if (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16)
    fail(Status::InvalidArgument, "{}: expected a matrix of F32, F16 or BF16, found {}; convert it first",
         what, dtype_name(w.dtype));
  if (w.rows <= 0 || w.cols <= 0)
    fail(Status::UnsupportedShape,
         "{}: expected a non-empty [N, K] matrix, found [{}, {}]; 2:4 sparsity needs at least one "
         "group of 4 input columns",
         what, w.rows, w.cols);
  if (w.cols % 4 != 0)
    fail(Status::UnsupportedShape,
         "{}: 2:4 sparsity groups the input dimension K in 4s, so K must be a multiple of 4; found "
         "[{}, {}] (K % 4 = {}); leave this matrix dense or pad K",
         what, w.rows, w.cols, w.cols % 4);
}

namespace {

// Scores are compared as doubles: |w| * a is exact in double for w in fp32/fp16/bf16 and a in
// fp32 (at most 24 + 24 significand bits), so Wanda ties are real ties, not rounding artefacts.
// A NaN score ranks above every number (+Inf included) and all NaNs rank equal whatever their
// payload, so ties among them also go to the lower index.
struct Key {
  bool nan;
  double v;
};
inline Key make_key(double s) { return std::isnan(s) ? Key{true, 0.0} : Key{false, s}; }
// a (at index ia) ranks above b (at index ib)?
inline bool above(const Key& a, int ia, const Key& b, int ib) {
  if (a.nan != b.nan) return a.nan;
  if (!a.nan && a.v != b.v) return a.v > b.v;
  return ia < ib;
}

// Keep the two highest-ranked of 4 scores: rank_i = how many others rank above i.
inline void keep_top2(const Key (&k)[4], uint8_t* out) {
  for (int i = 0; i < 4; ++i) {
    int r = 0;
    for (int j = 0; j < 4; ++j)
      if (j != i && above(k[j], j, k[i], i)) ++r;
    out[i] = r < 2 ? 1 : 0;
  }
}

template <typename ScoreFn>
std::vector<uint8_t> make_mask(const MatrixView& w, ScoreFn score) {
  std::vector<uint8_t> mask(size_t(w.rows) * size_t(w.cols));
  const int64_t groups = w.cols / 4;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const size_t base = size_t(r) * size_t(w.cols) + size_t(4 * g);
      Key k[4];
      for (int i = 0; i < 4; ++i) k[i] = make_key(score(base + i, 4 * g + i));
      keep_top2(k, mask.data() + base);
    }
  }
  return mask;
}

}  // namespace

std::vector<uint8_t> magnitude_mask(const MatrixView& w) {
  check_shape(w, "magnitude_mask");
  return make_mask(w, [&](size_t i, int64_t) { return std::fabs(double(load_as_float(w.data, w.dtype, i))); });
}

std::vector<uint8_t> wanda_mask(const MatrixView& w, std::span<const float> act_norm) {
  check_shape(w, "wanda_mask");
  if (int64_t(act_norm.size()) != w.cols)
    fail(Status::InvalidArgument,
         "wanda_mask: expected one activation norm per input column ({} for a [{}, {}] matrix), "
         "found {}; check that the calibration statistics belong to this layer",
         w.cols, w.rows, w.cols, act_norm.size());
  for (size_t j = 0; j < act_norm.size(); ++j)
    if (act_norm[j] < 0.0f)
      fail(Status::InvalidArgument,
           "wanda_mask: activation norms are L2 norms and cannot be negative; column {} has {}", j,
           act_norm[j]);
  return make_mask(w, [&](size_t i, int64_t col) {
    return std::fabs(double(load_as_float(w.data, w.dtype, i))) * double(act_norm[size_t(col)]);
  });
}

void apply_mask(void* data, DType dtype, int64_t rows, int64_t cols, std::span<const uint8_t> mask) {
  check_shape(MatrixView{data, dtype, rows, cols}, "apply_mask");
  const size_t n = size_t(rows) * size_t(cols);
  if (mask.size() != n)
    fail(Status::InvalidArgument, "apply_mask: expected a mask of {} bytes for [{}, {}], found {}", n,
         rows, cols, mask.size());
  const size_t es = dtype_size(dtype);
  auto* p = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < n; ++i)
    if (mask[i] == 0) std::memset(p + i * es, 0, es);  // +0.0 in every float format
}

bool is_nonzero_bits(const void* data, DType dtype, size_t i) {
  if (dtype == DType::F32) return (static_cast<const uint32_t*>(data)[i] & 0x7fffffffu) != 0;
  return (static_cast<const uint16_t*>(data)[i] & 0x7fffu) != 0;
}

std::optional<Violation> find_violation(const MatrixView& w) {
  check_shape(w, "find_violation");
  const int64_t groups = w.cols / 4;
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const size_t base = size_t(r) * size_t(w.cols) + size_t(4 * g);
      int nz = 0;
      for (int i = 0; i < 4; ++i) nz += is_nonzero_bits(w.data, w.dtype, base + i) ? 1 : 0;
      if (nz > 2) return Violation{r, g, nz};
    }
  return std::nullopt;
}

}  // namespace sf::s24
