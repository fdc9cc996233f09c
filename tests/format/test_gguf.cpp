// The GGUF reader and dequantizer.
//
// Fixtures (tests/data/gguf/) are written by gguf-py, llama.cpp's own Python writer; regenerate
// them with `python3 tests/data/gguf/make_fixtures.py --smollm2 $(scripts/fetch-smollm2)`. The
// dequantized values must equal gguf-py's gguf.quants.dequantize bit for bit; damaged files must
// give Error(Format) (or UnsupportedShape for valid files this reader cannot take) with a message
// that names the file and the problem. test_gguf_smollm2.cpp reads a real model file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.hpp"
#include "format/gguf.hpp"

namespace fs = std::filesystem;
using namespace sf;
using namespace sf::format;
using json = nlohmann::json;

namespace {

const fs::path kData = fs::path(SF_TEST_DATA_DIR) / "gguf";

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f) << "cannot read " << p;
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

json read_json(const fs::path& p) {
  return json::parse(std::ifstream(p));
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Parses bytes as "bad.gguf", expecting Error(status) whose message names the file and contains
// every one of `needles`.
void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> needles,
                  Status status = Status::Format) {
  try {
    parse_gguf(bytes, "bad.gguf");
    ADD_FAILURE() << "expected Error(" << status_name(status) << "), the file was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.status(), status) << msg;
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// Writes GGUF byte by byte, so that a test can make exactly the damage it wants.
class Builder {
 public:
  Builder& u8(uint8_t v) { return raw(&v, 1); }
  Builder& u32(uint32_t v) { return le(v, 4); }
  Builder& u64(uint64_t v) { return le(v, 8); }
  Builder& str(std::string_view s) { return u64(s.size()).raw(s.data(), s.size()); }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return raw("GGUF", 4).u32(version).u64(n_tensors).u64(n_kv);
  }
  Builder& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  Builder& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type,
                  uint64_t offset) {
    str(name).u32(uint32_t(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  // Zero padding to the alignment, then `n` data bytes.
  Builder& data(uint64_t n, uint64_t align = 32) {
    b_.resize((b_.size() + align - 1) / align * align, 0);
    b_.resize(b_.size() + n, 0x3c);
    return *this;
  }
  Builder& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return b_; }

 private:
  Builder& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b_.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> b_;
};

constexpr uint32_t kF32 = 0, kQ8_0 = 8;

// One F32 tensor of `n` elements at offset 0: a valid file for damage tests to start from.
std::vector<uint8_t> one_tensor_file(uint64_t n = 8) {
  return Builder().header(1, 0).tensor("w", {n}, kF32, 0).data(4 * n).bytes();
}

}  // namespace

// ---- dequantization --------------------------------------------------------------------------

TEST(GgufQuant, TypeTableMatchesGgml) {
  // Bytes per block as ggml-common.h lays them out; bits per weight follow.
  const std::map<std::string, std::pair<int64_t, int64_t>> expected = {
      {"F32", {1, 4}},      {"F16", {1, 2}},      {"BF16", {1, 2}},
      {"Q8_0", {32, 34}},   {"Q4_0", {32, 18}},   {"Q4_1", {32, 20}},
      {"Q4_K", {256, 144}}, {"Q5_K", {256, 176}}, {"Q6_K", {256, 210}}};
  ASSERT_EQ(gguf_supported_types().size(), expected.size());
  for (const auto& t : gguf_supported_types()) {
    const auto it = expected.find(std::string(t.name));
    ASSERT_NE(it, expected.end()) << t.name;
    EXPECT_EQ(t.block_size, it->second.first) << t.name;
    EXPECT_EQ(t.block_bytes, it->second.second) << t.name;
    EXPECT_EQ(gguf_find_type(uint32_t(t.type)), &t);
    EXPECT_EQ(ggml_type_name(uint32_t(t.type)), t.name);
  }
  EXPECT_DOUBLE_EQ(gguf_type_info(GgufType::Q4_K).bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(gguf_type_info(GgufType::Q6_K).bits_per_weight(), 6.5625);
  EXPECT_EQ(gguf_find_type(6), nullptr);  // Q5_0: ggml has it, SparseFlow does not read it
  EXPECT_EQ(ggml_type_name(6), "Q5_0");
  EXPECT_EQ(ggml_type_name(4), "");  // retired Q4_2
  EXPECT_EQ(ggml_type_name(1000), "");
}

TEST(GgufQuant, BitIdenticalToGgufPyForEveryType) {
  const GgufFile f = GgufFile::open((kData / "types.gguf").string());
  const json fx = read_json(kData / "fixtures.json");
  const std::vector<uint8_t> ref_bytes = read_bytes(kData / "types.dequant.bin");
  ASSERT_EQ(f.tensors().size(), fx["types"].size());
  std::set<std::string> seen;
  for (const auto& e : fx["types"]) {
    const std::string name = e["name"];
    SCOPED_TRACE(name);
    const GgufTensorInfo& t = f.get_tensor(name);
    const GgufTypeInfo& info = gguf_type_info(t.type);
    EXPECT_EQ(info.name, e["type"].get<std::string>());
    EXPECT_EQ(uint32_t(t.type), e["type_id"].get<uint32_t>());
    EXPECT_EQ(t.dims, e["dims"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.shape(), (std::vector<int64_t>{t.dims[1], t.dims[0]}));
    ASSERT_EQ(t.numel, e["numel"].get<int64_t>());
    EXPECT_EQ(t.size, uint64_t(t.numel / info.block_size * info.block_bytes));

    // The whole tensor at once, and row by row with a poisoned buffer: the same bits, every
    // element written.
    std::vector<float> got(size_t(t.numel));
    f.dequantize(t, got);
    const size_t at = e["ref_offset"].get<size_t>() * 4;
    ASSERT_LE(at + got.size() * 4, ref_bytes.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      uint32_t want;
      std::memcpy(&want, ref_bytes.data() + at + 4 * i, 4);
      if (bits(got[i]) != want && mismatches++ < 5)
        ADD_FAILURE() << "element " << i << ": got bits " << std::hex << bits(got[i])
                      << ", gguf-py " << want;
    }
    EXPECT_EQ(mismatches, 0u);
    std::vector<float> rows(got.size(), std::nanf("0x5a5a"));
    const auto src = f.tensor_bytes(t);
    const int64_t row_bytes = t.dims[0] / info.block_size * info.block_bytes;
    for (int64_t r = 0; r < t.dims[1]; ++r)
      dequantize_row(t.type, src.data() + r * row_bytes, t.dims[0], rows.data() + r * t.dims[0]);
    EXPECT_EQ(std::memcmp(rows.data(), got.data(), got.size() * 4), 0);
    seen.insert(std::string(info.name));
  }
  EXPECT_EQ(seen.size(), gguf_supported_types().size()) << "a type has no fixture";
}

TEST(GgufQuant, Fp16SpecialValues) {
  // Q8_0 with d = -0, +Inf, NaN, a subnormal: what ggml gives (d * q in fp32).
  uint8_t block[34] = {};
  for (int j = 0; j < 32; ++j) block[2 + j] = uint8_t(int8_t(j - 16));
  float y[32];
  auto with_d = [&](uint16_t d) {
    block[0] = uint8_t(d), block[1] = uint8_t(d >> 8);
    dequantize_row(GgufType::Q8_0, block, 32, y);
  };
  with_d(0x8000);
  EXPECT_EQ(bits(y[0]), bits(-0.0f * -16.0f));
  EXPECT_EQ(bits(y[17]), bits(-0.0f));
  with_d(0x7c00);
  EXPECT_EQ(y[31], INFINITY);
  EXPECT_TRUE(std::isnan(y[16]));  // Inf * 0
  with_d(0x7e00);
  EXPECT_TRUE(std::isnan(y[3]));
  with_d(0x0001);  // 2^-24
  EXPECT_EQ(y[31], 15.0f * std::ldexp(1.0f, -24));
}

TEST(GgufQuant, RejectsPartialBlocks) {
  uint8_t buf[64] = {};
  float out[64];
  try {
    dequantize_row(GgufType::Q4_0, buf, 33, out);
    FAIL() << "33 weights of Q4_0 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("block size 32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gguf_type_info(GgufType(6)), Error);
}

// ---- metadata ----------------------------------------------------------------------------------

TEST(GgufMetadata, EveryValueTypeRoundTrips) {
  const GgufFile f = GgufFile::open((kData / "metadata.gguf").string());
  const json fx = read_json(kData / "fixtures.json")["metadata"];
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.architecture(), "test");
  ASSERT_EQ(f.metadata().size(), fx.size());
  for (const auto& [key, e] : fx.items()) {
    SCOPED_TRACE(key);
    const GgufValue& v = f.get(key);
    EXPECT_EQ(v.key(), key);
    const std::string type = e["type"];
    const json& want = e["value"];
    if (type != "array") {
      EXPECT_EQ(v.type_name(), type);
      EXPECT_FALSE(v.is_array());
      if (type == "string") {
        EXPECT_EQ(v.as_string(), want.get<std::string>());
      } else if (type == "bool") {
        EXPECT_EQ(v.as_bool(), want.get<bool>());
      } else if (type == "float32") {
        EXPECT_EQ(v.as_float(), double(want.get<float>()));
      } else if (type == "float64") {
        EXPECT_EQ(v.as_float(), want.get<double>());
      } else if (want.is_number_unsigned() && want.get<uint64_t>() > uint64_t(INT64_MAX)) {
        EXPECT_THROW(v.as_int(), Error);
      } else {
        EXPECT_EQ(v.as_int(), want.get<int64_t>());
      }
      continue;
    }
    const std::string elem = e["elem"];
    ASSERT_TRUE(v.is_array());
    EXPECT_EQ(v.type_name(), fmt::format("array of {} {}", want.size(), elem));
    EXPECT_EQ(v.size(), want.size());
    if (elem == "string") {
      EXPECT_EQ(v.as_string_array(), want.get<std::vector<std::string>>());
    } else if (elem == "float32") {
      const auto got = v.as_float_array();
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], double(want[i].get<float>()));
    } else if (elem == "float64") {
      EXPECT_EQ(v.as_float_array(), want.get<std::vector<double>>());
    } else if (elem == "bool") {
      EXPECT_THROW(v.as_int_array(), Error);  // a bool array is not an integer array
    } else {
      std::vector<int64_t> w;
      for (const auto& x : want)
        w.push_back(x.is_number_unsigned() ? int64_t(x.get<uint64_t>()) : x.get<int64_t>());
      EXPECT_EQ(v.as_int_array(), w);
    }
  }

  // general.alignment 64: the data section and every tensor sit on 64-byte boundaries.
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_start() % 64, 0u);
  EXPECT_EQ(f.get_tensor("t.b").offset, 64u);
  std::vector<float> b(3);
  f.dequantize(f.get_tensor("t.b"), b);
  EXPECT_EQ(b, (std::vector<float>{-1, 0, 1}));
}

