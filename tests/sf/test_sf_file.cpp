// The .sf reader and writer: bit-exact round trips of every kind and dtype, and every kind of
// damage refused with a message that names what is wrong.
#include <nlohmann/json.hpp>

#include <cstring>
#include <random>

#include "format/sf_file.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using sftest::catch_error;
using json = nlohmann::json;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

// A file with every kind this reader knows, every float dtype, an empty tensor, a tokenizer-like
// byte blob and a kind from the future.
std::vector<sff::EntrySpec> sample_specs() {
  std::vector<sff::EntrySpec> s;
  s.push_back(sff::dense_spec("a.f32", DType::F32, {3, 5}));
  s.push_back(sff::dense_spec("b.f16", DType::F16, {7}));
  s.push_back(sff::dense_spec("c.bf16", DType::BF16, {2, 3, 4}));
  s.push_back(sff::dense_spec("d.empty", DType::F32, {0, 4}));
  s.push_back(sff::s24_spec("s.f16", DType::F16, 20, 40));
  s.push_back(sff::s24_spec("s.bf16", DType::BF16, 16, 32));
  s.push_back(sff::s24_spec("s.f32", DType::F32, 3, 4));
  s.push_back(sff::bytes_spec("tokenizer.vocab.json", 100));
  sff::EntrySpec future{"model.decoder.layers.0.ffn_neurons", "ffn_neurons", DType::F16, {8, 16}, {}, {}};
  future.parts = {{"fc1_rows", 256}, {"fc2_cols", 256}};
  s.push_back(future);
  return s;
}

// Writes the sample file; returns every part's bytes in table order.
std::vector<std::vector<uint8_t>> write_sample(const std::string& path) {
  const auto specs = sample_specs();
  sff::Writer w(path, "opt", json{{"hidden_size", 64}}, json{{"sparsity.pattern", "2:4"}, {"n", 3}}, specs);
  std::vector<std::vector<uint8_t>> parts;
  uint32_t seed = 1;
  for (const auto& s : specs)
    for (const auto& [role, size] : s.parts) {
      parts.push_back(random_bytes(size, seed++));
      w.write(parts.back());
    }
  w.finish();
  return parts;
}

// Rewrites the JSON header with `mutate` and re-lays the file around it with valid header and
// trailer checksums, so that only the lie the mutation tells is left to find.
std::vector<uint8_t> relayout(const std::vector<uint8_t>& f, const std::function<void(json&)>& mutate) {
  const uint64_t h = le64(f.data() + 16);
  json header = json::parse(f.begin() + 24, f.begin() + 24 + std::ptrdiff_t(h));
  size_t nparts = 0;
  for (const auto& t : header["tensors"]) nparts += t["parts"].size();
  const uint64_t d = (24 + h + 63) / 64 * 64;
  const size_t trailer = 8 * (nparts + 2);
  std::vector<uint8_t> data(f.begin() + std::ptrdiff_t(d), f.end() - std::ptrdiff_t(trailer));
  std::vector<uint8_t> tr(f.end() - std::ptrdiff_t(trailer), f.end());
  mutate(header);
  const std::string text = header.dump();
  put64(tr.data(), sff::xxh64({reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
  put64(tr.data() + 8 * (nparts + 1), sff::xxh64({tr.data(), 8 * (nparts + 1)}));
  const size_t d2 = (24 + text.size() + 63) / 64 * 64;
  std::vector<uint8_t> out(d2 + data.size() + tr.size(), 0);
  std::memcpy(out.data(), f.data(), 24);
  put64(out.data() + 16, text.size());
  std::memcpy(out.data() + 24, text.data(), text.size());
  std::memcpy(out.data() + d2, data.data(), data.size());
  std::memcpy(out.data() + d2 + data.size(), tr.data(), tr.size());
  return out;
}

class SfFileTest : public sftest::ScratchTest {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    file_ = path("m.sf");
    parts_ = write_sample(file_);
    bytes_ = sftest::read_bytes(file_);
  }
  // Parsing `b` must fail with Error(status) whose message contains every one of `needles`.
  void expect_refused(const std::vector<uint8_t>& b, std::initializer_list<std::string> needles,
                      Status status = Status::Format) {
    const Error e = catch_error([&] { sff::File::from_memory(b, "bad.sf"); });
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message: " << e.what() << "\nmissing: " << n;
  }
  std::string file_;
  std::vector<std::vector<uint8_t>> parts_;
  std::vector<uint8_t> bytes_;
};

TEST_F(SfFileTest, RoundTripIsBitExactAndAligned) {
  const auto f = sff::File::open(file_);
  EXPECT_TRUE(f.checksums_verified());
  EXPECT_EQ(f.version(), sff::kFormatVersion);
  EXPECT_EQ(f.architecture(), "opt");
  EXPECT_EQ(f.config().at("hidden_size"), 64);
  EXPECT_EQ(f.metadata().at("sparsity.pattern"), "2:4");
  EXPECT_EQ(f.metadata().at("n"), 3);
  const auto specs = sample_specs();
  ASSERT_EQ(f.entries().size(), specs.size());
  size_t k = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& e = f.entries()[i];
    EXPECT_EQ(e.name, specs[i].name);
    EXPECT_EQ(e.kind, specs[i].kind);
    EXPECT_EQ(e.dtype, specs[i].dtype);
    EXPECT_EQ(e.shape, specs[i].shape);
    EXPECT_EQ(e.padded_shape, specs[i].padded_shape);
    ASSERT_EQ(e.parts.size(), specs[i].parts.size());
    for (const auto& p : e.parts) {
      const auto d = f.data(p);
      EXPECT_EQ(std::vector<uint8_t>(d.begin(), d.end()), parts_[k]) << e.name << " " << p.role;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(d.data()) % sff::kAlignment, 0u) << e.name << " " << p.role;
      ++k;
    }
  }
  const auto* s = f.find("s.f16");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->padded_shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(s->part("values")->size, 32u * 32 * 2);
  EXPECT_EQ(s->part("meta")->size, 2u * 2 * 16 * 4);
  EXPECT_EQ(catch_error([&] { f.get("nope"); }).status(), Status::NotFound);
  // The same bytes parse from memory.
  const auto g = sff::File::from_memory(bytes_);
  EXPECT_EQ(g.entries().size(), specs.size());
}

