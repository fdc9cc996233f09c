// Model::open on HF checkpoint directories (single file and sharded, with and without the "model."
// prefix, tied and untied lm_head, project_in/out, post-layernorm, missing tensors, bad configs) and
// on .sf files written by convert_to_sf (dense in every dtype and 2:4, bit-exact against the source).
#include <sys/stat.h>

#include <cstring>

#include "format/hf_config.hpp"
#include "format/safetensors.hpp"
#include "format/sf_file.hpp"
#include "model/convert.hpp"
#include "model/synth.hpp"
#include "model/weights.hpp"
#include "sf_test_util.hpp"
#include "sparse24/internal.hpp"

using namespace sf;
using namespace sf::model;
using sftest::catch_error;

namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape &&
         std::memcmp(a.data, b.data, size_t(a.numel()) * dtype_size(a.dtype)) == 0;
}
bool same_compressed(const s24::Compressed& a, const s24::Compressed& b) {
  return a.dtype == b.dtype && a.rows == b.rows && a.cols == b.cols && a.rows_padded == b.rows_padded &&
         a.cols_padded == b.cols_padded && a.values == b.values && a.meta == b.meta;
}
// Every dense tensor of `a` is in `b` with the same bytes, and the other way round.
void expect_same_dense(const Model& a, const Model& b) {
  EXPECT_EQ(a.dense_tensors().size(), b.dense_tensors().size());
  for (const auto& [name, t] : a.dense_tensors()) {
    const Tensor* u = b.find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_TRUE(same_bytes(t, *u)) << name;
  }
}

class ModelLoadTest : public sftest::ScratchTest {};