TEST(GgufMetadata, AccessorsNameTheKeyAndTheTypeFound) {
  const GgufFile f = GgufFile::open((kData / "metadata.gguf").string());
  auto expect = [](const std::function<void()>& fn, Status status,
                   std::initializer_list<std::string> needles) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      for (const auto& n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << n << " not in " << e.what();
    }
  };
  expect([&] { (void)f.get("v.u32").as_string(); }, Status::Format,
         {"metadata.gguf", "'v.u32'", "is uint32", "expected a string"});
  expect([&] { (void)f.get("v.string").as_int(); }, Status::Format, {"'v.string'", "is string"});
  expect([&] { (void)f.get("v.i32").as_float(); }, Status::Format,
         {"is int32", "float32 or float64"});
  expect([&] { (void)f.get("a.string").as_int_array(); }, Status::Format,
         {"'a.string'", "array of 4 string", "array of integers"});
  expect([&] { (void)f.get("a.u8").as_string_array(); }, Status::Format, {"array of 3 uint8"});
  expect([&] { (void)f.get("v.u64.max").as_int(); }, Status::Format,
         {"18446744073709551615", "int64"});
  expect([&] { (void)f.get("no.such.key"); }, Status::NotFound, {"'no.such.key'", "metadata.gguf"});
  expect([&] { (void)f.get_tensor("t.zz"); }, Status::NotFound, {"'t.zz'"});
  EXPECT_EQ(f.find("no.such.key"), nullptr);
  EXPECT_EQ(f.find_tensor("t.zz"), nullptr);
}