TEST_F(SfFileTest, TruncatedAnywhereIsRefused) {
  for (size_t n : {size_t(0), size_t(7), size_t(23), size_t(24), size_t(100), bytes_.size() / 2, bytes_.size() - 1}) {
    std::vector<uint8_t> b(bytes_.begin(), bytes_.begin() + std::ptrdiff_t(n));
    SCOPED_TRACE(n);
    const Error e = catch_error([&] { sff::File::from_memory(b); });
    EXPECT_EQ(e.status(), Status::Format) << e.what();
  }
  std::vector<uint8_t> b(bytes_.begin(), bytes_.end() - 1);
  expect_refused(b, {"truncated"});
  b.assign(bytes_.begin(), bytes_.begin() + 10);
  expect_refused(b, {"truncated", "24-byte preamble"});
}

TEST_F(SfFileTest, BadMagicIsRefused) {
  auto b = bytes_;
  std::memcpy(b.data(), "PK\x03\x04xxxx", 8);
  expect_refused(b, {"not a SparseFlow model file", "SFMODEL"});
}

TEST_F(SfFileTest, FutureVersionIsRefused) {
  auto b = bytes_;
  b[8] = uint8_t(sff::kFormatVersion + 1);
  expect_refused(b, {"format version 2", "Upgrade SparseFlow"});
  b[8] = 0;
  expect_refused(b, {"Version 0"});
}

TEST_F(SfFileTest, HeaderSizeBeyondFileIsRefused) {
  auto b = bytes_;
  put64(b.data() + 16, b.size());
  expect_refused(b, {"does not fit the file"});
}

TEST_F(SfFileTest, JsonGarbageIsRefused) {
  auto b = bytes_;
  b[24] = '!';  // the header's opening brace
  expect_refused(b, {"not valid JSON"});
}

TEST_F(SfFileTest, EditedHeaderFailsItsChecksum) {
  auto b = bytes_;
  const std::string needle = "\"2:4\"";
  auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  ASSERT_NE(it, b.end());
  *(it + 1) = '3';  // "3:4": still valid JSON, no layout change
  expect_refused(b, {"header does not match its checksum"});
}

TEST_F(SfFileTest, OffsetPastTheEndIsRefused) {
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][1]["parts"][0]["offset"] = 1ull << 40; }),
                 {"tensor 'b.f16'", "past the end"});
}

TEST_F(SfFileTest, MisalignedOffsetIsRefused) {
  expect_refused(relayout(bytes_, [](json& h) {
                   h["tensors"][2]["parts"][0]["offset"] = h["tensors"][2]["parts"][0]["offset"].get<uint64_t>() + 8;
                 }),
                 {"tensor 'c.bf16'", "not a multiple of 64"});
}