TEST_F(ModelLoadTest, SingleFileCheckpoint) {
  SynthOptions o;
  o.seed = 5;
  const arch::ModelDesc c = write_tiny_opt(path("ck"), o);
  const auto m = Model::open(path("ck"));
  EXPECT_EQ(m->config().hidden_size, 64);
  EXPECT_EQ(m->config().num_hidden_layers, 2);
  EXPECT_EQ(m->config().vocab_size, c.vocab_size);
  EXPECT_EQ(m->config().vocab_size, 1500);
  EXPECT_TRUE(m->config().tie_word_embeddings);
  EXPECT_EQ(m->dtype(), DType::F16);
  EXPECT_FALSE(m->is_sparse());
  EXPECT_EQ(m->source_format(), "hf");
  EXPECT_EQ(m->metadata().at("weights.synthetic"), true);
  EXPECT_EQ(m->vocab_json(), builtin_vocab_json());
  EXPECT_EQ(m->merges_txt(), builtin_merges_txt());
  EXPECT_EQ(&m->lm_head(), &m->tensor("model.decoder.embed_tokens.weight"));  // tied
  EXPECT_EQ(m->dense_tensors().size(), arch::expected_tensors(m->config(), false).size());
  const Linear l = m->linear("model.decoder.layers.1.fc1");
  ASSERT_NE(l.dense, nullptr);
  EXPECT_EQ(l.sparse, nullptr);
  ASSERT_NE(l.bias, nullptr);
  EXPECT_EQ(l.out_features, 256);
  EXPECT_EQ(l.in_features, 64);
  EXPECT_EQ(m->tensor("model.decoder.embed_positions.weight").shape, (std::vector<int64_t>{130, 64}));
  // The views hold exactly the safetensors bytes.
  const auto st = st::File::open(path("ck/model.safetensors"));
  const auto& info = st.get("model.decoder.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(std::memcmp(st.data(info).data(), m->tensor(info.name).data, st.data(info).size()), 0);
  // Same seed, same bytes; another seed, other bytes.
  write_tiny_opt(path("ck2"), o);
  EXPECT_EQ(sftest::read_bytes(path("ck/model.safetensors")), sftest::read_bytes(path("ck2/model.safetensors")));
  o.seed = 6;
  write_tiny_opt(path("ck3"), o);
  EXPECT_NE(sftest::read_bytes(path("ck/model.safetensors")), sftest::read_bytes(path("ck3/model.safetensors")));
}

TEST_F(ModelLoadTest, ShardedAndUnprefixedCheckpointsLoadTheSameTensors) {
  SynthOptions o;
  write_tiny_opt(path("single"), o);
  o.shards = 3;
  write_tiny_opt(path("sharded"), o);
  EXPECT_TRUE(std::filesystem::exists(path("sharded/model-00003-of-00003.safetensors")));
  EXPECT_TRUE(std::filesystem::exists(path("sharded/model.safetensors.index.json")));
  EXPECT_FALSE(std::filesystem::exists(path("sharded/model.safetensors")));
  o.shards = 1;
  o.model_prefix = false;  // OPTModel: "decoder.layers..."
  write_tiny_opt(path("bare"), o);
  const auto st = st::File::open(path("bare/model.safetensors"));
  EXPECT_NE(st.find("decoder.embed_tokens.weight"), nullptr);
  EXPECT_EQ(st.find("model.decoder.embed_tokens.weight"), nullptr);

  const auto a = Model::open(path("single")), b = Model::open(path("sharded")), c = Model::open(path("bare"));
  expect_same_dense(*a, *b);
  expect_same_dense(*a, *c);
}

TEST_F(ModelLoadTest, UntiedLmHeadAndProjections) {
  SynthOptions o;
  o.tie_word_embeddings = false;
  o.word_embed_proj_dim = 32;
  write_tiny_opt(path("ck"), o);
  const auto m = Model::open(path("ck"));
  EXPECT_FALSE(m->config().tie_word_embeddings);
  EXPECT_EQ(m->config().word_embed_proj_dim, 32);
  EXPECT_EQ(&m->lm_head(), &m->tensor("lm_head.weight"));
  EXPECT_NE(m->lm_head().data, m->tensor("model.decoder.embed_tokens.weight").data);
  EXPECT_EQ(m->lm_head().shape, (std::vector<int64_t>{1500, 32}));
  EXPECT_EQ(m->tensor("model.decoder.embed_tokens.weight").shape, (std::vector<int64_t>{1500, 32}));
  EXPECT_EQ(m->tensor("model.decoder.project_in.weight").shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(m->tensor("model.decoder.project_out.weight").shape, (std::vector<int64_t>{32, 64}));

  // A config that ties over a stored lm_head.weight: HF ties (uses embed_tokens), so do we.
  auto cfg = nlohmann::json::parse(sftest::read_bytes(path("ck/config.json")));
  cfg["tie_word_embeddings"] = true;
  const std::string text = cfg.dump();
  sftest::write_bytes(path("ck/config.json"), std::vector<uint8_t>(text.begin(), text.end()));
  const auto t = Model::open(path("ck"));
  EXPECT_TRUE(t->config().tie_word_embeddings);
  EXPECT_EQ(&t->lm_head(), &t->tensor("model.decoder.embed_tokens.weight"));
}

TEST_F(ModelLoadTest, PostLayerNormHasNoFinalLayerNorm) {
  SynthOptions o;
  o.pre_norm = false;
  write_tiny_opt(path("ck"), o);
  const auto m = Model::open(path("ck"));
  EXPECT_FALSE(m->config().pre_norm);
  EXPECT_FALSE(m->config().final_norm);
  EXPECT_EQ(m->find("model.decoder.final_layer_norm.weight"), nullptr);
  EXPECT_NE(m->find("model.decoder.layers.0.final_layer_norm.weight"), nullptr);
}

TEST_F(ModelLoadTest, MissingTensorsAreListedByName) {
  write_tiny_opt(path("ck"), {});
  const auto src = st::File::open(path("ck/model.safetensors"));
  std::vector<st::TensorToWrite> keep;
  for (const auto& t : src.tensors())
    if (t.name != "model.decoder.layers.1.fc2.bias" && t.name != "model.decoder.layers.0.self_attn.q_proj.weight")
      keep.push_back({t.name, t.dtype, t.shape, src.data(t)});
  st::write_file(path("ck/pruned.safetensors"), keep);
  std::filesystem::rename(path("ck/pruned.safetensors"), path("ck/model.safetensors"));
  const Error e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::NotFound);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("2 tensor(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.decoder.layers.1.fc2.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.decoder.layers.0.self_attn.q_proj.weight"), std::string::npos) << msg;
}