TEST(GgufFileTest, VersionTwoReadsLikeThree) {
  std::vector<uint8_t> b = read_bytes(kData / "types.gguf");
  b[4] = 2;  // v2 and v3 differ only in that v3 may be big-endian
  const GgufFile f = parse_gguf(b, "v2.gguf");
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.tensors().size(), 9u);
}

TEST(GgufFileTest, ViewsOutliveTheFileThroughItsMapping) {
  std::shared_ptr<void> keep;
  std::span<const uint8_t> view;
  std::vector<uint8_t> copy;
  {
    const GgufFile f = GgufFile::open((kData / "types.gguf").string());
    keep = f.mapping();
    ASSERT_NE(keep, nullptr);
    view = f.tensor_bytes(f.get_tensor("t.Q6_K"));
    copy.assign(view.begin(), view.end());
  }
  EXPECT_TRUE(std::equal(view.begin(), view.end(), copy.begin(), copy.end()));
}

TEST(GgufFileTest, EmptyValidFiles) {
  const GgufFile none = parse_gguf(Builder().header(0, 0).bytes(), "empty.gguf");
  EXPECT_TRUE(none.tensors().empty());
  EXPECT_TRUE(none.metadata().empty());
  // An empty array, a zero-sized tensor (no data bytes at all) and an empty key are valid GGUF.
  const auto b = Builder()
                     .header(1, 2)
                     .str("a.empty")
                     .u32(9)
                     .u32(4)
                     .u64(0)
                     .str("")
                     .u32(0)
                     .u8(7)
                     .tensor("z", {0, 3}, kQ8_0, 0)
                     .bytes();
  const GgufFile f = parse_gguf(b, "zero.gguf");
  EXPECT_EQ(f.get("a.empty").as_int_array(), std::vector<int64_t>{});
  EXPECT_EQ(f.get("").as_int(), 7);
  EXPECT_EQ(f.get_tensor("z").numel, 0);
  EXPECT_EQ(f.tensor_bytes(f.get_tensor("z")).size(), 0u);
}

