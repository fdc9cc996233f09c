// The audit's serving mode against hand-computed cases: GPUs = ceil(qps / goodput per GPU) from
// bench-serve results, and the refusals of measurements that do not answer the question asked.
// Every figure below is synthetic, chosen for hand computation; none is a measurement.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>

#include "audit/serve_measurements.hpp"
#include "audit/serving.hpp"
#include "core/error.hpp"

using namespace sf::audit;
using nlohmann::json;

namespace {

// A bench-serve document as the command writes it, reduced to the fields the audit reads.
json serve_doc(const std::vector<std::pair<json, double>>& rate_goodput, double limit = 100,
               int64_t prompt = 128, int64_t max_tokens = 256,
               const std::string& gpu = "NVIDIA H100 80GB HBM3") {
  json points = json::array();
  for (const auto& [rate, goodput] : rate_goodput)
    points.push_back({{"rate", rate},
                      {"summary",
                       {{"requests", 300},
                        {"succeeded", 300},
                        {"errors", 0},
                        {"duration_s", 10.0},
                        {"request_throughput", 30.0},
                        {"output_tokens_per_s", 2560.0},
                        {"ttft_ms", {{"mean", 40}, {"p50", 30}, {"p90", 60}, {"p99", 90}}},
                        {"itl_ms", {{"mean", 20}, {"p50", 18}, {"p90", 25}, {"p99", 40}}},
                        {"e2e_ms", {{"mean", 5000}, {"p50", 5000}, {"p90", 5500}, {"p99", 6000}}},
                        {"latency_limit_ms", limit},
                        {"good", int64_t(goodput * 10)},
                        {"goodput", goodput}}}});
  return {{"format", "sparseflow-bench-serve/1"},
          {"command", "sparseflow bench-serve --url http://gpu-box:8000 ..."},
          {"date", "2026-12-08T00:00:00Z"},
          {"gpu", gpu},
          {"server", {{"url", "http://gpu-box:8000"}, {"model", "llama-7b"}}},
          {"parameters",
           {{"prompt_tokens", prompt},
            {"max_tokens", max_tokens},
            {"concurrency", 64},
            {"latency_limit_ms", limit},
            {"chat", false}}},
          {"points", points}};
}

ServeMeasurement measurement(const json& doc, const std::string& name) {
  return parse_serve_measurement(doc, name);
}

std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const sf::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an sf::Error";
  return "";
}

}  // namespace

TEST(ServingAudit, GpusFromTheBestGoodputHandComputed) {
  // Dense: goodput 12.5 req/s at rate 16 (its best; at rate 32 latency broke the limit, 4 req/s).
  // 2:4: 20 req/s at rate 32. qps 1000: dense ceil(1000 / 12.5) = 80, 2:4 ceil(1000 / 20) = 50.
  const auto dense = measurement(serve_doc({{8, 8.0}, {16, 12.5}, {32, 4.0}}), "dense.json");
  const auto sparse = measurement(serve_doc({{16, 16.0}, {32, 20.0}, {"inf", 0.0}}), "24.json");
  ServingRequest req;
  req.qps = 1000;
  req.latency_limit_ms = 100;
  req.price_per_gpu_hour = 2.0;
  req.grid_g_per_kwh = 400;
  const ServingReport r = run_serving_audit(req, "llama-7b", dense, sparse);
  EXPECT_EQ(r.dense.point.rate, "16");
  EXPECT_DOUBLE_EQ(r.dense.goodput_per_gpu, 12.5);
  EXPECT_EQ(r.dense.gpus, 80);
  EXPECT_EQ(r.sparse.point.rate, "32");
  EXPECT_EQ(r.sparse.gpus, 50);
  EXPECT_EQ(r.prompt_tokens, 128);
  EXPECT_EQ(r.max_tokens, 256);
  EXPECT_EQ(r.gpu, "NVIDIA H100 80GB HBM3");
  // Cost: 80 x 2 x 8760 = 1,401,600 and 50 x 2 x 8760 = 876,000. Power: the H100 SXM's 700 W
  // TDP, 80 x 700 x 8.76 = 490,560 kWh; x 400 g = 196.224 t.
  EXPECT_DOUBLE_EQ(*r.dense.cost_per_year, 1401600.0);
  EXPECT_DOUBLE_EQ(*r.sparse.cost_per_year, 876000.0);
  EXPECT_DOUBLE_EQ(*r.dense.kwh_per_year, 490560.0);
  EXPECT_NEAR(*r.dense.tonnes_co2_per_year, 196.224, 1e-9);
  EXPECT_NEAR(*r.sparse.tonnes_co2_per_year, 122.64, 1e-9);
  EXPECT_TRUE(r.not_computed.empty());
  auto has = [&](const char* what, const char* in_source) {
    for (const auto& a : r.assumptions)
      if (a.what.find(what) != std::string::npos &&
          (a.source + a.value).find(in_source) != std::string::npos)
        return true;
    return false;
  };
  EXPECT_TRUE(has("GPUs needed", "one server = one GPU"));
  EXPECT_TRUE(has("latency limit", "100 ms"));
  EXPECT_TRUE(has("request shape", "128 prompt tokens"));
  EXPECT_TRUE(has("dense goodput", "dense.json"));
  EXPECT_TRUE(has("power per GPU", "H100 Tensor Core GPU datasheet"));
}

