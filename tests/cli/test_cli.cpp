// Runs the built `sparseflow` binary on good and malformed files and checks exit codes, output and
// the files it writes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "backend/backends.hpp"
#include "core/dtype.hpp"
#include "format/safetensors.hpp"
#include "sparse24/sparsegpt.hpp"

namespace fs = std::filesystem;
using namespace sf;

namespace {

struct Result {
  int rc = -1;
  std::string out;  // what was asked for: stdout, stderr or both
};

enum class Capture { Both, Stdout, Stderr };

// Single-quoted for /bin/sh: a ' inside becomes '\''.
std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q.append("'\\''");
    else
      q.push_back(c);
  }
  q.push_back('\'');
  return q;
}

Result run(const std::vector<std::string>& args, Capture what = Capture::Both) {
  std::string cmd = quote(SF_CLI);
  for (const auto& a : args) {
    cmd.push_back(' ');
    cmd.append(quote(a));
  }
  cmd += what == Capture::Both     ? " 2>&1"
         : what == Capture::Stdout ? " 2>/dev/null"
                                   : " 2>&1 >/dev/null";
  Result r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A named tensor with its own storage, for building test files.
struct Tensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

Tensor float_tensor(std::string name, DType t, std::vector<int64_t> shape,
                    const std::vector<float>& v) {
  Tensor x{std::move(name), t, std::move(shape), std::vector<uint8_t>(v.size() * dtype_size(t))};
  for (size_t i = 0; i < v.size(); ++i) store_from_float(x.bytes.data(), t, i, v[i]);
  return x;
}

Tensor random_tensor(std::string name, DType t, std::vector<int64_t> shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return float_tensor(std::move(name), t, std::move(shape), v);
}

Tensor raw_tensor(std::string name, DType t, std::vector<int64_t> shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint8_t> b(size_t(n) * dtype_size(t));
  std::mt19937 rng(seed);
  for (auto& x : b) x = uint8_t(rng());
  return {std::move(name), t, std::move(shape), std::move(b)};
}

void write_tensors(const std::string& path, const std::vector<Tensor>& ts,
                   const std::map<std::string, std::string>& meta = {}) {
  std::vector<st::TensorToWrite> w;
  for (const auto& t : ts) w.push_back({t.name, t.dtype, t.shape, t.bytes});
  st::write_file(path, w, meta);
}

std::vector<double> values(const st::File& f, const std::string& name) {
  const auto& t = f.get(name);
  const auto d = f.data(t);
  std::vector<double> v(size_t(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype == DType::F64) {
      std::memcpy(&v[i], d.data() + 8 * i, 8);
    } else {
      std::vector<uint8_t> e(d.begin() + long(i * dtype_size(t.dtype)),
                             d.begin() + long((i + 1) * dtype_size(t.dtype)));
      v[i] = load_as_float(e.data(), t.dtype, 0);
    }
  }
  return v;
}

// Checks that `after` is `before` pruned to 2:4 by magnitude along rows of length k: each group
// keeps at most 2 nonzeros, kept values are unchanged, and no dropped |w| exceeds a kept one.
void expect_magnitude_pruned(const std::vector<double>& before, const std::vector<double>& after,
                             int64_t k, const std::string& name) {
  ASSERT_EQ(before.size(), after.size()) << name;
  for (size_t g = 0; g < before.size(); g += 4) {
    int nonzero = 0;
    double min_kept = INFINITY, max_dropped = 0;
    for (size_t i = g; i < g + 4; ++i) {
      if (after[i] != 0) {
        ++nonzero;
        EXPECT_EQ(after[i], before[i]) << name << " element " << i;
        min_kept = std::min(min_kept, std::fabs(before[i]));
      } else {
        max_dropped = std::max(max_dropped, std::fabs(before[i]));
      }
    }
    EXPECT_LE(nonzero, 2) << name << " row " << g / size_t(k) << " group " << (g % size_t(k)) / 4;
    EXPECT_LE(max_dropped, min_kept) << name << " group at " << g;
  }
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("sf_cli_{}_{}", info->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A small checkpoint: prunable weights of every float dtype plus tensors prune must not touch.
  std::vector<Tensor> mixed_model() const {
    return {random_tensor("layer.0.fc1.weight", DType::F32, {8, 16}, 1),
            random_tensor("layer.0.fc1.bias", DType::F32, {8}, 2),
            random_tensor("layer.0.fc2.weight", DType::F16, {16, 8}, 3),
            random_tensor("layer.0.q.weight", DType::BF16, {6, 12}, 4),
            random_tensor("layer.0.k.weight", DType::F64, {4, 4}, 5),
            random_tensor("conv.weight", DType::F32, {2, 3, 4}, 6),
            random_tensor("scale", DType::F32, {}, 7),
            raw_tensor("position_ids", DType::I64, {4, 8}, 8),
            raw_tensor("codes", DType::I8, {4, 8}, 9)};
  }

  fs::path dir_;
};

}  // namespace

TEST_F(CliTest, VersionAndHelp) {
  auto r = run({"--version"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out, "sparseflow " SPARSEFLOW_VERSION_STRING "\n");

  r = run({"--help"});
  EXPECT_EQ(r.rc, 0);
  for (const char* sub : {"prune", "validate", "benchmark"})
    EXPECT_TRUE(contains(r.out, sub)) << r.out;

  for (const char* sub : {"prune", "validate", "benchmark"}) {
    r = run({sub, "--help"});
    EXPECT_EQ(r.rc, 0) << sub;
    EXPECT_TRUE(contains(r.out, "Usage")) << r.out;
    EXPECT_TRUE(contains(r.out, "--input") || contains(r.out, "--size")) << r.out;
  }
  EXPECT_TRUE(contains(run({"prune", "--help"}).out, "1-D F32 tensor"));  // the Wanda convention

  EXPECT_EQ(run({}).rc, 2);  // a subcommand is required
  EXPECT_EQ(run({"frobnicate"}).rc, 2);
  EXPECT_EQ(run({"prune", "--input", "x"}).rc, 2);  // --output missing
}

TEST_F(CliTest, PruneThenValidate) {
  const auto model = mixed_model();
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"origin", "test"}};
  write_tensors(path("in.safetensors"), model, meta);
  auto r = run({"prune", "--input", path("in.safetensors"), "--output", path("out.safetensors")});
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* name :
       {"layer.0.fc1.weight", "layer.0.fc2.weight", "layer.0.q.weight", "layer.0.k.weight"})
    EXPECT_TRUE(contains(r.out, name)) << r.out;
  EXPECT_TRUE(contains(r.out, "4 tensor(s) pruned")) << r.out;
  EXPECT_TRUE(contains(r.out, "50.0%")) << r.out;  // kept fraction of random (all-nonzero) weights

  const auto in = st::File::open(path("in.safetensors"));
  const auto out = st::File::open(path("out.safetensors"));
  EXPECT_EQ(out.metadata(), meta);
  ASSERT_EQ(out.tensors().size(), in.tensors().size());
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const auto& a = in.tensors()[i];
    const auto& b = out.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype) << a.name;
    EXPECT_EQ(a.shape, b.shape) << a.name;
    const auto da = in.data(a), db = out.data(b);
    const bool same = std::equal(da.begin(), da.end(), db.begin(), db.end());
    if (a.shape.size() == 2 && dtype_is_float(a.dtype)) {
      EXPECT_FALSE(same) << a.name << " was not pruned";
      expect_magnitude_pruned(values(in, a.name), values(out, b.name), a.shape[1], a.name);
    } else {
      EXPECT_TRUE(same) << a.name << " should be copied byte for byte";
    }
  }

  r = run({"validate", "--input", path("out.safetensors")});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "all 4 checked")) << r.out;

  // The input is never the output, and an existing output is replaced only with --force.
  const auto before = read_bytes(path("in.safetensors"));
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("in.safetensors"), "--force"});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "never writes into an input")) << r.out;
  EXPECT_EQ(read_bytes(path("in.safetensors")), before);
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("out.safetensors")});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "already exists; pass --force")) << r.out;
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("out.safetensors"), "--force"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(run({"validate", "--input", path("out.safetensors")}).rc, 0);
}