// ---- damaged files -----------------------------------------------------------------------------

TEST(GgufDamage, TruncatedAtEveryOffset) {
  for (const char* name : {"types.gguf", "metadata.gguf"}) {
    const std::vector<uint8_t> full = read_bytes(kData / name);
    const GgufFile f = parse_gguf(full, name);
    uint64_t end = f.data_start();  // where the last tensor's bytes end
    for (const auto& t : f.tensors()) end = std::max(end, f.data_start() + t.offset + t.size);
    for (size_t n = 0; n < full.size(); ++n) {
      const std::vector<uint8_t> cut(full.begin(), full.begin() + n);
      if (n >= end) {  // only the padding after the last tensor is gone: still a valid file
        EXPECT_NO_THROW(parse_gguf(cut, "bad.gguf")) << n;
        continue;
      }
      SCOPED_TRACE(fmt::format("{} cut to {} of {} bytes", name, n, full.size()));
      expect_error(cut, {"truncated"});
    }
  }
}

TEST(GgufDamage, HeaderProblems) {
  expect_error({}, {"truncated", "0 bytes"});
  expect_error({'G', 'G'}, {"truncated"});
  expect_error({'G', 'G', 'M', 'L', 0, 0, 0, 0}, {"not a GGUF file", "GGML", "expected \"GGUF\""});
  expect_error(Builder().header(0, 0, 0).bytes(), {"version 0", "damaged"});
  expect_error(Builder().header(0, 0, 1).bytes(), {"version 1", "Reconvert"});
  expect_error(Builder().header(0, 0, 4).bytes(), {"version 4", "Upgrade SparseFlow"});
  expect_error(read_bytes(kData / "big_endian.gguf"), {"big-endian", "little-endian GGUF only"});
  // Counts no file of this size could hold are refused before anything is allocated.
  expect_error(Builder().header(uint64_t(1) << 60, 0).data(64).bytes(),
               {"1152921504606846976 tensors"});
  expect_error(Builder().header(0, ~uint64_t(0)).bytes(), {"18446744073709551615 metadata"});
}

TEST(GgufDamage, MetadataProblems) {
  auto kv_file = [](const std::function<void(Builder&)>& kv, uint64_t n_kv = 1) {
    Builder b;
    b.header(0, n_kv);
    kv(b);
    return b.bytes();
  };
  expect_error(kv_file([](Builder& b) { b.u64(uint64_t(1) << 62).raw("kkkkkkkk", 8); }),
               {"the key of metadata entry #0", "more than the 65535 bytes"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(8).u64(1000).raw("abc", 3); }),
               {"the value of metadata key 'k'", "length 1000", "only 3 bytes follow"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(13).u32(0); }), {"'k'", "value type 13"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(7).u8(2); }), {"'k'", "bool of value 2"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(9).u32(7).u64(2).u8(1).u8(5); }),
               {"'k' element 1", "bool of value 5"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(9).u32(4).u64(uint64_t(1) << 61).u32(1); }),
               {"'k'", "array of 2305843009213693952 uint32", "only 4 bytes follow"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(9).u32(8).u64(2).str("a").u64(99); }),
               {"string 1 of metadata key 'k'", "length 99"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(9).u32(20).u64(0); }),
               {"array of value type 20"});
  expect_error(kv_file([](Builder& b) { b.str("k").u32(9).u32(9).u64(1).u32(4).u64(1).u32(1); }),
               {"'k'", "array of arrays"}, Status::UnsupportedShape);
  expect_error(kv_file([](Builder& b) { b.kv_u32("k", 1).kv_u32("k", 2); }, 2),
               {"'k' appears twice"});
  expect_error(kv_file([](Builder& b) { b.kv_u32("general.alignment", 48); }),
               {"general.alignment is 48", "power of two"});
  expect_error(kv_file([](Builder& b) { b.kv_u32("general.alignment", 0); }),
               {"general.alignment is 0"});
  expect_error(kv_file([](Builder& b) { b.str("general.alignment").u32(8).str("32"); }),
               {"'general.alignment' is string", "expected an integer"});
}