TEST_F(ModelLoadTest, MissingShardAndMissingFilesAreNamed) {
  SynthOptions o;
  o.shards = 2;
  write_tiny_opt(path("ck"), o);
  std::filesystem::remove(path("ck/model-00002-of-00002.safetensors"));
  Error e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::NotFound);
  EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos) << e.what();

  std::filesystem::create_directories(path("empty"));
  e = catch_error([&] { Model::open(path("empty")); });
  EXPECT_NE(std::string(e.what()).find("no config.json"), std::string::npos) << e.what();
  e = catch_error([&] { Model::open(path("nowhere")); });
  EXPECT_EQ(e.status(), Status::NotFound);
}

TEST_F(ModelLoadTest, ShapeThatDisagreesWithConfigIsRefused) {
  write_tiny_opt(path("ck"), {});
  auto cfg = nlohmann::json::parse(sftest::read_bytes(path("ck/config.json")));
  cfg["ffn_dim"] = 128;
  const std::string text = cfg.dump();
  sftest::write_bytes(path("ck/config.json"), std::vector<uint8_t>(text.begin(), text.end()));
  const Error e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::Format);
  EXPECT_NE(std::string(e.what()).find("fc1.weight' has shape [256, 64]"), std::string::npos) << e.what();
}

TEST(HfConfig, RefusesWhatIsNotAnOptModel) {
  const std::string good = format::hf_config_json(synth_config({})).dump();
  EXPECT_EQ(format::parse_hf_config(good).hidden_size, 64);
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = nlohmann::json::parse(good);
    if (v.is_discarded()) j.erase(key); else j[key] = v;
    return j.dump();
  };
  struct Case { std::string text; Status status; std::string needle; };
  const nlohmann::json erase = nlohmann::json(nlohmann::json::value_t::discarded);
  const Case cases[] = {
      {"{\"model_type\": ", Status::Format, "not valid JSON"},
      {"[1, 2]", Status::Format, "expected a JSON object"},
      {with("model_type", "bert"), Status::UnsupportedShape, "model_type is \"bert\""},
      {with("model_type", erase), Status::Format, "\"model_type\" is missing"},
      {with("architectures", {"OPTForSequenceClassification"}), Status::UnsupportedShape, "OPTForSequenceClassification"},
      {with("hidden_size", erase), Status::Format, "\"hidden_size\" is missing"},
      {with("hidden_size", "64"), Status::Format, "expected an integer"},
      {with("num_hidden_layers", 0), Status::UnsupportedShape, "\"num_hidden_layers\" is 0"},
      {with("num_attention_heads", 5), Status::UnsupportedShape, "not divisible"},
      {with("vocab_size", -3), Status::UnsupportedShape, "\"vocab_size\" is -3"},
      {with("do_layer_norm_before", 1), Status::Format, "expected true or false"},
      {with("activation_function", "tanh"), Status::UnsupportedShape, "\"tanh\" is not supported"},
      {with("bos_token_id", 1500), Status::UnsupportedShape, "\"bos_token_id\" is 1500"},
  };
  for (const auto& c : cases) {
    const Error e = catch_error([&] { format::parse_hf_config(c.text); });
    EXPECT_EQ(e.status(), c.status) << c.text << "\n" << e.what();
    EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
  }
  // Optional fields take HF's defaults.
  auto j = nlohmann::json::parse(good);
  for (const char* k : {"word_embed_proj_dim", "do_layer_norm_before", "enable_bias", "tie_word_embeddings",
                        "activation_function", "architectures"})
    j.erase(k);
  const arch::ModelDesc c = format::parse_hf_config(j.dump());
  EXPECT_EQ(c.word_embed_proj_dim, 64);
  EXPECT_TRUE(c.pre_norm && c.qkv_bias && c.o_bias && c.mlp_bias && c.tie_word_embeddings);
  EXPECT_EQ(c.act, arch::Act::ReLU);
}