TEST_F(CliTest, ValidateReportsFirstViolation) {
  // Row 0 is 2:4; row 1 has 3 nonzeros in group 1 (columns 4-7).
  const std::vector<float> bad = {1, 0, 2, 0, 0, 0, 3, 4, 1, 1, 0, 0, 5, 0, 6, 7};
  const std::vector<float> good = {1, 0, 2, 0, 0, 3, 0, 4};
  write_tensors(path("w.safetensors"), {float_tensor("good.weight", DType::F16, {1, 8}, good),
                                        float_tensor("bad.weight", DType::F32, {2, 8}, bad),
                                        float_tensor("bias", DType::F32, {8}, good)});
  auto r = run({"validate", "--input", path("w.safetensors")});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "bad.weight")) << r.out;
  EXPECT_TRUE(contains(r.out, "row 1, group 1 (columns 4-7) has 3 nonzeros")) << r.out;
  EXPECT_TRUE(contains(r.out, "1 of 2 checked")) << r.out;

  r = run({"validate", "--input", path("w.safetensors"), "--json"}, Capture::Stdout);
  EXPECT_EQ(r.rc, 1);
  const auto j = nlohmann::json::parse(r.out);  // stdout is one JSON object
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["checked"], 2);
  EXPECT_EQ(j["sparse24"], 1);
  bool seen_bad = false;
  for (const auto& t : j["tensors"]) {
    if (t["name"] == "bad.weight") {
      seen_bad = true;
      EXPECT_EQ(t["status"], "violation");
      EXPECT_EQ(t["violation"]["row"], 1);
      EXPECT_EQ(t["violation"]["group"], 1);
      EXPECT_EQ(t["violation"]["nonzeros"], 3);
    }
    if (t["name"] == "good.weight") {
      EXPECT_EQ(t["status"], "2:4");
    }
    if (t["name"] == "bias") {
      EXPECT_EQ(t["status"], "skipped");
    }
  }
  EXPECT_TRUE(seen_bad);
}

