// The torch.save() reader (format/torch_checkpoint.hpp) and its restricted unpickler against real
// torch fixtures (tests/data/torch/, made by scripts/make_torch_fixtures.py with torch 2.11): a
// micro OPT saved both ways, every dtype and strided views, malicious and damaged files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "format/pickle.hpp"
#include "format/safetensors.hpp"
#include "format/torch_checkpoint.hpp"
#include "model/convert.hpp"
#include "model/cpu_engine.hpp"
#include "model/weights.hpp"

using namespace std::string_literals;

namespace sf {
namespace {

namespace fs = std::filesystem;
const fs::path kDir = fs::path(SF_TEST_DATA_DIR) / "torch";
// What the malicious fixtures' payloads would create (scripts/make_torch_fixtures.py).
const fs::path kPwned = "/tmp/sparseflow_torch_fixture_pwned";

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f) << p;
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::span<const uint8_t> bytes_of(const model::Tensor& t) {
  return {static_cast<const uint8_t*>(t.data), size_t(t.numel()) * dtype_size(t.dtype)};
}
bool same_bytes(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// The Error a call throws; fails the test when it throws none or another kind.
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-sf::Error: " << e.what();
    return Error(Status::Internal, e.what());
  }
  ADD_FAILURE() << "did not throw";
  return Error(Status::Ok, "");
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("sf_torch_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Every tensor of both models, dense, bit for bit.
void expect_same_tensors(const model::Model& a, const model::Model& b) {
  ASSERT_EQ(a.dense_tensors().size(), b.dense_tensors().size());
  for (const auto& [name, t] : a.dense_tensors()) {
    const model::Tensor* u = b.find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_EQ(t.dtype, u->dtype) << name;
    EXPECT_EQ(t.shape, u->shape) << name;
    EXPECT_TRUE(same_bytes(bytes_of(t), bytes_of(*u))) << name << " differs";
  }
}

// ---- the reader on real torch files -----------------------------------------------------------

TEST(TorchCheckpoint, StateDictHoldsTheSafetensorsBytes) {
  const auto pt = pt::Checkpoint::open((kDir / "opt/model.pt").string());
  const auto st = st::File::open((kDir / "opt/model.safetensors").string());
  ASSERT_EQ(pt.tensors().size(), st.tensors().size() + 1);  // + lm_head.weight, which HF drops
  for (const auto& s : st.tensors()) {
    const pt::TensorInfo* t = pt.find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->dtype, s.dtype) << s.name;
    EXPECT_EQ(t->shape, s.shape) << s.name;
    EXPECT_FALSE(t->copied) << s.name << ": contiguous tensors are views into the file";
    EXPECT_TRUE(same_bytes(t->data, st.data(s))) << s.name;
  }
  // Tied: the same storage under two names.
  EXPECT_EQ(pt.find("lm_head.weight")->data.data(),
            pt.find("model.decoder.embed_tokens.weight")->data.data());
}

TEST(TorchCheckpoint, EveryDtypeAndStridedViewsMatchTorch) {
  const auto c = pt::Checkpoint::open((kDir / "mixed.pt").string());
  std::ifstream f(kDir / "mixed_expected.json");
  const auto expected = nlohmann::ordered_json::parse(f);  // keeps the file's order
  ASSERT_EQ(c.tensors().size(), expected.size());
  size_t i = 0;
  for (const auto& [name, e] : expected.items()) {
    const pt::TensorInfo& t = c.tensors()[i++];
    ASSERT_EQ(t.name, name) << "state-dict order is kept";
    EXPECT_EQ(dtype_name(t.dtype), e["dtype"].get<std::string>()) << name;
    EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(t.copied, !e["contiguous"].get<bool>()) << name;
    const auto values = e["values"].get<std::vector<double>>();
    ASSERT_EQ(size_t(t.numel()), values.size()) << name;
    ASSERT_EQ(t.data.size(), values.size() * dtype_size(t.dtype)) << name;
    for (size_t k = 0; k < values.size(); ++k) {
      double got = 0;
      const uint8_t* p = t.data.data() + k * dtype_size(t.dtype);
      switch (t.dtype) {
        case DType::F64:
          std::memcpy(&got, p, 8);
          break;
        case DType::F32:
        case DType::F16:
        case DType::BF16:
          got = load_as_float(t.data.data(), t.dtype, k);
          break;
        case DType::I64: {
          int64_t v;
          std::memcpy(&v, p, 8);
          got = double(v);
          break;
        }
        case DType::I32: {
          int32_t v;
          std::memcpy(&v, p, 4);
          got = v;
          break;
        }
        case DType::I16: {
          int16_t v;
          std::memcpy(&v, p, 2);
          got = v;
          break;
        }
        case DType::I8:
          got = int8_t(*p);
          break;
        case DType::U8:
        case DType::BOOL:
          got = *p;
          break;
      }
      EXPECT_EQ(got, values[k]) << name << "[" << k << "]";
    }
  }
}

// ---- through Model::open and convert ----------------------------------------------------------

TEST(TorchCheckpoint, BarePtConvertsBitIdenticalToTheSafetensorsRoute) {
  TempDir tmp("convert");
  for (const auto dt : {DType::F32, DType::F16}) {
    const auto from_pt = model::Model::open((kDir / "opt/model.pt").string());  // config beside it
    const auto from_st = model::Model::open((kDir / "opt").string());           // model.safetensors
    EXPECT_EQ(from_pt->source_format(), "hf");
    expect_same_tensors(*from_st, *from_pt);
    model::ConvertOptions co;
    co.dtype = dt;
    const std::string a = (tmp.path / "pt.sf").string(), b = (tmp.path / "st.sf").string();
    model::convert_to_sf(*from_pt, a, co);
    model::convert_to_sf(*from_st, b, co);
    const auto sa = model::Model::open(a), sb = model::Model::open(b);
    EXPECT_EQ(sa->dtype(), dt);
    expect_same_tensors(*sb, *sa);
  }
}

TEST(TorchCheckpoint, LogitsFromThePtMatchHuggingFace) {
  const auto m = model::Model::open((kDir / "opt/model.pt").string());
  std::ifstream f(kDir / "opt/expected.json");
  const auto e = nlohmann::json::parse(f);
  const auto ids = e["ids"].get<std::vector<int32_t>>();
  model::CpuEngine opt(*m);
  auto cache = opt.make_cache(int64_t(ids.size()));
  const auto logits = opt.forward(ids, cache, /*all_logits=*/true);
  std::vector<float> want;
  for (const auto& row : e["logits"])
    for (const auto& x : row) want.push_back(x.get<float>());
  ASSERT_EQ(logits.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(logits[i]) - want[i]) * (double(logits[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  // Same fp32 weights, fp32 arithmetic in another order: ~1e-6 (test_hf_fixtures.cpp says why).
  EXPECT_LT(std::sqrt(num / den), 1e-4);
}

TEST(TorchCheckpoint, HfDirectoryWithPytorchModelBinLoadsLikeSafetensors) {
  TempDir tmp("bin");
  fs::copy_file(kDir / "opt/config.json", tmp.path / "config.json");
  fs::copy_file(kDir / "opt/model.pt", tmp.path / "pytorch_model.bin");
  const auto from_bin = model::Model::open(tmp.path.string());
  const auto from_st = model::Model::open((kDir / "opt").string());
  expect_same_tensors(*from_st, *from_bin);
}

TEST(TorchCheckpoint, ShardedBinWithIndexMatchesSafetensorsInBf16) {
  const auto sharded = model::Model::open((kDir / "opt_sharded_bf16").string());
  model::OpenOptions o;
  o.dtype = DType::BF16;  // round to nearest even, as torch's .to(torch.bfloat16)
  const auto from_st = model::Model::open((kDir / "opt").string(), o);
  EXPECT_EQ(sharded->dtype(), DType::BF16);
  expect_same_tensors(*from_st, *sharded);
}

TEST(TorchCheckpoint, ShardMissingFromTheIndexIsNamed) {
  TempDir tmp("shard");
  for (const char* f :
       {"config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin"})
    fs::copy_file(kDir / "opt_sharded_bf16" / f, tmp.path / f);
  const Error e = error_of([&] { model::Model::open(tmp.path.string()); });
  EXPECT_EQ(e.status(), Status::NotFound);
  EXPECT_NE(std::string(e.what()).find("pytorch_model-00002-of-00002.bin"), std::string::npos)
      << e.what();
}

TEST(TorchCheckpoint, BarePtWithoutConfigSaysWhatToDo) {
  TempDir tmp("noconfig");
  fs::copy_file(kDir / "opt/model.pt", tmp.path / "model.pt");
  const std::string pt = (tmp.path / "model.pt").string();
  const Error e = error_of([&] { model::Model::open(pt); });
  EXPECT_EQ(e.status(), Status::NotFound);
  EXPECT_NE(std::string(e.what()).find("config.json next to it"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("--config"), std::string::npos) << e.what();
  model::OpenOptions o;
  o.config_path = (kDir / "opt/config.json").string();
  EXPECT_EQ(model::Model::open(pt, o)->config().hidden_size, 16);
}

// ---- refusals ---------------------------------------------------------------------------------

TEST(TorchCheckpoint, MaliciousPicklesAreRefusedAndNothingRuns) {
  fs::remove(kPwned);
  for (const auto& [file, global] : {std::pair{"evil_system.pt", "posix.system"},
                                     std::pair{"evil_eval.pt", "__builtin__.eval"}}) {
    const Error e = error_of([&] { pt::Checkpoint::open((kDir / file).string()); });
    EXPECT_EQ(e.status(), Status::Format) << file;
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::string("global '") + global + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("plain state dicts of tensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("torch.save(model.state_dict(), path)"), std::string::npos) << msg;
    // Through the model loader too, as `sparseflow convert --input evil.pt` would.
    TempDir tmp("evil");
    fs::copy_file(kDir / "opt/config.json", tmp.path / "config.json");
    fs::copy_file(kDir / file, tmp.path / "model.pt");
    EXPECT_EQ(error_of([&] { model::Model::open((tmp.path / "model.pt").string()); }).status(),
              Status::Format);
  }
  EXPECT_FALSE(fs::exists(kPwned)) << "a pickled payload ran";
}

TEST(TorchCheckpoint, DamagedAndUnsupportedFilesAreFormatErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"legacy.pt", "legacy checkpoint format"},
      {"deflated.pt", "compressed (deflate)"},
      {"short_storage.pt", "should hold 4 F32 elements, but entry 'tiny/data/0' has 8 bytes"},
      {"big_endian.pt", "little-endian checkpoints only"},
      {"missing_storage.pt", "no entry 'tiny/data/0'"},
      {"bad_extent.pt", "reaches element 999 of a storage of 4 elements"},
      {"nested.pt", "entry 'model' is a dict, not a tensor"},
  };
  for (const auto& [file, needle] : cases) {
    const Error e = error_of([&] { pt::Checkpoint::open((kDir / file).string()); });
    EXPECT_EQ(e.status(), Status::Format) << file;
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << file << ": " << e.what();
  }
}

TEST(TorchCheckpoint, EveryTruncationIsAFormatError) {
  for (const char* file : {"tiny.pt", "mixed.pt"}) {
    const auto bytes = read_bytes(kDir / file);
    for (size_t n = 0; n < bytes.size(); ++n) {
      // A copy of exactly n bytes, so that a read past the end is one past a heap block.
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + ptrdiff_t(n));
      const Error e = error_of([&] { pt::Checkpoint::from_memory(prefix, file); });
      ASSERT_EQ(e.status(), Status::Format) << file << " cut to " << n << " bytes: " << e.what();
    }
  }
}

TEST(TorchCheckpoint, FlippedBytesNeverCrash) {
  const auto bytes = read_bytes(kDir / "tiny.pt");
  size_t refused = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    for (const uint8_t flip : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
      std::vector<uint8_t> b = bytes;
      b[i] ^= flip;
      try {
        const auto c = pt::Checkpoint::from_memory(b, "flipped");
        for (const auto& t : c.tensors())
          ASSERT_EQ(t.data.size(), size_t(t.numel()) * dtype_size(t.dtype));
      } catch (const Error& e) {
        ASSERT_TRUE(e.status() == Status::Format) << e.what();
        ++refused;
      }
    }
  EXPECT_GT(refused, 0u);
}

// ---- the unpickler on hand-written opcodes ----------------------------------------------------

pickle::Rules plain_rules() {
  pickle::Rules r;
  r.allow_global = [](const pickle::Global&) { return false; };
  return r;
}
Error pickle_error(const std::string& bytes, const pickle::Rules& r = plain_rules()) {
  return error_of([&] {
    pickle::load({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, r, "test");
  });
}

TEST(Pickle, ReadsPlainData) {
  // {'a': [1, -2, 300, 2**40], 'b': (True, None, 1.5)}, protocol 2 as Python writes it.
  const std::string p =
      "\x80\x02}q\x00(X\x01\x00\x00\x00"
      "aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01\x8a\x06\x00\x00\x00\x00\x00\x01"
      "eX\x01\x00\x00\x00"
      "bq\x03\x88NG?\xf8\x00\x00\x00\x00\x00\x00\x87q\x04u."s;
  pickle::Rules r = plain_rules();
  const auto v = pickle::load({reinterpret_cast<const uint8_t*>(p.data()), p.size()}, r, "t");
  const auto* d = v->as<pickle::Dict>();
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(d->items.size(), 2u);
  const auto& list = d->items[0].second->as<pickle::List>()->items;
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(*list[1]->as<int64_t>(), -2);
  EXPECT_EQ(*list[2]->as<int64_t>(), 300);
  EXPECT_EQ(*list[3]->as<int64_t>(), int64_t(1) << 40);
  const auto& tup = d->items[1].second->as<pickle::Tuple>()->items;
  EXPECT_EQ(*tup[0]->as<bool>(), true);
  EXPECT_EQ(*tup[2]->as<double>(), 1.5);
}

TEST(Pickle, RefusesWhatAStateDictNeverHolds) {
  const std::pair<std::string, const char*> cases[] = {
      {"\x80\x02"
       "cbuiltins\x0a"
       "exec\x0a"s,
       "global 'builtins.exec'"},
      {"\x80\x04\x8c\x02os\x8c\x06system\x93"s, "global 'os.system'"},
      {"\x80\x02(i__main__\x0aX\x0a."s, "opcode INST"},
      {"\x80\x02(o."s, "opcode OBJ"},
      {"\x80\x02K\x01Q."s, "persistent id"},
      {"\x80\x02\xff"s, "no pickle opcode"},
      {"\x80\x02]q\x00h\x00"
       "a."s,
       "inside itself"},
      {"\x80\x02h\x05."s, "read before it is written"},
      {"\x80\x02]\x94]\x94h\x00h\x01"
       "ah\x01]a."s,
       "already inside another one"},
      {"\x80\x02K\x01K\x02s."s, "needs 3 value(s)"},
      {"\x80\x02X\xff\x00\x00\x00"
       "ab"s,
       "truncated"},
      {"\x80\x02]"s, "truncated"},
      {"\x80\x02X\x02\x00\x00\x00\xc3(."s, "not valid UTF-8"},
      {"\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01."s, "9-byte integer"},
  };
  for (const auto& [bytes, needle] : cases) {
    const Error e = pickle_error(bytes);
    EXPECT_EQ(e.status(), Status::Format);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << needle << " vs " << e.what();
  }
  // Nesting is bounded, so a hostile pickle cannot build a tree deep enough to overflow the stack
  // of the code that walks or frees it.
  std::string deep = "\x80\x02"s;
  for (int i = 0; i < 100; ++i) deep += "]";
  for (int i = 0; i < 99; ++i) deep += "a";
  EXPECT_NE(std::string(pickle_error(deep + ".").what()).find("nest deeper"), std::string::npos);
}

}  // namespace
}  // namespace sf
