// The audit's arithmetic against hand-computed cases. Every throughput figure below is synthetic,
// chosen so that the expected results can be worked out on paper (shown beside each check); none
// is a measurement.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>

#include "audit/audit.hpp"
#include "audit/measurements.hpp"
#include "core/error.hpp"

using namespace sf::audit;
using nlohmann::json;

TEST(AuditArithmetic, SecondsAndRequestsPerGpu) {
  // 128 / 12800 + 256 / 256 = 0.01 + 1 = 1.01 s
  EXPECT_DOUBLE_EQ(gpu_seconds_per_request(128, 256, 12800, 256), 1.01);
  EXPECT_DOUBLE_EQ(requests_per_second_per_gpu(128, 256, 12800, 256), 1.0 / 1.01);
  EXPECT_DOUBLE_EQ(gpu_seconds_per_request(0, 100, 1, 50), 2.0);
  EXPECT_THROW(gpu_seconds_per_request(1, 1, 0, 10), sf::Error);
  EXPECT_THROW(gpu_seconds_per_request(0, 0, 10, 10), sf::Error);
}

TEST(AuditArithmetic, GpusNeededIsACeilingThatToleratesRounding) {
  EXPECT_EQ(gpus_needed(1000, 125), 8);
  EXPECT_EQ(gpus_needed(1000, 1000.0 / 8.0), 8);
  EXPECT_EQ(gpus_needed(1000, 1000.0 / 3.0), 3);  // 1000 / 333.33... rounds to 3.0000000000000004
  EXPECT_EQ(gpus_needed(1000, 124.9), 9);         // 8.006 -> 9
  EXPECT_EQ(gpus_needed(0.5, 10), 1);             // a fraction of a GPU is still one GPU
  EXPECT_THROW(gpus_needed(0, 10), sf::Error);
  EXPECT_THROW(gpus_needed(10, 0), sf::Error);
}

TEST(AuditArithmetic, YearlyCostEnergyCo2) {
  EXPECT_DOUBLE_EQ(yearly_cost(8, 2.5), 175200.0);    // 8 x 2.5 x 8760
  EXPECT_DOUBLE_EQ(yearly_kwh(8, 700), 49056.0);      // 8 x 700 W x 8760 h / 1000
  EXPECT_DOUBLE_EQ(tonnes_co2(49056, 400), 19.6224);  // 49056 kWh x 400 g / 1e6
}

TEST(AuditModels, PublishedShapesAndBytes) {
  const ModelShape* opt = find_model("facebook/OPT-6.7B");
  ASSERT_NE(opt, nullptr);
  EXPECT_EQ(opt->hidden, 4096);
  EXPECT_EQ(opt->ffn, 16384);
  // 32 x (4 x 4096^2 + 2 x 4096 x 16384) + 50272 x 4096 = 6,648,365,056 parameters, x 2 bytes:
  // DESIGN.md's "13.3 GB".
  EXPECT_DOUBLE_EQ(weight_bytes_fp16(*opt, false), 13296730112.0);
  // linear 6,442,450,944 x 0.5625 + 205,914,112 = 3,829,792,768 -> x 2
  EXPECT_DOUBLE_EQ(weight_bytes_fp16(*opt, true), 7659585536.0);
  EXPECT_DOUBLE_EQ(kv_bytes_per_sequence(*opt, 384), 201326592.0);  // 2 x 32 x 4096 x 2 B x 384

  const ModelShape* llama = find_model("llama-7b");
  ASSERT_NE(llama, nullptr);
  // 32 x (4 x 4096^2 + 3 x 11008 x 4096) + 2 x 32000 x 4096 = 6,738,149,376: the published 6.7B
  EXPECT_DOUBLE_EQ(weight_bytes_fp16(*llama, false), 2.0 * 6738149376.0);
  const auto l = decoder_linears(*llama);
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[1].n, 11008);
  EXPECT_EQ(l[1].k, 4096);
  EXPECT_EQ(l[1].per_layer, 2);
  EXPECT_EQ(find_model("gpt-5"), nullptr);
}