TEST_F(CliTest, ValidateMalformedInputsExitTwo) {
  write_tensors(path("good.safetensors"), {random_tensor("w", DType::F32, {4, 8}, 1)});
  auto good = read_bytes(path("good.safetensors"));

  auto truncated = good;
  truncated.resize(good.size() - 10);
  write_bytes(path("truncated.safetensors"), truncated);

  auto header_of = [](const std::string& h, size_t data) {
    std::vector<uint8_t> b(8 + h.size() + data, 0);
    for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(uint64_t(h.size()) >> (8 * i));
    std::memcpy(b.data() + 8, h.data(), h.size());
    return b;
  };
  write_bytes(path("lying.safetensors"),
              header_of(R"({"w":{"dtype":"F32","shape":[4,8],"data_offsets":[0,128]}})", 64));
  write_bytes(path("wrong_size.safetensors"),
              header_of(R"({"w":{"dtype":"F16","shape":[4,8],"data_offsets":[0,128]}})", 128));
  write_bytes(path("dtype.safetensors"),
              header_of(R"({"w":{"dtype":"Q4_K","shape":[4,8],"data_offsets":[0,16]}})", 16));
  std::vector<uint8_t> garbage(1000);
  std::mt19937 rng(5);
  for (auto& b : garbage) b = uint8_t(rng());
  write_bytes(path("garbage.safetensors"), garbage);

  const std::pair<const char*, const char*> cases[] = {
      {"truncated.safetensors", "past the end"},
      {"lying.safetensors", "past the end"},
      {"wrong_size.safetensors", "needs 64 bytes"},
      {"dtype.safetensors", "unknown dtype \"Q4_K\""},
      {"garbage.safetensors", "garbage.safetensors"},
      {"missing.safetensors", "cannot open"},
  };
  for (const auto& [file, needle] : cases) {
    for (const char* cmd : {"validate", "prune"}) {
      std::vector<std::string> args = {cmd, "--input", path(file)};
      if (std::string(cmd) == "prune") args.insert(args.end(), {"--output", path("o.safetensors")});
      const auto r = run(args, Capture::Stderr);
      EXPECT_EQ(r.rc, 2) << cmd << " " << file << ": " << r.out;
      EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
      EXPECT_TRUE(contains(r.out, needle)) << file << ": " << r.out;
    }
  }
  EXPECT_FALSE(fs::exists(path("o.safetensors")));  // nothing written on failure
}

