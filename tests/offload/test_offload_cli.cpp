// The CLI side of neuron-level offloading, run through the built `sparseflow` binary: synth
// --activation-profile
// (--neuron-major), profile, calibrate, convert --neuron-major, --plan, and the errors a user sees
// (offload flags without --gpu-memory, --gpu-memory on the CPU, a budget below the minimum).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "format/sf_file.hpp"
#include "sf_test_util.hpp"

namespace {

struct CliRun {
  int rc = -1;
  std::string out;  // stdout and stderr
};

CliRun run(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(SF_CLI) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class OffloadCliTest : public sftest::ScratchTest {
 protected:
  std::string calib() {
    const std::string p = path("calib.txt");
    std::ifstream in(std::string(SF_TEST_DATA_DIR) + "/tokenizer/corpus.txt");
    std::ofstream out(p);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (int i = 0; i < 3; ++i) out << text;
    return p;
  }
};

TEST_F(OffloadCliTest, SynthProfileCalibrateConvertPlan) {
  const std::string m = path("m.sf"), c = calib();
  CliRun r = run("synth --arch tiny --format sf --activation-profile sparsity=0.95 -o " + m);
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run("profile -m " + m + " --calibration " + c);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("jaccard"), std::string::npos) << r.out;
  r = run("calibrate -m " + m + " --calibration " + c + " --rank 16");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("recall"), std::string::npos) << r.out;
  r = run("convert -i " + m + " -o " + path("nm.sf") + " --neuron-major");
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto f = sf::sff::File::open(path("nm.sf"));
  EXPECT_NE(f.find("model.decoder.layers.0.ffn_neurons"), nullptr);
  EXPECT_NE(f.find("profile.layers.1.firing_rate"), nullptr);
  EXPECT_NE(f.find("predictor.layers.1.v"), nullptr);
  r = run("generate -m " + path("nm.sf") + " --ids 2,5,7 -n 3 --greedy");
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run("generate -m " + path("nm.sf") + " --ids 2,5,7 -n 3 --gpu-memory 1GiB --plan");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("whole model fits"), std::string::npos) << r.out;
  r = run("perplexity -m " + path("nm.sf") +
          " --ids 2,5,7,9,11 --gpu-memory 0.9 --gpu-cache-ratio 0.5 --plan");
  EXPECT_EQ(r.rc, 2) << r.out;  // 0.9 of a tiny model cannot hold its fixed part + workspace
  EXPECT_NE(r.out.find("raise it to at least"), std::string::npos) << r.out;
}

TEST_F(OffloadCliTest, ErrorsSayWhatToDo) {
  const std::string m = path("m.sf");
  ASSERT_EQ(run("synth --arch tiny --format sf -o " + m).rc, 0);
  CliRun r = run("generate -m " + m + " --ids 2,5 -n 2 --stats");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("add --gpu-memory"), std::string::npos) << r.out;
  r = run("generate -m " + m + " --ids 2,5 -n 2 --gpu-memory 2GiB");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--device cuda"), std::string::npos) << r.out;
  r = run("generate -m " + m + " --ids 2,5 -n 2 --gpu-memory lots --plan");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("expected a size"), std::string::npos) << r.out;
  r = run("generate -m " + m +
          " --ids 2,5 -n 2 --gpu-memory 2GiB --offload-policy teleport --plan");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("fetch, cpu, auto or stream"), std::string::npos) << r.out;
  r = run("synth --arch tiny --neuron-major -o " + path("x"));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--format sf"), std::string::npos) << r.out;
  r = run("synth --arch tiny --format sf --activation-profile hot=0.9:0.1 -o " + path("y.sf"));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("hot="), std::string::npos) << r.out;
  r = run("convert -i " + m + " -o " + path("z.sf") + " --neuron-major --sparsity 2:4");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("ffn_neurons_s24"), std::string::npos) << r.out;
  r = run("calibrate -m " + m + " --calibration " + calib() + " --device tpu --no-write");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("expected cpu, cuda or auto"), std::string::npos) << r.out;
  // --device cuda: collected on the GPU where there is one, else an error that names the way out.
  r = run("calibrate -m " + m + " --calibration " + calib() + " --device cuda --rank 8 --no-write");
  if (r.rc == 0) {
    EXPECT_NE(r.out.find("on the GPU"), std::string::npos) << r.out;
  } else {
    EXPECT_NE(r.out.find("--device cpu"), std::string::npos) << r.out;
  }
  r = run("profile -m " + m + " --calibration " + path("missing.txt"));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("cannot open --calibration file"), std::string::npos) << r.out;
  r = run("profile -m " + m + " --calibration " + calib() + " --device tpu --no-write");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("expected cpu, cuda or auto"), std::string::npos) << r.out;
  r = run("calibrate -m " + m + " --calibration " + calib() +
          " --with-profile --layers 0 --rank 8 --device cpu");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("drop --layers"), std::string::npos) << r.out;
}

// calibrate --with-profile: the predictors and the profile in one rewrite, the profile equal to
// what `profile` measures on the same tokens (same passes, same counting).
TEST_F(OffloadCliTest, CalibrateWithProfileStoresTheProfile) {
  const std::string m = path("m.sf"), p = path("p.sf"), c = calib();
  ASSERT_EQ(run("synth --arch tiny --format sf --activation-profile sparsity=0.9 -o " + m).rc, 0);
  std::filesystem::copy_file(m, p);
  CliRun r =
      run("calibrate -m " + m + " --calibration " + c + " --rank 8 --device cpu --with-profile");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("profile.layers.N.firing_rate"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("activation profile:"), std::string::npos) << r.out;
  r = run("profile -m " + p + " --calibration " + c + " --tokens 1024 --device cpu");
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto a = sf::sff::File::open(m), b = sf::sff::File::open(p);
  ASSERT_NE(a.find("predictor.layers.0.u"), nullptr);
  for (const char* name : {"profile.layers.0.firing_rate", "profile.layers.1.firing_rate"}) {
    const auto* ea = a.find(name);
    const auto* eb = b.find(name);
    ASSERT_NE(ea, nullptr) << name;
    ASSERT_NE(eb, nullptr) << name;
    const auto da = a.data(ea->parts[0]), db = b.data(eb->parts[0]);
    ASSERT_EQ(da.size(), db.size());
    EXPECT_EQ(std::memcmp(da.data(), db.data(), da.size()), 0) << name;
  }
}

}  // namespace