TEST(AuditGpus, DatasheetMatching) {
  ASSERT_NE(find_gpu("NVIDIA H100 80GB HBM3"), nullptr);
  EXPECT_EQ(find_gpu("NVIDIA H100 80GB HBM3")->tdp_watts, 700);
  EXPECT_EQ(find_gpu("NVIDIA H100 PCIe")->tdp_watts, 350);
  EXPECT_EQ(find_gpu("NVIDIA H200")->memory_gb, 141);
  EXPECT_EQ(find_gpu("NVIDIA H200 NVL")->tdp_watts, 600);
  EXPECT_EQ(find_gpu("NVIDIA A100-SXM4-80GB")->tdp_watts, 400);
  EXPECT_EQ(find_gpu("Tesla T4"), nullptr);
}

namespace {

Measurements model_measurements() {
  const json doc = json::array({
      {{"gpu", "NVIDIA H100 80GB HBM3"},
       {"model", "opt-6.7b"},
       {"sparsity", "dense"},
       {"date", "test"},
       {"command", "synthetic"},
       {"runs", json::array({{{"batch", 1},
                              {"prompt_tokens", 128},
                              {"new_tokens", 256},
                              {"prefill_tokens_per_s", 10000.0},
                              {"decode_tokens_per_s", 100.0}},
                             {{"batch", 8},
                              {"prompt_tokens", 128},
                              {"new_tokens", 256},
                              {"prefill_tokens_per_s", 12000.0},
                              {"decode_tokens_per_s", 640.0}}})}},
      {{"gpu", "NVIDIA H100 80GB HBM3"},
       {"model", "opt-6.7b"},
       {"sparsity", "2:4"},
       {"runs", json::array({{{"batch", 8},
                              {"prompt_tokens", 128},
                              {"new_tokens", 256},
                              {"prefill_tokens_per_s", 16000.0},
                              {"decode_tokens_per_s", 1024.0}}})}},
  });
  Measurements m;
  parse_measurements(doc, "test.json", false, m);
  return m;
}

bool has_source(const Report& r, const std::string& what_part, const std::string& source_part) {
  for (const auto& a : r.assumptions)
    if (a.what.find(what_part) != std::string::npos &&
        a.source.find(source_part) != std::string::npos)
      return true;
  return false;
}

}  // namespace

TEST(AuditRun, FromModelBenchmarks) {
  Request req;
  req.qps = 10;
  req.price_per_gpu_hour = 2.0;
  req.grid_g_per_kwh = 400;
  const Report r = run_audit(req, *find_model("opt-6.7b"), model_measurements());
  EXPECT_FALSE(r.linear_layer_bound);
  EXPECT_EQ(r.gpu, "NVIDIA H100 80GB HBM3");
  // Dense at batch 8 (the best decode rate; KV for 331 sequences fits): 128/12000 + 256/640 =
  // 0.41067 s per request -> 2.435 req/s per GPU -> ceil(10 / 2.435) = ceil(4.107) = 5 GPUs.
  EXPECT_EQ(r.dense.batch, 8);
  EXPECT_DOUBLE_EQ(r.dense.rps_per_gpu, 1.0 / (128.0 / 12000 + 256.0 / 640));
  EXPECT_EQ(r.dense.gpus, 5);
  // 2:4: 128/16000 + 256/1024 = 0.258 s -> ceil(2.58) = 3 GPUs.
  EXPECT_EQ(r.sparse.gpus, 3);
  EXPECT_DOUBLE_EQ(*r.dense.cost_per_year, 87600.0);   // 5 x 2.0 x 8760
  EXPECT_DOUBLE_EQ(*r.sparse.cost_per_year, 52560.0);  // 3 x 2.0 x 8760
  // Power defaults to the H100 SXM's 700 W TDP: 5 x 700 x 8.76 = 30660 kWh; x 400 g = 12.264 t.
  EXPECT_DOUBLE_EQ(*r.dense.kwh_per_year, 30660.0);
  EXPECT_NEAR(*r.dense.tonnes_co2_per_year, 12.264, 1e-9);
  EXPECT_NEAR(*r.sparse.tonnes_co2_per_year, 7.3584, 1e-9);
  EXPECT_TRUE(has_source(r, "power", "H100 Tensor Core GPU datasheet"));
  EXPECT_TRUE(has_source(r, "price", "user flag --price-per-gpu-hour"));
  EXPECT_TRUE(has_source(r, "tokens per request", "default of sparseflow audit"));
  EXPECT_TRUE(has_source(r, "model shape", "OPT"));
  EXPECT_TRUE(r.not_computed.empty());
  ASSERT_EQ(r.dense.measured_by.size(), 1u);
  EXPECT_NE(r.dense.measured_by[0].find("synthetic"), std::string::npos);
}