TEST_F(CliTest, PruneOnlySkipsAndErrors) {
  const std::vector<Tensor> model = {random_tensor("a.weight", DType::F32, {4, 8}, 1),
                                     random_tensor("b.weight", DType::F32, {4, 8}, 2),
                                     random_tensor("odd.weight", DType::F32, {4, 6}, 3)};
  write_tensors(path("in.safetensors"), model);
  const auto in = st::File::open(path("in.safetensors"));

  auto r = run(
      {"prune", "-i", path("in.safetensors"), "-o", path("out.safetensors"), "--only", "^a\\."});
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto out = st::File::open(path("out.safetensors"));
  expect_magnitude_pruned(values(in, "a.weight"), values(out, "a.weight"), 8, "a.weight");
  EXPECT_NE(values(in, "a.weight"), values(out, "a.weight"));
  for (const char* name : {"b.weight", "odd.weight"}) {
    const auto x = in.data(in.get(name)), y = out.data(out.get(name));
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << name;
  }
  EXPECT_EQ(run({"validate", "-i", path("out.safetensors")}).rc, 1);  // b is still dense

  // Without --only the K=6 tensor is skipped with a note; with --only naming it, an error.
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("all.safetensors")});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "odd.weight [4, 6]: last dimension 6 is not a multiple of 4"))
      << r.out;
  r = run({"validate", "-i", path("all.safetensors")});
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "skipped: last dimension 6")) << r.out;

  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--only", "odd"},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "error: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "odd.weight")) << r.out;
  EXPECT_TRUE(contains(r.out, "not a multiple of 4")) << r.out;

  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--only", "nomatch"},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "matches no")) << r.out;
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--only", "(["},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "not a valid regular expression")) << r.out;
  EXPECT_FALSE(fs::exists(path("x.safetensors")));
}

TEST_F(CliTest, WandaUsesActivationNorms) {
  // One group: magnitude keeps columns 2 and 3; with norms 10, 10, 1, 1 the scores are
  // 10, 20, 3, 4, so Wanda keeps columns 0 and 1.
  write_tensors(path("in.safetensors"), {float_tensor("w", DType::F32, {1, 4}, {1, 2, 3, 4}),
                                         float_tensor("v", DType::F32, {1, 4}, {1, 2, 3, 4})});
  write_tensors(path("norms.safetensors"), {float_tensor("w", DType::F32, {4}, {10, 10, 1, 1}),
                                            float_tensor("v", DType::F32, {4}, {1, 1, 1, 1})});
  auto r = run({"prune", "-i", path("in.safetensors"), "-o", path("out.safetensors"), "--method",
                "wanda", "--activation-norms", path("norms.safetensors")});
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto out = st::File::open(path("out.safetensors"));
  EXPECT_EQ(values(out, "w"), (std::vector<double>{1, 2, 0, 0}));
  EXPECT_EQ(values(out, "v"), (std::vector<double>{0, 0, 3, 4}));

  // A weight with no norm, a norm of the wrong length, and wanda without norms: clear errors.
  write_tensors(path("partial.safetensors"), {float_tensor("w", DType::F32, {4}, {1, 1, 1, 1})});
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method", "wanda",
           "--activation-norms", path("partial.safetensors")},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "has no tensor 'v'")) << r.out;
  EXPECT_TRUE(contains(r.out, "1-D F32 tensor of length 4")) << r.out;

  write_tensors(path("short.safetensors"), {float_tensor("w", DType::F32, {3}, {1, 1, 1}),
                                            float_tensor("v", DType::F32, {4}, {1, 1, 1, 1})});
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method", "wanda",
           "--activation-norms", path("short.safetensors")},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "F32 [3], expected F32 [4]")) << r.out;

  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method", "wanda"},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "--activation-norms")) << r.out;
  EXPECT_FALSE(fs::exists(path("x.safetensors")));
}

// SparseGPT from a Hessians file: the output is the library's result (in the weight's dtype; F64
// weights get its fp64 values exactly), and a missing or misshapen Hessian is a clear error.
TEST_F(CliTest, SparseGptUsesHessians) {
  const int64_t k = 8, n = 40;
  std::mt19937 rng(5);
  std::normal_distribution<double> nd;
  std::vector<float> x(size_t(n * k));
  for (int64_t r = 0; r < n; ++r) {
    const double common = nd(rng);  // correlated inputs, so the update has something to do
    for (int64_t j = 0; j < k; ++j) x[size_t(r * k + j)] = float(common + 0.5 * nd(rng));
  }
  s24::Hessian acc(k);
  acc.add(x.data(), n);
  const std::vector<double> h = acc.matrix();
  std::vector<float> hf(h.begin(), h.end());
  const Tensor w = random_tensor("w", DType::F32, {3, k}, 11),
               v = random_tensor("v", DType::F64, {2, k}, 12);
  write_tensors(path("in.safetensors"), {w, v});
  write_tensors(path("h.safetensors"), {float_tensor("w", DType::F32, {k, k}, hf),
                                        float_tensor("v", DType::F32, {k, k}, hf)});
  auto r = run({"prune", "-i", path("in.safetensors"), "-o", path("out.safetensors"), "--method",
                "sparsegpt", "--hessians", path("h.safetensors"), "--dampening", "0.02"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "rel. output error")) << r.out;
  const auto out = st::File::open(path("out.safetensors"));
  const auto in = st::File::open(path("in.safetensors"));
  s24::SparseGptOptions o;
  o.dampening = 0.02;
  for (const char* name : {"w", "v"}) {
    const auto vin = values(in, name);
    const std::vector<float> as_f32(vin.begin(), vin.end());
    const auto want = s24::sparsegpt_prune({as_f32.data(), DType::F32, int64_t(vin.size()) / k, k},
                                           std::vector<double>(hf.begin(), hf.end()), o);
    const auto got = values(out, name);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i], std::string(name) == "w" ? double(float(want.weight[i])) : want.weight[i])
          << name << " " << i;
  }

  write_tensors(path("partial.safetensors"), {float_tensor("w", DType::F32, {k, k}, hf)});
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method",
           "sparsegpt", "--hessians", path("partial.safetensors")},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "has no tensor 'v'")) << r.out;
  write_tensors(path("bad.safetensors"),
                {float_tensor("w", DType::F32, {k}, std::vector<float>(k, 1)),
                 float_tensor("v", DType::F32, {k, k}, hf)});
  r = run({"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method",
           "sparsegpt", "--hessians", path("bad.safetensors")},
          Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "expected F32 or F64 [8, 8]")) << r.out;
  r = run(
      {"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--method", "sparsegpt"},
      Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "--hessians")) << r.out;
  r = run(
      {"prune", "-i", path("in.safetensors"), "-o", path("x.safetensors"), "--dampening", "0.1"},
      Capture::Stderr);
  EXPECT_EQ(r.rc, 2);
  EXPECT_TRUE(contains(r.out, "--dampening is only used by --method sparsegpt")) << r.out;
  EXPECT_FALSE(fs::exists(path("x.safetensors")));
}