TEST_F(ModelLoadTest, DtypeConversionAndInMemory24) {
  write_tiny_opt(path("ck"), {});
  const auto half = Model::open(path("ck"));
  OpenOptions oo;
  oo.dtype = DType::F32;
  const auto full = Model::open(path("ck"), oo);
  const Tensor& a = half->tensor("model.decoder.layers.0.fc2.weight");
  const Tensor& b = full->tensor("model.decoder.layers.0.fc2.weight");
  ASSERT_EQ(b.dtype, DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i)
    ASSERT_EQ(load_as_float(a.data, a.dtype, size_t(i)), static_cast<const float*>(b.data)[i]) << i;

  const auto sp = Model::open(path("ck"), "2:4");
  EXPECT_TRUE(sp->is_sparse());
  EXPECT_EQ(sp->sparse_tensors().size(), 12u);  // 6 linears x 2 layers
  const Linear l = sp->linear("model.decoder.layers.1.fc2");
  ASSERT_NE(l.sparse, nullptr);
  EXPECT_EQ(l.dense, nullptr);
  // Decompressed, it is the magnitude-pruned dense weight.
  std::vector<uint16_t> dense(size_t(l.out_features * l.in_features));
  s24::decompress(*l.sparse, dense.data());
  const Tensor& w = half->tensor("model.decoder.layers.1.fc2.weight");
  const auto mask = s24::magnitude_mask({w.data, w.dtype, w.shape[0], w.shape[1]});
  for (size_t i = 0; i < dense.size(); ++i)
    ASSERT_EQ(dense[i], mask[i] ? static_cast<const uint16_t*>(w.data)[i] : uint16_t(0)) << i;
  EXPECT_EQ(catch_error([&] { sp->tensor("model.decoder.layers.1.fc2.weight"); }).status(), Status::NotFound);
  EXPECT_EQ(catch_error([&] { Model::open(path("ck"), "3:4"); }).status(), Status::InvalidArgument);
}

// convert_to_sf then Model::open: every tensor bit-exact with the source, for each dtype, dense and 2:4.
TEST_F(ModelLoadTest, SfRoundTripIsBitExact) {
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    SCOPED_TRACE(dtype_name(dt));
    SynthOptions o;
    o.dtype = dt;
    o.tie_word_embeddings = false;
    o.word_embed_proj_dim = 32;
    const std::string ck = path(fmt::format("ck_{}", dtype_name(dt)));
    write_tiny_opt(ck, o);
    const auto hf = Model::open(ck);

    const std::string dense_sf = ck + ".sf";
    const auto rep = convert_to_sf(*hf, dense_sf, {});
    EXPECT_EQ(rep.file_bytes, std::filesystem::file_size(dense_sf));
    const auto d = Model::open(dense_sf);
    EXPECT_EQ(d->source_format(), "sf");
    EXPECT_EQ(d->dtype(), dt);
    EXPECT_FALSE(d->config().tie_word_embeddings);
    EXPECT_EQ(d->config().word_embed_proj_dim, 32);
    EXPECT_EQ(d->vocab_json(), hf->vocab_json());
    EXPECT_EQ(d->merges_txt(), hf->merges_txt());
    EXPECT_EQ(d->metadata().at("sparsity.pattern"), "none");
    EXPECT_EQ(d->metadata().at("weights.synthetic"), true);
    expect_same_dense(*hf, *d);

    const std::string sparse_sf = ck + ".24.sf";
    ConvertOptions co;
    co.sparsity = "2:4";
    const auto rep24 = convert_to_sf(*hf, sparse_sf, co);
    EXPECT_EQ(rep24.linears.size(), 12u);
    ASSERT_EQ(rep24.layer_relative_error.size(), 2u);
    for (double e : rep24.layer_relative_error) {
      EXPECT_GT(e, 0.2);  // Gaussian weights lose about a third of their norm to 2:4
      EXPECT_LT(e, 0.5);
    }
    const auto s = Model::open(sparse_sf);
    const auto mem = Model::open(ck, "2:4");
    EXPECT_EQ(s->metadata().at("sparsity.pattern"), "2:4");
    ASSERT_EQ(s->sparse_tensors().size(), mem->sparse_tensors().size());
    for (const auto& [name, c] : mem->sparse_tensors()) {
      const auto it = s->sparse_tensors().find(name);
      ASSERT_NE(it, s->sparse_tensors().end()) << name;
      EXPECT_TRUE(same_compressed(c, it->second)) << name;
    }
    expect_same_dense(*mem, *s);
    // A .sf file's sparsity is fixed; a 2:4 source is refused by convert.
    EXPECT_EQ(catch_error([&] { Model::open(sparse_sf, "2:4"); }).status(), Status::InvalidArgument);
    EXPECT_EQ(catch_error([&] { convert_to_sf(*s, path("again.sf"), {}); }).status(), Status::UnsupportedShape);
  }
}