namespace {

std::string audit_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const sf::Error& e) {
    EXPECT_EQ(e.status(), sf::Status::InvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an sf::Error";
  return "";
}

}  // namespace

// --qps 1e21 used to print "GPUs needed 1 1": ceil(1e20) does not fit the int64 it was cast to. A
// count past 2^53, an input that is not finite, or a product that overflows is an error.
TEST(AuditArithmetic, HugeOrNonFiniteInputsAreErrorsNeverWrappedNumbers) {
  EXPECT_NE(
      audit_error([] { gpus_needed(1e21, 10); }).find("more than the 9007199254740992 (2^53)"),
      std::string::npos);
  EXPECT_EQ(gpus_needed(double(kMaxGpus), 1), kMaxGpus);  // the largest count still answers
  EXPECT_NE(audit_error([] { gpus_needed(INFINITY, 10); }).find("finite"), std::string::npos);
  EXPECT_NE(audit_error([] { gpus_needed(NAN, 10); }).find("finite"), std::string::npos);
  EXPECT_NE(audit_error([] { gpus_needed(10, INFINITY); }).find("finite"), std::string::npos);
  EXPECT_NE(audit_error([] { gpu_seconds_per_request(1e308, 1e308, 1e-300, 1); }).find("double"),
            std::string::npos);
  EXPECT_NE(audit_error([] { gpu_seconds_per_request(NAN, 1, 1, 1); }).find("tokens"),
            std::string::npos);
  EXPECT_NE(audit_error([] { yearly_cost(kMaxGpus, 1e300); }).find("yearly cost is larger"),
            std::string::npos);
  EXPECT_NE(audit_error([] { yearly_cost(1, -2); }).find("--price-per-gpu-hour must be"),
            std::string::npos);
  EXPECT_NE(audit_error([] { yearly_kwh(1, NAN); }).find("--power-watts must be"),
            std::string::npos);
  EXPECT_NE(audit_error([] { tonnes_co2(1e308, 1e308); }).find("yearly CO2 is larger"),
            std::string::npos);

  Request req;
  req.qps = 1e21;
  EXPECT_NE(audit_error([&] {
              run_audit(req, *find_model("opt-6.7b"), model_measurements());
            }).find("2^53"),
            std::string::npos);
  for (auto set : std::vector<std::function<void(Request&)>>{
           [](Request& r) { r.qps = INFINITY; }, [](Request& r) { r.qps = NAN; },
           [](Request& r) { r.tokens_in = INFINITY; }, [](Request& r) { r.tokens_out = -1; },
           [](Request& r) { r.price_per_gpu_hour = NAN; }, [](Request& r) { r.power_watts = 0; },
           [](Request& r) { r.grid_g_per_kwh = INFINITY; }, [](Request& r) { r.batch = -4; }}) {
    Request q;
    q.qps = 10;
    set(q);
    audit_error([&] { run_audit(q, *find_model("opt-6.7b"), model_measurements()); });
  }
  // A user's config.json can say anything; sizes outside any real model are refused by name.
  ModelShape bad = *find_model("opt-6.7b");
  bad.layers = -3;
  req.qps = 10;
  EXPECT_NE(audit_error([&] {
              run_audit(req, bad, model_measurements());
            }).find("the number of layers is -3"),
            std::string::npos);
}