TEST_F(CliTest, BenchmarkArgumentsAndCpuJson) {
  for (const char* bad : {"4096", "0x4", "4096x4095", "ax4", "4x-4"}) {
    const auto r = run({"benchmark", "--size", bad}, Capture::Stderr);
    EXPECT_EQ(r.rc, 2) << bad;
    EXPECT_TRUE(contains(r.out, "--size")) << r.out;
  }
  EXPECT_EQ(run({"benchmark", "--size", "64x64", "--batch", "1,,2"}).rc, 2);
  EXPECT_EQ(run({"benchmark", "--size", "64x64", "--device", "tpu"}).rc, 2);

  auto r = run({"benchmark", "--size", "64x128", "--batch", "1,3", "--iters", "1", "--dtype",
                "fp32", "--json", path("b.json")});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "speedup")) << r.out;
  const auto j = nlohmann::json::parse(read_bytes(path("b.json")));
  EXPECT_NE(j["command"].get<std::string>().find("--size 64x128 --batch 1,3 --iterations 1"),
            std::string::npos);
  // A results file is an output like any other: kept unless --force.
  const auto kept = read_bytes(path("b.json"));
  r = run({"benchmark", "--size", "64x64", "--batch", "1", "--iterations", "1", "--json",
           path("b.json")});
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "already exists; pass --force")) << r.out;
  EXPECT_EQ(read_bytes(path("b.json")), kept);
  EXPECT_EQ(run({"benchmark", "--size", "64x64", "--batch", "1", "--iterations", "1", "--json",
                 path("b.json"), "--force"})
                .rc,
            0);
  EXPECT_NE(read_bytes(path("b.json")), kept);
  EXPECT_EQ(j["n"], 64);
  EXPECT_EQ(j["k"], 128);
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][0]["m"], 1);
  EXPECT_EQ(j["rows"][1]["m"], 3);
  for (const char* key : {"dense_ms", "sparse_ms", "speedup", "dense_gbps", "sparse_gbps",
                          "dense_gflops", "sparse_gflops", "rel_err"})
    EXPECT_TRUE(j["rows"][0].contains(key)) << key;
  EXPECT_LT(j["rows"][1]["rel_err"].get<double>(), 1e-4);

  r = run({"benchmark", "--size", "32x32", "--batch", "2", "--iters", "1", "--json", "-"},
          Capture::Stdout);
  ASSERT_EQ(r.rc, 0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["rows"][0]["m"], 2);  // stdout holds only the JSON
}

TEST_F(CliTest, BenchmarkCudaWithoutGpuFailsClearly) {
  const std::string why = backend::cuda_unavailable_reason();
  if (why.empty())
    GTEST_SKIP() << "a CUDA device is usable here; this test is for machines without one";
  const auto r = run({"benchmark", "--device", "cuda", "--size", "256x256"}, Capture::Stderr);
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out.rfind("error: --device cuda: ", 0), 0u) << r.out;
  EXPECT_TRUE(contains(r.out, why)) << r.out;
}