TEST_F(ModelLoadTest, ConvertChangesDtypeAndRefusesWandaWithoutNorms) {
  write_tiny_opt(path("ck"), {});
  const auto hf = Model::open(path("ck"));
  ConvertOptions co;
  co.dtype = DType::BF16;
  convert_to_sf(*hf, path("b.sf"), co);
  const auto b = Model::open(path("b.sf"));
  const Tensor& x = hf->tensor("model.decoder.layers.0.fc1.bias");
  const Tensor& y = b->tensor("model.decoder.layers.0.fc1.bias");
  EXPECT_EQ(y.dtype, DType::BF16);
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(static_cast<const uint16_t*>(y.data)[i], float_to_bf16(load_as_float(x.data, x.dtype, size_t(i))));

  co = {};
  co.sparsity = "2:4";
  co.method = "wanda";
  const Error e = catch_error([&] { convert_to_sf(*hf, path("w.sf"), co); });
  EXPECT_EQ(e.status(), Status::InvalidArgument);
  EXPECT_NE(std::string(e.what()).find("activation norms"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path("w.sf")));
}

// A .sf file with an extra tensor of an unknown kind still loads; a damaged one names the tensor.
TEST_F(ModelLoadTest, SfLoaderSkipsUnknownKindsAndRefusesDamage) {
  write_tiny_opt(path("ck"), {});
  const auto hf = Model::open(path("ck"));
  convert_to_sf(*hf, path("m.sf"), {});
  auto bytes = sftest::read_bytes(path("m.sf"));
  const auto f = sff::File::open(path("m.sf"));
  const auto& e = f.get("model.decoder.layers.1.fc1.weight");
  bytes[f.data_start() + e.parts[0].offset + 3] ^= 0x10;
  sftest::write_bytes(path("bad.sf"), bytes);
  const Error err = catch_error([&] { Model::open(path("bad.sf")); });
  EXPECT_EQ(err.status(), Status::Format);
  EXPECT_NE(std::string(err.what()).find("model.decoder.layers.1.fc1.weight"), std::string::npos) << err.what();
  OpenOptions no_verify;
  no_verify.verify_checksums = false;
  EXPECT_NO_THROW(Model::open(path("bad.sf"), no_verify));

  // Every tensor of the model plus one of a kind from the future.
  std::vector<sff::EntrySpec> specs;
  for (const auto& [name, t] : hf->dense_tensors()) specs.push_back(sff::dense_spec(name, t.dtype, t.shape));
  sff::EntrySpec extra{"model.decoder.layers.0.ffn_neurons", "kind_from_the_future", DType::F16, {256, 128}, {}, {}};
  extra.parts = {{"bundles", 256 * 128 * 2}};
  specs.push_back(extra);
  {
    sff::Writer w(path("future.sf"), "opt", format::hf_config_json(hf->config()), nlohmann::json::object(), specs);
    for (const auto& [name, t] : hf->dense_tensors())
      w.write({static_cast<const uint8_t*>(t.data), size_t(t.numel()) * dtype_size(t.dtype)});
    w.write(std::vector<uint8_t>(256 * 128 * 2, 0x3c));
    w.finish();
  }
  const auto fut = Model::open(path("future.sf"));
  expect_same_dense(*hf, *fut);
  EXPECT_EQ(fut->find("model.decoder.layers.0.ffn_neurons"), nullptr);
  EXPECT_TRUE(fut->vocab_json().empty());  // no tokenizer tensors: the model runs from --ids

  // The loader demands what the config implies: drop one tensor and it names it.
  specs.erase(specs.begin());
  {
    sff::Writer w(path("short.sf"), "opt", format::hf_config_json(hf->config()), nlohmann::json::object(), specs);
    bool first = true;
    for (const auto& [name, t] : hf->dense_tensors()) {
      if (first) { first = false; continue; }
      w.write({static_cast<const uint8_t*>(t.data), size_t(t.numel()) * dtype_size(t.dtype)});
    }
    w.write(std::vector<uint8_t>(256 * 128 * 2, 0x3c));
    w.finish();
  }
  const Error miss = catch_error([&] { Model::open(path("short.sf")); });
  EXPECT_EQ(miss.status(), Status::NotFound);
  EXPECT_NE(std::string(miss.what()).find(hf->dense_tensors().begin()->first), std::string::npos) << miss.what();
}