TEST(AuditRun, NoPriceNoGridMeansNotComputedNotInvented) {
  Request req;
  req.qps = 10;
  const Report r = run_audit(req, *find_model("opt-6.7b"), model_measurements());
  EXPECT_FALSE(r.dense.cost_per_year.has_value());
  EXPECT_FALSE(r.dense.tonnes_co2_per_year.has_value());
  EXPECT_TRUE(r.dense.kwh_per_year.has_value());  // the TDP has a named source
  ASSERT_EQ(r.not_computed.size(), 2u);
  EXPECT_NE(r.not_computed[0].find("--price-per-gpu-hour"), std::string::npos);
  EXPECT_NE(r.not_computed[1].find("--grid-gco2-per-kwh"), std::string::npos);
}

TEST(AuditRun, BatchWithoutASparseMeasurementAsksForIt) {
  Request req;
  req.qps = 10;
  req.batch = 1;  // dense has batch 1, 2:4 does not, and there are no GEMM timings
  try {
    run_audit(req, *find_model("opt-6.7b"), model_measurements());
    FAIL() << "expected sf::Error(NotFound)";
  } catch (const sf::Error& e) {
    EXPECT_EQ(e.status(), sf::Status::NotFound);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model benchmark: opt-6.7b 2:4 on NVIDIA H100 80GB HBM3"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("sparseflow benchmark --device cuda --model opt-6.7b-24.sf"),
              std::string::npos)
        << msg;
  }
}

TEST(AuditRun, SeedExampleWithoutMeasurementsNamesWhatItNeeds) {
  Request req;
  req.qps = 1000;
  try {
    run_audit(req, *find_model("llama-7b"), Measurements{});
    FAIL() << "expected sf::Error(NotFound)";
  } catch (const sf::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no measured throughput for llama-7b"), std::string::npos) << msg;
    // The engine runs Llama models, so the model benchmark is the first way it names.
    EXPECT_NE(msg.find("sparseflow benchmark --device cuda --model llama-7b.sf"), std::string::npos)
        << msg;
    for (const char* size : {"--size 4096x4096", "--size 11008x4096", "--size 4096x11008"})
      EXPECT_NE(msg.find(size), std::string::npos) << size << "\n" << msg;
    EXPECT_NE(msg.find("--from-benchmark gemm2.json"), std::string::npos) << msg;
  }
}

// Grouped-query models keep kv_heads heads of keys and values: Llama 3 8B's cache per token is a
// quarter of Llama 2 7B's (8 of 32 heads), and its k/v products are [1024, 4096].
TEST(AuditShapes, GroupedQueryModelsCountTheirKvHeads) {
  const ModelShape& l2 = *find_model("llama-2-7b");
  const ModelShape& l3 = *find_model("llama-3-8b");
  EXPECT_DOUBLE_EQ(kv_bytes_per_sequence(l2, 1), 2.0 * 32 * 4096 * 2);
  EXPECT_DOUBLE_EQ(kv_bytes_per_sequence(l3, 1), kv_bytes_per_sequence(l2, 1) / 4);
  bool kv = false;
  for (const auto& l : decoder_linears(l3)) kv |= l.n == 1024 && l.k == 4096 && l.per_layer == 2;
  EXPECT_TRUE(kv);
  EXPECT_NE(find_model("mistral-7b"), nullptr);
  EXPECT_NE(find_model("qwen2-7b"), nullptr);
}

