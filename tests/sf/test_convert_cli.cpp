// `sparseflow synth`, `convert` and `inspect` end to end through the binary: exit codes, output,
// and atomicity (a failing convert leaves no partial file and keeps an existing output).
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "format/sf_file.hpp"
#include "model/weights.hpp"
#include "session/session.hpp"
#include "sf_test_util.hpp"

using namespace sf;

namespace {

struct CliResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};

CliResult run_cli(const std::string& args) {
  const std::string cmd = std::string(SF_CLI_PATH) + " " + args + " 2>&1";
  CliResult r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class ConvertCliTest : public sftest::ScratchTest {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    const CliResult r = run_cli(fmt::format("synth --arch tiny --output {} --seed 3", path("tiny")));
    ASSERT_EQ(r.code, 0) << r.out;
  }
};

TEST_F(ConvertCliTest, SynthConvertInspect) {
  CliResult r = run_cli(fmt::format("convert --input {} --output {} --sparsity 2:4", path("tiny"), path("t24.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("relative pruning error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters     204416"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("convert ["), std::string::npos)
      << r.out;  // not a terminal: no progress bar
  const auto m = model::Model::open(path("t24.sf"));
  EXPECT_TRUE(m->is_sparse());

  r = run_cli(fmt::format("inspect {}", path("t24.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("verification: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.decoder.layers.1.fc2.weight"), std::string::npos);
  r = run_cli(fmt::format("inspect --json {}", path("t24.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["verification"]["ok"], true);
  EXPECT_EQ(j["metadata"]["sparsity.pattern"], "2:4");
  EXPECT_EQ(j["totals"]["kinds"]["s24"], 12);

  r = run_cli(fmt::format("convert -i {} -o {} --dtype bf16 --json", path("tiny"), path("bf.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(model::Model::open(path("bf.sf"))->dtype(), DType::BF16);

  r = run_cli(fmt::format("synth --arch tiny --format sf --output {} --seed 3", path("direct.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(model::Model::open(path("direct.sf"))->metadata().at("source.format"), "synth");
  EXPECT_TRUE(temporaries().empty());
}

TEST_F(ConvertCliTest, DamagedFileExitCodes) {
  ASSERT_EQ(run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("m.sf"))).code, 0);
  auto b = sftest::read_bytes(path("m.sf"));
  const auto f = sff::File::open(path("m.sf"));
  b[f.data_start() + f.get("model.decoder.layers.0.fc1.bias").parts[0].offset] ^= 0x80;
  sftest::write_bytes(path("bad.sf"), b);
  CliResult r = run_cli(fmt::format("inspect {}", path("bad.sf")));
  EXPECT_EQ(r.code, 1) << r.out;  // checksum failure: table printed, then FAILED
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.decoder.layers.0.fc1.bias"), std::string::npos) << r.out;
  EXPECT_EQ(run_cli(fmt::format("inspect --no-verify {}", path("bad.sf"))).code, 0);
  b.resize(b.size() / 2);
  sftest::write_bytes(path("cut.sf"), b);
  r = run_cli(fmt::format("inspect {}", path("cut.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("truncated"), std::string::npos) << r.out;
}

TEST_F(ConvertCliTest, FailingConvertLeavesNothingBehindAndKeepsTheOldOutput) {
  const std::string out = path("keep.sf");
  sftest::write_bytes(out, {'o', 'l', 'd'});
  // Without --force an existing output is never replaced, even by a good conversion.
  CliResult r = run_cli(fmt::format("convert -i {} -o {}", path("tiny"), out));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("already exists; pass --force"), std::string::npos) << r.out;
  // With --force: bad options, a missing input, an incomplete checkpoint each fail with exit 2, and
  // the old output stays.
  r = run_cli(fmt::format("convert -i {} -o {} --sparsity 3:4 --force", path("tiny"), out));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("expected none or 2:4"), std::string::npos) << r.out;
  r = run_cli(
      fmt::format("convert -i {} -o {} --sparsity 2:4 --method wanda --force", path("tiny"), out));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--calibration"), std::string::npos) << r.out;
  r = run_cli(fmt::format("convert -i {} -o {} --force", path("absent"), out));
  EXPECT_EQ(r.code, 2) << r.out;
  std::filesystem::remove(path("tiny/model.safetensors"));
  r = run_cli(fmt::format("convert -i {} -o {} --force", path("tiny"), out));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  EXPECT_EQ(sftest::read_bytes(out), (std::vector<uint8_t>{'o', 'l', 'd'}));
  EXPECT_TRUE(temporaries().empty());
  r = run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("new.sf")));
  EXPECT_EQ(r.code, 2);
  EXPECT_FALSE(std::filesystem::exists(path("new.sf")));
  // A directory as output, and a missing --output, are refused too.
  EXPECT_EQ(run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("tiny"))).code, 2);
  EXPECT_EQ(run_cli(fmt::format("convert -i {}", path("tiny"))).code, 2);
}

// A checkpoint without vocab.json + merges.txt converts, with a warning now rather than an error at
// generate time that says what will not work and which files were looked for.
TEST_F(ConvertCliTest, ConvertWithoutTokenizerWarns) {
  CliResult r = run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("with.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
  std::filesystem::remove(path("tiny/merges.txt"));
  r = run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("without.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  for (const std::string& needle :
       {std::string("convert: warning: the input has no tokenizer"), path("tiny/vocab.json"),
        path("tiny/merges.txt"), std::string("found only vocab.json"), std::string("generate --prompt"),
        std::string("perplexity --text"), std::string("--ids still works")})
    EXPECT_NE(r.out.find(needle), std::string::npos) << "missing: " << needle << "\n" << r.out;
  EXPECT_TRUE(model::Model::open(path("without.sf"))->vocab_json().empty());
}

// config.json saying 1 layer over weights of 2 used to convert to a 1-layer model without a word.
TEST_F(ConvertCliTest, ConvertRefusesWeightsTheConfigDoesNotDescribe) {
  auto cfg = nlohmann::json::parse(sftest::read_bytes(path("tiny/config.json")));
  cfg["num_hidden_layers"] = 1;
  const std::string text = cfg.dump();
  sftest::write_bytes(path("tiny/config.json"), std::vector<uint8_t>(text.begin(), text.end()));
  const CliResult r = run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("one.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("model.decoder.layers.1."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("num_hidden_layers 1"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("one.sf")));
}

// SparseGPT through convert, then eval: a model against itself loses nothing, the 2:4 one loses
// something, the report names what was measured, and --json follows the rules of every output.
TEST_F(ConvertCliTest, SparseGptConvertThenEval) {
  const std::string text_dir = std::string(SF_TEST_DATA_DIR) + "/../../data/text/";
  const std::string calib = text_dir + "calibration.txt", eval_text = text_dir + "evaluation.txt";
  ASSERT_EQ(run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("dense.sf"))).code, 0);
  CliResult r =
      run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4 --method sparsegpt "
                          "--calibration {} --dampening 0.05",
                          path("tiny"), path("sgpt.sf"), calib));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("relative output error"), std::string::npos) << r.out;
  const auto m = model::Model::open(path("sgpt.sf"));
  EXPECT_TRUE(m->is_sparse());
  EXPECT_EQ(m->metadata()["sparsity.method"], "sparsegpt");
  EXPECT_EQ(m->metadata()["sparsity.calibration_file"], "calibration.txt");
  EXPECT_EQ(m->metadata()["sparsity.dampening"], 0.05);

  // --dampening and --calibration belong to the methods that use them.
  r = run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4 --dampening 0.1", path("tiny"),
                          path("x.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--dampening is used only by --method sparsegpt"), std::string::npos)
      << r.out;
  r = run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4 --method sparsegpt", path("tiny"),
                          path("x.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--method sparsegpt needs --calibration"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("x.sf")));

  r = run_cli(fmt::format("eval -m {} --reference {} --text {} --json {}", path("dense.sf"),
                          path("dense.sf"), eval_text, path("self.json")));
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(sftest::read_bytes(path("self.json")));
  EXPECT_EQ(j["kl_mean"], 0.0);
  EXPECT_EQ(j["top1_agreement"], 1.0);
  EXPECT_EQ(j["perplexity_ratio"], 1.0);

  r = run_cli(
      fmt::format("eval -m {} --reference {} --text {} --context 16 --max-tokens 100 --json -",
                  path("sgpt.sf"), path("dense.sf"), eval_text));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("2:4 sparsegpt, calibrated on calibration.txt"), std::string::npos) << r.out;
  j = nlohmann::json::parse(r.out.substr(r.out.find("{\n")));
  EXPECT_EQ(j["tokens"], 100);
  EXPECT_EQ(j["windows"], 7);  // 6 of 16 and one of 4
  EXPECT_EQ(j["predicted"], 100 - 7);
  EXPECT_EQ(j["model_sparsity"]["method"], "sparsegpt");
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(j["top1_agreement"].get<double>(), 1.0);

  // The --json file is an output: not replaced without --force, never an input.
  r = run_cli(fmt::format("eval -m {} --text {} --json {}", path("dense.sf"), eval_text,
                          path("self.json")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  EXPECT_EQ(run_cli(fmt::format("eval -m {} --text {} --json {} --force", path("dense.sf"),
                                eval_text, path("self.json")))
                .code,
            0);
  EXPECT_EQ(run_cli(fmt::format("eval -m {} --text {} --json {} --force", path("dense.sf"),
                                eval_text, eval_text))
                .code,
            2);
  // A model calibrated on the text it is evaluated on is called out.
  r = run_cli(fmt::format("eval -m {} --text {}", path("sgpt.sf"), calib));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("warning: "), std::string::npos) << r.out;
  EXPECT_TRUE(temporaries().empty());
}

// The mixed plan through convert, and eval --per-layer: the plan is printed and written into the
// metadata, the kept linears are dense in the file, and per-layer names each linear measured.
TEST_F(ConvertCliTest, MixedPlanAndPerLayer) {
  const std::string text_dir = std::string(SF_TEST_DATA_DIR) + "/../../data/text/";
  const std::string calib = text_dir + "calibration.txt", eval_text = text_dir + "evaluation.txt";
  ASSERT_EQ(run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("dense.sf"))).code, 0);
  ASSERT_EQ(
      run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4", path("tiny"), path("all.sf"))).code,
      0);
  CliResult r =
      run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4 --max-ppl-increase 0.5% "
                          "--calibration {}",
                          path("tiny"), path("mixed.sf"), calib));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("mixed plan: perplexity within 0.50% of dense"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("linears kept dense, perplexity"), std::string::npos) << r.out;
  const auto m = model::Model::open(path("mixed.sf"));
  const auto dense_linears = m->metadata()["sparsity.dense_linears"];
  ASSERT_TRUE(dense_linears.is_array());
  for (const auto& n : dense_linears) EXPECT_NE(m->find(n.get<std::string>()), nullptr) << n;
  EXPECT_EQ(m->sparse_tensors().size() + dense_linears.size(), 12u);

  r = run_cli(fmt::format("convert -i {} -o {} --sparsity 2:4 --max-ppl-increase 5", path("tiny"),
                          path("x.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--max-ppl-increase needs --calibration"), std::string::npos) << r.out;
  r = run_cli(
      fmt::format("convert -i {} -o {} --sparsity 2:4 --max-ppl-increase lots --calibration {}",
                  path("tiny"), path("x.sf"), calib));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("as a percentage (5%) or a fraction (0.05)"), std::string::npos) << r.out;

  r =
      run_cli(fmt::format("eval -m {} --reference {} --text {} --per-layer --only 'layers\\.1\\.' "
                          "--json -",
                          path("all.sf"), path("dense.sf"), eval_text));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("perplexity with one linear pruned alone"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find("{\n")));
  ASSERT_EQ(j["per_linear"].size(), 6u);  // layer 1's q, k, v, out_proj, fc1, fc2
  for (const auto& l : j["per_linear"]) {
    EXPECT_EQ(l["layer"], 1);
    EXPECT_GT(l["bytes_saved"].get<int64_t>(), 0);
  }
  r = run_cli(fmt::format("eval -m {} --text {} --per-layer", path("all.sf"), eval_text));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("give the dense one as --reference"), std::string::npos) << r.out;
}