TEST_F(SfFileTest, OverlappingTensorsAreRefused) {
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][1]["parts"][0]["offset"] = h["tensors"][0]["parts"][0]["offset"]; }),
                 {"overlaps", "a.f32", "b.f16"});
}

TEST_F(SfFileTest, SizeThatDisagreesWithShapeIsRefused) {
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][0]["shape"] = {3, 6}; }),
                 {"tensor 'a.f32'", "is 60 bytes", "needs 72 bytes"});
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][4]["padded_shape"] = {20, 40}; }),
                 {"tensor 's.f16'", "padded_shape"});
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][0]["dtype"] = "F17"; }), {"unknown dtype \"F17\""});
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][0]["shape"] = {-3, 5}; }), {"non-negative"});
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][1]["name"] = "a.f32"; }), {"appears twice"});
  expect_refused(relayout(bytes_, [](json& h) { h["tensors"][4]["parts"][1]["role"] = "metadata"; }),
                 {"needs a part \"meta\""});
}

TEST_F(SfFileTest, OneFlippedDataByteFailsTheChecksumNamingTheTensor) {
  const auto f = sff::File::open(file_);
  const auto* e = f.find("s.bf16");
  const uint64_t at = f.data_start() + e->part("meta")->offset + 17;
  auto b = bytes_;
  b[at] ^= 0x01;
  expect_refused(b, {"tensor 's.bf16'", "\"meta\"", "fails its checksum"});
  // Opening without verification succeeds; verifying afterwards finds it.
  auto g = sff::File::from_memory(b, "bad.sf", {.verify_checksums = false});
  EXPECT_FALSE(g.checksums_verified());
  EXPECT_NE(std::string(catch_error([&] { g.verify_checksums(); }).what()).find("s.bf16"), std::string::npos);
}

TEST_F(SfFileTest, DamagedTrailerAndTrailingBytesAreRefused) {
  auto b = bytes_;
  b[b.size() - 3] ^= 0x40;
  expect_refused(b, {"checksum trailer"});
  b = bytes_;
  b.push_back(0);
  expect_refused(b, {"unexpected bytes"});
}

TEST_F(SfFileTest, UnknownRequiredFeatureIsRefusedUnknownKindIsKept) {
  expect_refused(relayout(bytes_, [](json& h) { h["requires"] = {"s24", "hyperdrive"}; }),
                 {"\"hyperdrive\"", "Upgrade SparseFlow"}, Status::UnsupportedShape);
  const auto f = sff::File::open(file_);
  const auto* e = f.find("model.decoder.layers.0.ffn_neurons");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->kind, "ffn_neurons");
  EXPECT_EQ(e->parts.size(), 2u);
}

// Whatever bytes are flipped, the reader throws sf::Error or succeeds; it never crashes.
TEST_F(SfFileTest, RandomDamageNeverCrashes) {
  std::mt19937 rng(7);
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    auto b = bytes_;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));
    try {
      sff::File::from_memory(b);
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(refused, 300);  // every byte is covered by a checksum or a structural check
}

TEST_F(SfFileTest, WriterChecksSizesAndIsAtomic) {
  const auto before = sftest::read_bytes(file_);
  {
    sff::Writer w(file_, "opt", json::object(), json::object(), sample_specs());
    EXPECT_EQ(catch_error([&] { w.write(std::vector<uint8_t>(59)); }).status(), Status::Internal);  // 'a.f32' is 60
    w.write(std::vector<uint8_t>(60));
    EXPECT_EQ(catch_error([&] { w.finish(); }).status(), Status::Internal);  // parts missing
  }  // abandoned: the old file stays, no temporary remains
  EXPECT_EQ(sftest::read_bytes(file_), before);
  EXPECT_TRUE(temporaries().empty());
  EXPECT_EQ(catch_error([&] {
              sff::Writer w(path("x.sf"), "opt", json::object(), json::object(),
                            {sff::dense_spec("t", DType::F32, {1}), sff::dense_spec("t", DType::F32, {1})});
            }).status(),
            Status::InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path("x.sf")));
  EXPECT_EQ(catch_error([&] { sff::s24_spec("w", DType::F16, 4, 6); }).status(), Status::UnsupportedShape);
}

TEST_F(SfFileTest, OpenReportsMissingFile) {
  const Error e = catch_error([&] { sff::File::open(path("absent.sf")); });
  EXPECT_EQ(e.status(), Status::Io);
  EXPECT_NE(std::string(e.what()).find("absent.sf"), std::string::npos);
}

}  // namespace