namespace {

// GEMM timings for llama-7b's three shapes at M = 1 and 2048 on an H200 (synthetic).
Measurements llama_gemms() {
  auto shape = [](int n, int k, double d1, double s1, double d2048, double s2048) {
    return json{
        {"n", n},
        {"k", k},
        {"rows",
         json::array({{{"m", 1}, {"dense_ms", d1}, {"sparseflow_ms", s1}, {"cusparselt_ms", 9.0}},
                      {{"m", 2048}, {"dense_ms", d2048}, {"sparseflow_ms", s2048}}})}};
  };
  const json doc = {
      {"gpu", "NVIDIA H200"},
      {"results", json::array({shape(4096, 4096, 0.02, 0.015, 0.3, 0.2),
                               shape(11008, 4096, 0.05, 0.03, 0.8, 0.5)})},
      {"cases",
       json::array(
           {{{"size", "4096x11008"},
             {"rows", json::array({{{"m", 1}, {"dense_ms", 0.05}, {"sparse_ms", 0.03}},
                                   {{"m", 2048}, {"dense_ms", 0.8}, {"sparse_ms", 0.5}}})}}})}};
  Measurements m;
  parse_measurements(doc, "gemm.json", false, m);
  return m;
}

}  // namespace

TEST(AuditRun, GemmBoundForLlama) {
  const Measurements meas = llama_gemms();
  ASSERT_EQ(meas.gemms.size(), 3u);
  Request req;
  req.qps = 10;
  const Report r = run_audit(req, *find_model("llama-7b"), meas);
  EXPECT_TRUE(r.linear_layer_bound);
  // Decode M: KV for 384 tokens fits 633 sequences beside 13.48 GB of weights in 141 GB, so
  // M = 2048 is out and M = 1 is used.
  EXPECT_EQ(r.dense.batch, 1);
  // Dense decode step 32 x (4 x 0.02 + 2 x 0.05 + 0.05) = 7.36 ms -> 1 / 0.00736 tokens/s.
  EXPECT_NEAR(r.dense.decode_tps, 1.0 / 0.00736, 1e-9);
  // Dense prefill at M = 2048: 32 x (4 x 0.3 + 2 x 0.8 + 0.8) = 115.2 ms -> 2048 / 0.1152.
  EXPECT_NEAR(r.dense.prefill_tps, 2048 / 0.1152, 1e-6);
  // 128 / 17777.8 + 256 / 135.87 = 1.89136 s -> ceil(18.91) = 19 GPUs (at least).
  EXPECT_EQ(r.dense.gpus, 19);
  // 2:4: decode 32 x 0.15 = 4.8 ms, prefill 32 x 2.3 = 73.6 ms:
  // 128 / 27826.1 + 256 / 208.33 = 1.2334 s -> ceil(12.33) = 13.
  EXPECT_NEAR(r.sparse.decode_tps, 1.0 / 0.0048, 1e-9);
  EXPECT_EQ(r.sparse.gpus, 13);
  EXPECT_TRUE(has_source(r, "throughput model", "upper bound from measured GEMMs only"));
  EXPECT_TRUE(has_source(r, "serving batch", "141 GB"));
}

TEST(AuditRun, GpuFilter) {
  Request req;
  req.qps = 10;
  req.gpu = "A100";
  EXPECT_THROW(run_audit(req, *find_model("llama-7b"), llama_gemms()), sf::Error);
  req.gpu = "h200";
  EXPECT_EQ(run_audit(req, *find_model("llama-7b"), llama_gemms()).gpu, "NVIDIA H200");
}