// A FIFO given as the model or as --text fails at once; `timeout` keeps a regression from hanging
// the suite (exit 124 then).
TEST_F(ConvertCliTest, FifoInputsFailPromptly) {
  ASSERT_EQ(run_cli(fmt::format("convert -i {} -o {}", path("tiny"), path("m.sf"))).code, 0);
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  const std::string cli = std::string("timeout 20 ") + SF_CLI_PATH;
  for (const std::string& args :
       {fmt::format("convert -i {} -o {}", path("fifo"), path("o.sf")),
        fmt::format("generate -m {} --ids 2,3 -n 1", path("fifo")),
        fmt::format("perplexity -m {} --text {}", path("m.sf"), path("fifo"))}) {
    CliResult r;
    std::FILE* p = ::popen((cli + " " + args + " 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(path("fifo") + "' is a FIFO (named pipe); expected a regular file"),
              std::string::npos)
        << args << "\n" << r.out;
  }
}

// A Llama-family checkpoint with tokenizer.model and no tokenizer.json (the tiny SentencePiece
// fixture of tests/tokenizer/tokenizer_spm_test.cpp beside the Mistral fixture's weights):
// tokenized as transformers does through the session and the CLI, and stored by convert so that
// the .sf file tokenizes identically. (The weights' vocabulary of 256 is smaller than the
// tokenizer's, so ids are not detokenized here; tokenizer_spm_test checks decoding.)
class SpmCheckpointTest : public sftest::ScratchTest {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    const std::string data = SF_TEST_DATA_DIR;
    std::filesystem::create_directories(path("ckpt"));
    for (const char* f : {"config.json", "model.safetensors"})
      std::filesystem::copy_file(data + "/llama/mistral_headdim_fp32/" + f, path("ckpt/") + f);
    std::filesystem::copy_file(data + "/tokenizer/spm_bpe.model", path("ckpt/tokenizer.model"));
    cases_ = nlohmann::json::parse(sftest::read_bytes(data + "/tokenizer/spm_cases.json"));
    const std::string config = reference().at("tokenizer_config").dump();
    sftest::write_bytes(path("ckpt/tokenizer_config.json"),
                        std::vector<uint8_t>(config.begin(), config.end()));
  }
  const nlohmann::json& reference() const { return cases_.at("configs").at("llama2_legacy"); }
  // transformers' ids for a shared text, with add_special_tokens (BOS first).
  std::vector<int32_t> ids_of(const std::string& name) const {
    const auto& texts = cases_.at("texts");
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i].at("name") != name) continue;
      const auto& c = reference().at("cases")[i];
      if (c.contains("ids_special")) return c["ids_special"];
      std::vector<int32_t> ids = reference().at("special_prefix");
      for (int32_t id : c.at("ids")) ids.push_back(id);
      return ids;
    }
    ADD_FAILURE() << "no case " << name;
    return {};
  }
  std::string text_of(const std::string& name) const {
    for (const auto& t : cases_.at("texts"))
      if (t.at("name") == name) return t.at("text");
    return {};
  }
  nlohmann::json cases_;
};

