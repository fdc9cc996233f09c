// The safetensors reader and writer: round trips over every dtype, and malformed files, each of
// which must give Error(Format) with a message that names the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.hpp"
#include "format/safetensors.hpp"

namespace fs = std::filesystem;
using namespace sf;

namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           fmt::format("sf_st_{}_{}_{}", info->test_suite_name(), info->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// A file made of an 8-byte length, the given header text and the given data bytes.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes,
                              std::optional<uint64_t> claimed_len = std::nullopt) {
  const uint64_t n = claimed_len.value_or(header.size());
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0x5a);
  for (int i = 0; i < 8; ++i) out[i] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

// Parses bytes, expecting Error(Format) whose message contains every one of `needles`.
void expect_format_error(const std::vector<uint8_t>& bytes,
                         std::initializer_list<std::string> needles) {
  try {
    st::File::from_memory(bytes, "bad.safetensors");
    FAIL() << "expected Error(Format), the file was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Format) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

}  // namespace

TEST_F(SafetensorsTest, RoundTripEveryDTypeWithMetadata) {
  const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8,
                       DType::U8,  DType::I16, DType::I32,  DType::I64, DType::BOOL};
  std::vector<std::vector<uint8_t>> storage;
  std::vector<st::TensorToWrite> tensors;
  uint32_t seed = 1;
  for (DType t : all) {
    // Odd sizes so that later tensors are not 8-byte aligned by accident.
    const std::vector<int64_t> shape = {3, int64_t(seed % 5 + 1)};
    storage.push_back(random_bytes(size_t(shape[0] * shape[1]) * dtype_size(t), seed++));
    tensors.push_back({fmt::format("t.{}", dtype_name(t)), t, shape, storage.back()});
  }
  storage.push_back(random_bytes(4, 99));
  tensors.push_back({"scalar", DType::F32, {}, storage.back()});  // 0-d: one element
  tensors.push_back({"empty", DType::F16, {4, 0, 2}, {}});        // zero elements
  tensors.push_back(
      {"zzz_before_a", DType::U8, {2}, storage.front()});  // header order != alphabetical
  storage.push_back(random_bytes(2, 7));
  tensors.back().data = storage.back();

  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\u00e9llo \"q\""}};
  st::write_file(path("a.safetensors"), tensors, meta);

  const auto f = st::File::open(path("a.safetensors"));
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& got = f.tensors()[i];
    const auto& want = tensors[i];
    EXPECT_EQ(got.name, want.name);  // header order is preserved
    EXPECT_EQ(got.dtype, want.dtype) << want.name;
    EXPECT_EQ(got.shape, want.shape) << want.name;
    const auto d = f.data(got);
    ASSERT_EQ(d.size(), want.data.size()) << want.name;
    EXPECT_TRUE(std::equal(d.begin(), d.end(), want.data.begin())) << want.name;
  }
  EXPECT_EQ(f.get("scalar").numel(), 1);
  EXPECT_EQ(f.get("empty").numel(), 0);
  EXPECT_EQ(f.find("nope"), nullptr);
  try {
    f.get("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::NotFound);
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }

  // The header is padded with spaces so that the data section starts 8-byte aligned.
  std::ifstream in(path("a.safetensors"), std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
}

TEST_F(SafetensorsTest, EmptyFileListAndNoMetadata) {
  st::write_file(path("e.safetensors"), {});
  const auto f = st::File::open(path("e.safetensors"));
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(SafetensorsTest, WriterRejectsWrongByteCountAndDuplicates) {
  std::vector<uint8_t> b(10);
  const st::TensorToWrite wrong{"w", DType::F32, {2, 2}, b};
  EXPECT_THROW(st::write_file(path("w.safetensors"), {&wrong, 1}), Error);
  EXPECT_FALSE(fs::exists(path("w.safetensors")));  // nothing half-written is left behind
  std::vector<uint8_t> c(4);
  const st::TensorToWrite twice[] = {{"x", DType::F32, {1}, c}, {"x", DType::F32, {1}, c}};
  EXPECT_THROW(st::write_file(path("w.safetensors"), twice), Error);
  const st::TensorToWrite neg{"n", DType::F32, {-1}, {}};
  EXPECT_THROW(st::write_file(path("w.safetensors"), {&neg, 1}), Error);
}

TEST_F(SafetensorsTest, OpenMissingFileIsIoError) {
  try {
    st::File::open(path("does-not-exist.safetensors"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::Io);
    EXPECT_NE(std::string(e.what()).find("does-not-exist"), std::string::npos);
  }
}

TEST_F(SafetensorsTest, TruncatedFiles) {
  expect_format_error({}, {"truncated"});
  expect_format_error({1, 0, 0}, {"truncated"});
  // A real file cut short inside its data section.
  std::vector<uint8_t> data(64);
  const st::TensorToWrite t{"w", DType::F32, {4, 4}, data};
  st::write_file(path("t.safetensors"), {&t, 1});
  std::ifstream in(path("t.safetensors"), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  bytes.resize(bytes.size() - 1);
  expect_format_error(bytes, {"'w'", "past the end"});
  bytes.resize(20);  // cut inside the header
  expect_format_error(bytes, {"truncated"});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  expect_format_error(raw_file("{}", 0, 1000), {"1000", "truncated"});
  expect_format_error(raw_file("{}", 0, uint64_t(1) << 40), {"limit"});
}

TEST_F(SafetensorsTest, NonJsonHeader) {
  expect_format_error(raw_file("{\"a\": [1, 2", 0), {"not valid JSON"});
  expect_format_error(raw_file("hello world", 0), {"not valid JSON"});
  expect_format_error(raw_file("[1, 2, 3]", 0), {"must be a JSON object"});
  expect_format_error(raw_file("{\"a\": [[[[[1]]]]]}", 0), {"nests deeper"});
}

TEST_F(SafetensorsTest, OffsetsPastEnd) {
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
                      {"'w'", "past the end"});
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
                      {"'w'", "end before"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_format_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               16),
                      {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, SizeNotMatchingShape) {
  expect_format_error(raw_file(R"({"w":{"dtype":"F16","shape":[3,2],"data_offsets":[0,8]}})", 8),
                      {"'w'", "needs 12 bytes", "span 8"});
  // An element count that overflows 64 bits must not wrap to a small size.
  expect_format_error(
      raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
      {"'w'", "64 bits"});
}

TEST_F(SafetensorsTest, UnknownDTypeAndBadShapes) {
  expect_format_error(raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
                      {"'w'", "unknown dtype \"F8_E4M3\"", "BF16"});
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,0]}})", 0),
                      {"'w'", "negative"});
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                      {"'w'", "not a non-negative integer"});
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                      {"'w'", "\"shape\""});
  expect_format_error(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                      {"'w'", "data_offsets"});
  expect_format_error(raw_file(R"({"w":[1]})", 4), {"'w'", "expected an object"});
}