TEST(GgufDamage, TensorProblems) {
  // The starting point is valid.
  EXPECT_EQ(parse_gguf(one_tensor_file(), "ok.gguf").tensors().size(), 1u);
  auto file = [](std::vector<uint64_t> dims, uint32_t type, uint64_t offset, uint64_t data) {
    return Builder().header(1, 0).tensor("w", dims, type, offset).data(data).bytes();
  };
  expect_error(file({8}, kF32, 0, 16),
               {"tensor 'w'", "32 bytes at data offset 0", "reaches past the end"});
  expect_error(file({8}, kF32, 64, 64), {"reaches past the end"});
  expect_error(file({8}, kF32, uint64_t(-32), 64), {"reaches past the end"});
  expect_error(file({8}, kF32, 4, 64), {"offset 4 is not a multiple of the alignment 32"});
  expect_error(file({8}, 99, 0, 32),
               {"type 99", "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K"});
  expect_error(file({32}, 6, 0, 32), {"Q5_0 (6)", "not one SparseFlow reads", "Q4_K"},
               Status::UnsupportedShape);
  expect_error(file({16}, kQ8_0, 0, 32),
               {"ne[0] = 16 is not a multiple of the Q8_0 block size 32"});
  expect_error(file({uint64_t(1) << 32, uint64_t(1) << 32}, kF32, 0, 0),
               {"more elements than an int64"});
  expect_error(file({uint64_t(1) << 63}, kF32, 0, 0), {"[9223372036854775808]", "more elements"});
  expect_error(file({uint64_t(1) << 62}, kF32, 0, 0), {"more bytes than 64 bits"});
  expect_error(Builder().header(1, 0).tensor("w", {}, kF32, 0).data(32).bytes(),
               {"0 dimensions, expected 1 to 4"});
  expect_error(Builder().header(1, 0).tensor("w", {1, 1, 1, 1, 1}, kF32, 0).data(4).bytes(),
               {"5 dimensions"});
  expect_error(Builder().header(1, 0).tensor(std::string(65, 'x'), {1}, kF32, 0).data(4).bytes(),
               {"the name of tensor #0", "length 65", "64 bytes"});
  expect_error(
      Builder().header(2, 0).tensor("w", {8}, kF32, 0).tensor("w", {8}, kF32, 32).data(64).bytes(),
      {"tensor 'w'", "appears twice"});
  expect_error(
      Builder().header(2, 0).tensor("a", {16}, kF32, 0).tensor("b", {8}, kF32, 32).data(96).bytes(),
      {"'a' [0, 64)", "'b' [32, 64)", "overlap"});
}

TEST(GgufDamage, RandomCorruptionNeverCrashes) {
  // Not a fuzzer (fuzz/fuzz_gguf.cpp is): a quick check that flipped bytes anywhere give a file
  // that parses and dequantizes, or an sf::Error, and nothing else.
  const std::vector<uint8_t> full = read_bytes(kData / "types.gguf");
  std::mt19937 rng(5);
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> b = full;
    const int flips = 1 + int(rng() % 4);
    const size_t region = iter % 2 ? b.size() : 600;  // half the time inside the header + infos
    for (int k = 0; k < flips; ++k) b[rng() % region] ^= uint8_t(1u << (rng() % 8));
    try {
      const GgufFile f = parse_gguf(b, "bad.gguf");
      for (const auto& t : f.tensors()) {
        std::vector<float> out(size_t(t.numel));
        f.dequantize(t, out);
      }
      ++accepted;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(accepted, 0);  // flips in tensor data leave a valid file
}
