// compress / decompress / group_indices: bit-exact round trips and the documented layout.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>

#include "core/error.hpp"
#include "sparse24/internal.hpp"
#include "sparse24/sparse24.hpp"

namespace sf::s24 {
namespace {

// Random 2:4 matrix with awkward bit patterns: NaN payloads, Inf, subnormals, -0.0, and groups
// with 0, 1 or 2 nonzeros.
std::vector<uint8_t> random_24(int64_t rows, int64_t cols, DType dt, std::mt19937& rng) {
  const size_t es = dtype_size(dt);
  std::vector<uint8_t> buf(size_t(rows * cols) * es, 0);
  auto put_bits = [&](size_t i, uint32_t bits) { std::memcpy(buf.data() + i * es, &bits, es); };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols / 4; ++g) {
      const int nnz = int(rng() % 3);
      int pos[4] = {0, 1, 2, 3};
      std::shuffle(pos, pos + 4, rng);
      for (int t = 0; t < 4; ++t) {
        const size_t i = size_t(r * cols + 4 * g + pos[t]);
        if (t < nnz) {
          uint32_t bits = uint32_t(rng());
          if (es == 2) bits &= 0xffffu;
          if ((bits & (es == 2 ? 0x7fffu : 0x7fffffffu)) == 0) bits |= 1;  // keep it nonzero
          put_bits(i, bits);  // any pattern: NaNs with payloads, Infs, subnormals, normals
        } else if (t == nnz && nnz < 2 && rng() % 3 == 0) {
          put_bits(i, es == 2 ? 0x8000u : 0x80000000u);  // a -0.0 that fits in a free slot
        }
      }
    }
  return buf;
}

Status catch_status(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.status();
  }
  return Status::Ok;
}

TEST(Compress, RoundTripBitExactRandomShapes) {
  std::mt19937 rng(11);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 4},   {16, 32}, {17, 36}, {5, 100},
                                                           {33, 64}, {48, 96}, {3, 28}, {64, 260}};
  for (DType dt : {DType::F16, DType::BF16, DType::F32})
    for (auto [rows, cols] : shapes) {
      auto w = random_24(rows, cols, dt, rng);
      const MatrixView v{w.data(), dt, rows, cols};
      ASSERT_FALSE(find_violation(v).has_value());
      const Compressed c = compress(v);
      EXPECT_EQ(c.rows_padded % 16, 0);
      EXPECT_EQ(c.cols_padded % 32, 0);
      EXPECT_EQ(c.values.size(), size_t(c.rows_padded * c.cols_padded / 2) * dtype_size(dt));
      EXPECT_EQ(c.meta.size(), size_t(c.rows_padded / 16 * c.cols_padded / 32 * 16));
      std::vector<uint8_t> back(w.size(), 0xAB);  // poisoned
      decompress(c, back.data());
      ASSERT_EQ(std::memcmp(back.data(), w.data(), w.size()), 0)
          << dtype_name(dt) << " [" << rows << ", " << cols << "]";
    }
}

TEST(Compress, GroupIndicesMatchValuesAndPadding) {
  std::mt19937 rng(5);
  const int64_t rows = 21, cols = 40;
  auto w = random_24(rows, cols, DType::F16, rng);
  const Compressed c = compress({w.data(), DType::F16, rows, cols});
  const auto* vals = reinterpret_cast<const uint16_t*>(c.values.data());
  const auto* dense = reinterpret_cast<const uint16_t*>(w.data());
  for (int64_t r = 0; r < c.rows_padded; ++r)
    for (int64_t g = 0; g < c.cols_padded / 4; ++g) {
      const auto [i0, i1] = group_indices(c, r, g);
      ASSERT_LT(i0, i1) << "indices ascend";
      const uint16_t v0 = vals[r * c.cols_padded / 2 + 2 * g], v1 = vals[r * c.cols_padded / 2 + 2 * g + 1];
      if (r >= rows || g >= cols / 4) {  // padding: indices (0, 1), zero values
        EXPECT_EQ(i0, 0);
        EXPECT_EQ(i1, 1);
        EXPECT_EQ(v0, 0);
        EXPECT_EQ(v1, 0);
        continue;
      }
      EXPECT_EQ(v0, dense[r * cols + 4 * g + i0]);
      EXPECT_EQ(v1, dense[r * cols + 4 * g + i1]);
      // Every element that is not stored is +0.0 (bit pattern zero).
      for (int i = 0; i < 4; ++i) {
        if (i != i0 && i != i1) {
          EXPECT_EQ(dense[r * cols + 4 * g + i], 0);
        }
      }
    }
  EXPECT_THROW(group_indices(c, c.rows_padded, 0), Error);
}