TEST(ServingAudit, UnaskedShapeAndLimitComeFromTheMeasurements) {
  const auto d = measurement(serve_doc({{4, 3.0}}, 250, 64, 32, "NVIDIA L40S"), "d");
  const auto s = measurement(serve_doc({{4, 3.5}}, 250, 64, 32, "NVIDIA L40S"), "s");
  ServingRequest req;
  req.qps = 10;
  const ServingReport r = run_serving_audit(req, "my-model", d, s);
  EXPECT_EQ(r.latency_limit_ms, 250);
  EXPECT_EQ(r.dense.gpus, 4);                       // ceil(10 / 3) = ceil(3.33)
  EXPECT_EQ(r.sparse.gpus, 3);                      // ceil(10 / 3.5) = ceil(2.86)
  EXPECT_FALSE(r.dense.cost_per_year.has_value());  // no price: not computed, not invented
  EXPECT_EQ(r.not_computed.size(), 2u);             // cost, CO2 (the L40S's power is known)
}

TEST(ServingAudit, RefusesMeasurementsThatDoNotAnswerTheQuestion) {
  const auto dense = measurement(serve_doc({{16, 12.5}}), "dense.json");
  const auto sparse = measurement(serve_doc({{32, 20.0}}), "24.json");
  ServingRequest req;
  req.qps = 1000;
  auto run = [&](const ServingRequest& q, const ServeMeasurement& d, const ServeMeasurement& s) {
    return refusal([&] { run_serving_audit(q, "llama-7b", d, s); });
  };

  ServingRequest shape = req;
  shape.tokens_in = 512;
  EXPECT_NE(run(shape, dense, sparse).find("measured with prompt tokens 128, not the 512 asked"),
            std::string::npos);
  shape = req;
  shape.tokens_out = 128;
  EXPECT_NE(run(shape, dense, sparse).find("max tokens 256, not the 128"), std::string::npos);
  ServingRequest limit = req;
  limit.latency_limit_ms = 50;
  EXPECT_NE(run(limit, dense, sparse).find("--latency-limit-ms 50"), std::string::npos);

  // The two measurements against each other.
  const auto other_shape = measurement(serve_doc({{32, 20.0}}, 100, 256), "24-long.json");
  EXPECT_NE(run(req, dense, other_shape).find("compare the servers on the same load"),
            std::string::npos);
  const auto other_limit = measurement(serve_doc({{32, 20.0}}, 200), "24-200.json");
  EXPECT_NE(run(req, dense, other_limit).find("latency limit (ms) 100"), std::string::npos);
  auto chat_doc = serve_doc({{32, 20.0}});
  chat_doc["parameters"]["chat"] = true;
  EXPECT_NE(run(req, dense, measurement(chat_doc, "chat.json")).find("chat"), std::string::npos);
  const auto a100 =
      measurement(serve_doc({{32, 20.0}}, 100, 128, 256, "NVIDIA A100-SXM4-80GB"), "a");
  EXPECT_NE(run(req, dense, a100).find("one kind of GPU"), std::string::npos);
  ServingRequest gpu = req;
  gpu.gpu = "H200";
  EXPECT_NE(run(gpu, dense, sparse).find("--gpu H200"), std::string::npos);

  // What a measurement lacks.
  auto no_limit = serve_doc({{32, 20.0}});
  no_limit["parameters"]["latency_limit_ms"] = nullptr;
  EXPECT_NE(run(req, dense, measurement(no_limit, "nolimit.json"))
                .find("measured without --latency-limit-ms"),
            std::string::npos);
  auto no_gpu = serve_doc({{32, 20.0}});
  no_gpu.erase("gpu");
  EXPECT_NE(run(req, dense, measurement(no_gpu, "nogpu.json")).find("bench-serve ... --gpu"),
            std::string::npos);
  const auto none_met = measurement(serve_doc({{8, 0.0}, {"inf", 0.0}}), "slow.json");
  EXPECT_NE(run(req, dense, none_met).find("no request met the latency limit"), std::string::npos);
}

TEST(ServingAudit, ParserNamesWhatIsMissing) {
  EXPECT_NE(refusal([] {
              parse_serve_measurement(json{{"rows", json::array()}}, "b.json");
            }).find("is not a bench-serve result"),
            std::string::npos);
  auto doc = serve_doc({{4, 1.0}});
  doc["parameters"].erase("max_tokens");
  EXPECT_NE(refusal([&] { parse_serve_measurement(doc, "x.json"); }).find("\"max_tokens\""),
            std::string::npos);
  doc = serve_doc({{4, 1.0}});
  doc["points"][0]["summary"]["good"] = 1000;  // more good than succeeded
  EXPECT_NE(refusal([&] { parse_serve_measurement(doc, "x.json"); }).find("inconsistent"),
            std::string::npos);
  const auto m = parse_serve_measurement(serve_doc({{"inf", 2.0}}), "ok.json");
  EXPECT_EQ(m.points[0].rate, "inf");
  EXPECT_EQ(m.concurrency, 64);
  EXPECT_EQ(m.served_model, "llama-7b");
}