TEST_F(SpmCheckpointTest, TokenizesAsTransformersBeforeAndAfterConvert) {
  const std::vector<std::string> names = {"sentence", "special tokens text", "emoji", "space runs",
                                          "digits"};
  for (const std::string& model : {path("ckpt"), path("ckpt.sf")}) {
    if (model == path("ckpt.sf")) {
      const CliResult r = run_cli(fmt::format("convert -i {} -o {}", path("ckpt"), model));
      ASSERT_EQ(r.code, 0) << r.out;
      EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
    }
    session::SessionOptions o;
    o.device = "cpu";
    const auto s = session::Session::open(model, o);
    ASSERT_TRUE(s->has_tokenizer()) << model;
    for (const std::string& name : names) {
      EXPECT_EQ(s->tokenize(text_of(name)), ids_of(name)) << model << ": " << name;
    }
    // The CLI, with the text as an argument.
    const CliResult r = run_cli(
        fmt::format("tokenize -m {} -t '{}' --json", model, text_of("special tokens text")));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(nlohmann::json::parse(r.out).at("ids").get<std::vector<int32_t>>(),
              ids_of("special tokens text"))
        << model;
  }
  const CliResult r = run_cli(fmt::format("inspect {}", path("ckpt.sf")));
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* needle : {"tokenizer.source                 tokenizer.model",
                             "tokenizer.type                   hf-tokenizer-json",
                             "tokenizer.bos_token              <s>", "tokenizer.json"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << "\n" << r.out;
  const auto m = model::Model::open(path("ckpt.sf"));
  EXPECT_TRUE(m->tokenizer_model().empty());
  EXPECT_FALSE(m->tokenizer_json().empty());
}

// A tokenizer.model SparseFlow cannot take does not stop the weights from opening; what needs the
// tokenizer says why, and convert refuses rather than drop the tokenizer silently.
TEST_F(SpmCheckpointTest, UnsupportedTokenizerModel) {
  auto bytes = sftest::read_bytes(path("ckpt/tokenizer.model"));
  for (uint8_t b : {0x12, 0x02, 0x18, 0x01}) bytes.push_back(b);  // trainer_spec.model_type UNIGRAM
  sftest::write_bytes(path("ckpt/tokenizer.model"), bytes);
  EXPECT_FALSE(model::Model::open(path("ckpt"))->tokenizer_model().empty());
  CliResult r = run_cli(fmt::format("tokenize -m {} -t hello", path("ckpt")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("SentencePiece UNIGRAM model"), std::string::npos) << r.out;
  r = run_cli(fmt::format("convert -i {} -o {}", path("ckpt"), path("u.sf")));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("move tokenizer.model out of the checkpoint directory"), std::string::npos)
      << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("u.sf")));
}

}  // namespace