// The documented layout, checked against a hand-placed element: row r, group g lives in word
// (rb * (Kp/32) + kb) * 16 + 2 * (r % 8) + (g % 8) / 4, nibble at 16 * ((r % 16) / 8) + 4 * (g % 4),
// value i0 | i1 << 2.
TEST(Compress, MetadataBitLayout) {
  const int64_t rows = 32, cols = 64;
  std::vector<float> w(size_t(rows * cols), 0.0f);
  const int64_t r = 21, g = 13;  // rb 1, row-in-tile 5 (half 0) -> rows 21: r%16 = 5; kb 1, g%8 = 5
  w[size_t(r * cols + 4 * g + 1)] = 2.0f;
  w[size_t(r * cols + 4 * g + 3)] = 3.0f;
  const Compressed c = compress({w.data(), DType::F32, rows, cols});
  const size_t word = size_t((1 * 2 + 1) * 16 + 2 * (5 % 8) + (5 / 4));
  const int shift = 16 * (5 / 8) + 4 * (5 % 4);
  EXPECT_EQ((c.meta[word] >> shift) & 0xf, 1u | (3u << 2));
  // Every other nibble is the default (0, 1) = 0b0100.
  for (size_t i = 0; i < c.meta.size(); ++i)
    for (int s = 0; s < 32; s += 4) {
      if (!(i == word && s == shift)) {
        ASSERT_EQ((c.meta[i] >> s) & 0xf, 4u) << i << " " << s;
      }
    }
  // A row in the upper half of a tile (r % 16 >= 8) uses the high 16 bits.
  std::vector<float> w2(size_t(rows * cols), 0.0f);
  w2[size_t(10 * cols + 4 * 2 + 2)] = 1.0f;  // r 10 -> r%8 2, half 1; g 2 -> word +0, nibble 2
  const Compressed c2 = compress({w2.data(), DType::F32, rows, cols});
  EXPECT_EQ((c2.meta[2 * 2] >> (16 + 8)) & 0xf, 0u | (2u << 2));
  const float* vals = reinterpret_cast<const float*>(c.values.data());
  EXPECT_EQ(vals[r * 32 + 2 * g], 2.0f);
  EXPECT_EQ(vals[r * 32 + 2 * g + 1], 3.0f);
}

TEST(Compress, RejectsNon24WithRowAndGroup) {
  std::vector<float> w(size_t(4 * 8), 0.0f);
  w[2 * 8 + 4] = w[2 * 8 + 5] = w[2 * 8 + 6] = 1.0f;
  try {
    compress({w.data(), DType::F32, 4, 8});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("row 2 group 1"), std::string::npos) << e.what();
  }
}

// Every one of the 16 values of a field: the six with i0 < i1 pass, the ten others are reported
// at their row and group, in row-major order even where tile order puts another bad word first.
TEST(Compress, FindBadMetadataNamesTheFirstBadGroup) {
  std::mt19937 rng(3);
  auto w = random_24(40, 96, DType::F16, rng);
  const Compressed good = compress({w.data(), DType::F16, 40, 96});
  EXPECT_FALSE(find_bad_metadata(good).has_value());
  const MetaPos at = meta_pos(good.cols_padded, 21, 13);
  int bad_values = 0;
  for (uint32_t f = 0; f < 16; ++f) {
    Compressed c = good;
    c.meta[at.word] = (c.meta[at.word] & ~(0xfu << at.shift)) | (f << at.shift);
    const auto bad = find_bad_metadata(c);
    const int i0 = int(f & 3), i1 = int(f >> 2);
    ASSERT_EQ(bad.has_value(), i0 >= i1) << f;
    if (!bad) continue;
    ++bad_values;
    EXPECT_EQ(bad->row, 21);
    EXPECT_EQ(bad->group, 13);
    EXPECT_EQ(bad->i0, i0);
    EXPECT_EQ(bad->i1, i1);
  }
  EXPECT_EQ(bad_values, 10);

  Compressed c = good;
  const MetaPos early = meta_pos(c.cols_padded, 3, 9), late = meta_pos(c.cols_padded, 5, 0);
  ASSERT_GT(early.word, late.word);  // (3, 9) is in tile kb = 1, after (5, 0)'s tile
  c.meta[early.word] |= 0xfu << early.shift;
  c.meta[late.word] |= 0xfu << late.shift;
  const auto bad = find_bad_metadata(c);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->row, 3);
  EXPECT_EQ(bad->group, 9);
  // Padding rows are checked too: the high half of the last word is row 47 (rows 40..47 pad).
  c = good;
  c.meta.back() &= 0x0000ffffu;
  const auto pad = find_bad_metadata(c);
  ASSERT_TRUE(pad.has_value());
  EXPECT_EQ(pad->row, 47);
  EXPECT_EQ(catch_status(
                [&] { find_bad_metadata(std::span<const uint32_t>(good.meta).first(3), 16, 32); }),
            Status::InvalidArgument);
}

// A 13 GB fp16 model holds about 1.4 GB of metadata (1/9 of its bytes); it must validate in well
// under a second per GB of model. 64 MiB of words (a 512M-element matrix), best of 3 on a shared
// machine, against 0.5 GB/s of metadata (0.2 s per GB of model).
TEST(Compress, FindBadMetadataRunsAtMemorySpeed) {
  const int64_t rows = 16384, cols = 32768;
  // Every field valid: (0, 1) (0, 2) (1, 3) (0, 1) (2, 3) (0, 2) (0, 3) (1, 2).
  const std::vector<uint32_t> meta(size_t(rows / 16) * size_t(cols / 32) * 16, 0x9c8e4d84u);
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(find_bad_metadata(meta, rows, cols).has_value());
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double gbps = double(meta.size() * 4) / best / 1e9;
  std::printf("find_bad_metadata: %.1f GB/s of metadata\n", gbps);
#ifdef NDEBUG
  EXPECT_GT(gbps, 0.5);
#endif
}

}  // namespace
}  // namespace sf::s24