// Writes every part's xxh64 (and the trailer's own) back into `b`, a copy of `f`'s bytes whose
// tensor data was edited, so that only the damage the edit made is left to find.
void rewrite_checksums(std::vector<uint8_t>& b, const sff::File& f) {
  auto put = [&](size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + size_t(i)] = uint8_t(v >> (8 * i));
  };
  size_t nparts = 0;
  for (const auto& e : f.entries()) nparts += e.parts.size();
  const size_t trailer = b.size() - 8 * (nparts + 2);
  size_t k = 1;
  for (const auto& e : f.entries())
    for (const auto& q : e.parts)
      put(trailer + 8 * k++, sff::xxh64({b.data() + f.data_start() + q.offset, size_t(q.size)}));
  put(trailer + 8 * k, sff::xxh64({b.data() + trailer, 8 * k}));
}

void write_config(const std::string& path, const nlohmann::json& cfg) {
  const std::string text = cfg.dump();
  sftest::write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// Checksums prove only that the bytes are the writer's: a .sf file whose 2:4 metadata holds a
// pair that is not i0 < i1 (recomputed checksums, otherwise valid) is refused naming the tensor,
// the row and the columns of the first bad group.
TEST_F(ModelLoadTest, S24MetadataThatIsNotAnIndexPairIsRefused) {
  write_tiny_opt(path("ck"), {});
  ConvertOptions co;
  co.sparsity = "2:4";
  convert_to_sf(*Model::open(path("ck")), path("m.sf"), co);
  const auto f = sff::File::open(path("m.sf"));
  const auto good = sftest::read_bytes(path("m.sf"));

  auto ones = good;  // every metadata byte 0xFF: every group (3, 3)
  std::string first;
  for (const auto& e : f.entries())
    if (e.kind == sff::kKindS24) {
      if (first.empty()) first = e.name;
      const auto* q = e.part("meta");
      std::memset(ones.data() + f.data_start() + q->offset, 0xff, q->size);
    }
  rewrite_checksums(ones, f);
  sftest::write_bytes(path("ones.sf"), ones);
  ASSERT_NO_THROW(sff::File::open(path("ones.sf")));  // the file itself is consistent
  Error e = catch_error([&] { Model::open(path("ones.sf")); });
  EXPECT_EQ(e.status(), Status::Format);
  std::string msg = e.what();
  for (const std::string& needle :
       {first, std::string("row 0, columns 0..3"), std::string("indices (3, 3)"),
        std::string("0 <= i0 < i1 <= 3"), std::string("corrupt"),
        std::string("re-run `sparseflow convert`")})
    EXPECT_NE(msg.find(needle), std::string::npos) << "missing: " << needle << "\n" << msg;

  // One group with its indices swapped, (2, 1), at row 5 columns 12..15 of layer 1's fc2.
  auto one = good;
  const auto& fc2 = f.get("model.decoder.layers.1.fc2.weight");
  const s24::MetaPos at = s24::meta_pos(fc2.padded_shape[1], 5, 3);
  uint8_t* meta = one.data() + f.data_start() + fc2.part("meta")->offset;
  uint32_t word;
  std::memcpy(&word, meta + 4 * at.word, 4);
  word = (word & ~(0xfu << at.shift)) | ((2u | 1u << 2) << at.shift);
  std::memcpy(meta + 4 * at.word, &word, 4);
  rewrite_checksums(one, f);
  sftest::write_bytes(path("one.sf"), one);
  e = catch_error([&] { Model::open(path("one.sf")); });
  EXPECT_EQ(e.status(), Status::Format);
  msg = e.what();
  EXPECT_NE(msg.find("'model.decoder.layers.1.fc2.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 5, columns 12..15 (group 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("indices (2, 1)"), std::string::npos) << msg;
}

// A config.json that says 1 layer over weights of 2 used to load (and convert) as a 1-layer model;
// every tensor set that is not the config's model is refused, naming tensors and the config.
TEST_F(ModelLoadTest, TensorsThatTheConfigDoesNotDescribeAreRefused) {
  write_tiny_opt(path("ck"), {});
  auto cfg = nlohmann::json::parse(sftest::read_bytes(path("ck/config.json")));
  cfg["num_hidden_layers"] = 1;
  write_config(path("ck/config.json"), cfg);
  Error e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::Format);
  std::string msg = e.what();
  for (const char* needle :
       {"16 tensor(s) are not part of that model", "model.decoder.layers.1.fc1.weight",
        "and 4 more", "num_hidden_layers 1", "layers 0 to 1 (2 layers)", "config.json"})
    EXPECT_NE(msg.find(needle), std::string::npos) << "missing: " << needle << "\n" << msg;

  // More layers in the config than in the weights: the missing ones, with the same summary.
  cfg["num_hidden_layers"] = 3;
  write_config(path("ck/config.json"), cfg);
  e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::NotFound);
  msg = e.what();
  EXPECT_NE(msg.find("16 tensor(s) it implies are missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.decoder.layers.2."), std::string::npos) << msg;
  EXPECT_NE(msg.find("where config.json says 3"), std::string::npos) << msg;

  // A tensor nothing reads, in a checkpoint whose layers match.
  cfg["num_hidden_layers"] = 2;
  write_config(path("ck/config.json"), cfg);
  const auto src = st::File::open(path("ck/model.safetensors"));
  std::vector<st::TensorToWrite> all;
  for (const auto& t : src.tensors()) all.push_back({t.name, t.dtype, t.shape, src.data(t)});
  const std::vector<uint8_t> extra(64 * 4, 0);
  all.push_back({"model.decoder.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {64}, extra});
  st::write_file(path("ck/extra.safetensors"), all);
  std::filesystem::rename(path("ck/extra.safetensors"), path("ck/model.safetensors"));
  e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_EQ(e.status(), Status::Format);
  EXPECT_NE(std::string(e.what()).find("1 tensor(s) are not part of that model: "
                                       "model.decoder.layers.0.self_attn.rotary_emb.inv_freq"),
            std::string::npos)
      << e.what();

  // An untied config needs lm_head.weight; it is not silently tied when absent.
  write_tiny_opt(path("tied"), {});
  auto tcfg = nlohmann::json::parse(sftest::read_bytes(path("tied/config.json")));
  tcfg["tie_word_embeddings"] = false;
  write_config(path("tied/config.json"), tcfg);
  e = catch_error([&] { Model::open(path("tied")); });
  EXPECT_EQ(e.status(), Status::NotFound);
  EXPECT_NE(std::string(e.what()).find("missing: lm_head.weight"), std::string::npos) << e.what();
}

// The same for a .sf file: a header config of 1 layer over the tensors of 2.
TEST_F(ModelLoadTest, SfTensorsThatTheConfigDoesNotDescribeAreRefused) {
  write_tiny_opt(path("ck"), {});
  const auto hf = Model::open(path("ck"));
  arch::ModelDesc one = hf->config();
  one.num_hidden_layers = 1;
  std::vector<sff::EntrySpec> specs;
  for (const auto& [name, t] : hf->dense_tensors())
    specs.push_back(sff::dense_spec(name, t.dtype, t.shape));
  specs.push_back(
      sff::dense_spec("profile.layers.0.firing_rate", DType::F32, {256}));  // a profile is fine
  {
    sff::Writer w(path("m.sf"), "opt", format::hf_config_json(one), nlohmann::json::object(),
                  specs);
    for (const auto& [name, t] : hf->dense_tensors())
      w.write({static_cast<const uint8_t*>(t.data), size_t(t.numel()) * dtype_size(t.dtype)});
    w.write(std::vector<uint8_t>(256 * 4, 0));
    w.finish();
  }
  const Error e = catch_error([&] { Model::open(path("m.sf")); });
  EXPECT_EQ(e.status(), Status::Format);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("16 tensor(s) are not part of that model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.decoder.layers.1."), std::string::npos) << msg;
  EXPECT_NE(msg.find("its header config says 1"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("profile.layers.0"), std::string::npos) << msg;
}

// A FIFO, a directory or a device where a model file should be fails at once with the path and
// what it is; it used to block in open() or read() until some writer came along.
TEST_F(ModelLoadTest, FifoDirectoryOrDeviceInsteadOfAFileFailsPromptly) {
  ASSERT_EQ(::mkfifo(path("m.sf").c_str(), 0600), 0);
  Error e = sftest::catch_error_promptly(path("m.sf"), [&] { Model::open(path("m.sf")); });
  EXPECT_EQ(e.status(), Status::Io);
  EXPECT_NE(std::string(e.what()).find(path("m.sf") +
                                       "' is a FIFO (named pipe); expected a regular file"),
            std::string::npos)
      << e.what();

  for (const char* file : {"config.json", "model.safetensors", "vocab.json"}) {
    SCOPED_TRACE(file);
    const std::string dir = path(std::string("ck_") + file);
    write_tiny_opt(dir, {});
    const std::string p = dir + "/" + file;
    std::filesystem::remove(p);
    ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
    e = sftest::catch_error_promptly(p, [&] { Model::open(dir); });
    EXPECT_EQ(e.status(), Status::Io);
    EXPECT_NE(std::string(e.what()).find(p + "' is a FIFO"), std::string::npos) << e.what();
  }

  write_tiny_opt(path("ck"), {});
  std::filesystem::remove(path("ck/model.safetensors"));
  std::filesystem::create_directory(path("ck/model.safetensors"));
  e = catch_error([&] { Model::open(path("ck")); });
  EXPECT_NE(std::string(e.what()).find("' is a directory; expected a regular file"),
            std::string::npos)
      << e.what();
  e = catch_error([&] { Model::open("/dev/null"); });
  EXPECT_EQ(e.status(), Status::Io);
  EXPECT_NE(std::string(e.what()).find("'/dev/null' is a character device"), std::string::npos)
      << e.what();
}

}  // namespace