TEST(AuditParse, MalformedDocumentsSayWhatIsMissing) {
  Measurements m;
  auto msg = [&](const json& doc, bool require) {
    try {
      parse_measurements(doc, "f.json", require, m);
    } catch (const sf::Error& e) {
      EXPECT_EQ(e.status(), sf::Status::Format);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg({{"rows", json::array({{{"m", 1}, {"dense_ms", 1}}})}, {"n", 8}, {"k", 8}}, false)
                .find("no \"gpu\""),
            std::string::npos);
  EXPECT_NE(msg({{"gpu", "X"}, {"rows", json::array({{{"m", 1}, {"dense_ms", 1}}})}}, false)
                .find("no GEMM shape"),
            std::string::npos);
  EXPECT_NE(msg({{"gpu", "X"}, {"size", "4096by4096"}, {"rows", json::array()}}, false)
                .find("4096by4096"),
            std::string::npos);
  EXPECT_NE(
      msg({{"gpu", "X"}, {"n", 8}, {"k", 8}, {"rows", json::array({{{"m", 1}, {"dense_ms", 1}}})}},
          true)
          .find("shipped measurements must say when and how"),
      std::string::npos);
  EXPECT_NE(msg({{"gpu", "X"}, {"model", "opt-1.3b"}, {"runs", json::array()}}, false)
                .find("\"sparsity\""),
            std::string::npos);
  EXPECT_NE(msg({{"gpu", "X"},
                 {"model", "opt-1.3b"},
                 {"sparsity", "dense"},
                 {"runs", json::array({{{"batch", 1},
                                        {"prompt_tokens", 1},
                                        {"new_tokens", 1},
                                        {"prefill_tokens_per_s", 1}}})}},
                false)
                .find("decode_tokens_per_s"),
            std::string::npos);
}

TEST(AuditShipped, TableLoadsWithProvenance) {
  // The shipped table must parse under the strict rules (date and command on every entry).
  Measurements m;
  const int files = load_measurement_dir(SF_MEASURED_DIR, m);
  EXPECT_GE(files, 1);
  for (const auto& g : m.gemms) {
    EXPECT_FALSE(g.prov.date.empty());
    EXPECT_FALSE(g.prov.command.empty());
  }
  for (const auto& g : m.models) EXPECT_FALSE(g.prov.command.empty());
}

TEST(AuditParse, ModelBenchmarkAsTheCommandWritesIt) {
  // The shape `sparseflow benchmark --model` writes: "rows" of tokens/s, "weights", a model path.
  const json dense = {{"gpu", "NVIDIA H200"},
                      {"model", "/models/synthetic-opt.sf"},
                      {"weights", "dense"},
                      {"layers", 32},
                      {"hidden", 4096},
                      {"rows", json::array({{{"batch", 1},
                                             {"prompt_tokens", 128},
                                             {"new_tokens", 256},
                                             {"prefill_tokens_per_s", 8000.0},
                                             {"decode_tokens_per_s", 250.0}}})}};
  json sparse = dense;
  sparse["weights"] = "2:4";
  sparse["model"] = "/models/opt-6.7b-24.sf/";
  sparse["rows"][0]["decode_tokens_per_s"] = 400.0;
  Measurements m;
  parse_measurements(dense, "d.json", false, m);
  parse_measurements(sparse, "s.json", false, m);
  ASSERT_EQ(m.models.size(), 2u);
  EXPECT_TRUE(m.gemms.empty());
  EXPECT_EQ(m.models[0].model, "synthetic-opt");
  EXPECT_EQ(m.models[1].model, "opt-6.7b-24");
  EXPECT_TRUE(m.models[1].sparse24);
  // Matched by shape: 32 layers of 4096 is opt-6.7b (and, by shape alone, llama-7b too, but the
  // engine runs OPT, so a benchmark without "architecture" is OPT).
  EXPECT_TRUE(measures(m.models[0], *find_model("opt-6.7b")));
  EXPECT_FALSE(measures(m.models[0], *find_model("llama-7b")));
  EXPECT_FALSE(measures(m.models[0], *find_model("opt-13b")));
  Request req;
  req.qps = 1;
  const Report r = run_audit(req, *find_model("opt-6.7b"), m);
  // 128 / 8000 + 256 / 250 = 1.04 s dense -> 2 GPUs; 128 / 8000 + 256 / 400 = 0.656 s -> 1 GPU.
  EXPECT_EQ(r.dense.gpus, 2);
  EXPECT_EQ(r.sparse.gpus, 1);
  EXPECT_THROW(run_audit(req, *find_model("llama-7b"), m), sf::Error);
}