TEST_F(SafetensorsTest, DuplicateNamesAndBadMetadata) {
  expect_format_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                               2),
                      {"'w' twice"});
  expect_format_error(raw_file(R"({"__metadata__":{"k":1}})", 0), {"__metadata__", "'k'"});
  expect_format_error(raw_file(R"({"__metadata__":[1]})", 0), {"__metadata__"});
}

TEST_F(SafetensorsTest, AcceptsGapsAndTrailingBytes) {
  // Other writers may align each tensor; gaps between tensors are not an error.
  const auto f =
      st::File::from_memory(raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}  )",
                                     16));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.data(f.get("b")).size(), 4u);
  EXPECT_EQ(f.data(f.get("b"))[0], 0x5a);
}

// Damaged copies of a valid file (bytes flipped, cut short, header length changed) must either
// parse into tensors that lie inside the buffer or fail with Error(Format); never crash.
TEST_F(SafetensorsTest, RandomDamageIsRejectedOrSafe) {
  std::vector<uint8_t> a = random_bytes(48, 1), b = random_bytes(6, 2);
  const st::TensorToWrite ts[] = {{"a", DType::F32, {3, 4}, a}, {"b", DType::I16, {3}, b}};
  st::write_file(path("v.safetensors"), ts, {{"k", "v"}});
  std::ifstream in(path("v.safetensors"), std::ios::binary);
  const std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), {});

  std::mt19937 rng(123);
  int rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bad = good;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 3) {
        case 0:
          bad[rng() % bad.size()] = uint8_t(rng());
          break;
        case 1:
          bad.resize(rng() % bad.size());
          break;
        default:
          if (bad.size() > 8)
            bad[8 + rng() % std::min<size_t>(bad.size() - 8, 200)] = "{}[],:\"0-9e"[rng() % 11];
      }
      if (bad.empty()) break;
    }
    try {
      const auto f = st::File::from_memory(bad);
      for (const auto& t : f.tensors()) {
        const auto d = f.data(t);
        ASSERT_GE(d.data(), bad.data());
        ASSERT_LE(d.data() + d.size(), bad.data() + bad.size());
        ASSERT_EQ(d.size(), uint64_t(t.numel()) * dtype_size(t.dtype));
      }
    } catch (const Error& e) {
      ASSERT_EQ(e.status(), Status::Format) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);  // the damage is real: most copies must be refused
}
