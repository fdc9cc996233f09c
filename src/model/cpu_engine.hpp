// The forward pass on the CPU for every architecture the model description covers
// (arch/model_desc.hpp): fp32 activations, weights read in their stored dtype (fp16, bf16 or fp32;
// dense or 2:4-compressed), fp32 accumulation, OpenMP threads inside every stage. Semantics follow
// Hugging Face's modeling files (eval mode, one sequence, no padding): LayerNorm or RMSNorm, pre-
// or post-norm; learned positions (with the description's offset) or rotary positions on q and k;
// grouped-query attention with q scaled after its bias, causal (and, for Mistral, sliding-window)
// softmax in fp32; a plain or gated MLP; project_in/out when word_embed_proj_dim != hidden_size.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/weights.hpp"

namespace sf::model {

// Keys and values of every layer for one sequence. Positions [0, length) are filled.
struct KvCache {
  int64_t layers = 0, capacity = 0, width = 0;  // width: KV heads x head_dim
  int64_t length = 0;
  std::vector<float> k, v;  // [layers, capacity, width]: row p is k (rotated) / v of token p

  KvCache() = default;
  KvCache(const arch::ModelDesc& c, int64_t capacity_tokens);
  float* key(int64_t layer, int64_t pos) { return k.data() + (layer * capacity + pos) * width; }
  float* value(int64_t layer, int64_t pos) { return v.data() + (layer * capacity + pos) * width; }
  void clear() { length = 0; }
  // Room for capacity_tokens, keeping positions [0, length): a sequence whose final length is not
  // known up front (a server's request) grows its cache as it goes instead of holding the most it
  // might need. Never shrinks.
  void reserve(int64_t capacity_tokens);
  size_t bytes() const { return (k.size() + v.size()) * sizeof(float); }
};

// One sequence's part of a batched forward pass: `tokens` run at positions cache->length.. and
// their keys and values are appended to *cache.
struct BatchSegment {
  std::span<const int32_t> tokens;
  KvCache* cache = nullptr;
};

// Called with the input of every linear layer of the decoder (not lm_head) as it runs:
// prefix like "model.decoder.layers.3.fc1" or "model.layers.3.mlp.gate_proj", x = [rows, in] fp32.
using LinearInputObserver = std::function<void(const std::string& prefix, const float* x,
                                               int64_t rows, int64_t in_features)>;

// Called once per decoder layer while set (profile, calibrate; plain MLPs only): the layer's
// attention input (what q_proj reads: LN1(h) for pre-LN models, h for post-LN) and its fc1 output
// before the activation.
// Neuron index = bundle position for neuron-major layers (the same as fc1 row otherwise).
struct FfnObservation {
  int64_t layer = 0, rows = 0, hidden = 0, ffn = 0;
  int64_t position = 0;            // position of row 0 in the sequence
  const float* attn_in = nullptr;  // [rows, hidden]
  float* pre_act = nullptr;  // [rows, ffn]; the observer may change it (the activation runs after)
};
using FfnObserver = std::function<void(const FfnObservation&)>;

class CpuEngine {
 public:
  // Checks every tensor the forward pass needs (names, shapes) up front and throws sf::Error naming
  // the first one that is missing or has the wrong shape. The model must outlive this object.
  explicit CpuEngine(const Model& model);

  const arch::ModelDesc& config() const { return cfg_; }
  const Model& model() const { return model_; }
  KvCache make_cache(int64_t capacity_tokens) const { return KvCache(cfg_, capacity_tokens); }

  // Runs `tokens` at positions cache.length.. and appends their keys/values to the cache.
  // Returns logits [tokens.size(), vocab] when all_logits, else the last position's [vocab].
  // A whole prompt at once is the prefill; one token at a time is the incremental decode.
  // Throws Error(InvalidArgument) for an empty input, an id outside the vocabulary, or a sequence
  // longer than the cache or max_position_embeddings.
  std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache,
                             bool all_logits = false);

  // Several sequences in one pass, each with its own cache and positions: a continuous-batching
  // server's step, where some segments are one decoded token and others a chunk of a prompt. The
  // linear layers run on every segment's rows together (each weight is read once per pass, which
  // is what makes batched decode cheaper than one sequence at a time); rotary positions and
  // attention run per row against that row's own cache. Returns the logits of each segment's last
  // token, [segments.size(), vocab]. Row i equals what forward(segments[i].tokens, *cache) gives
  // alone, bit for bit with dense weights (the GEMM computes each row in the same lanes and order
  // whatever the row count). Throws Error(InvalidArgument) as forward() does, naming the segment,
  // for two segments on one cache, and while an FFN observer is set (its rows carry one position).
  std::vector<float> forward_batch(std::span<const BatchSegment> segments);

  // While set, every decoder linear's input is handed to the observer (used for Wanda norms).
  void set_observer(LinearInputObserver obs) { observer_ = std::move(obs); }
  // While set, every layer's attention input and FFN pre-activation are handed to the observer.
  // Unset, the forward pass does no extra work.
  void set_ffn_observer(FfnObserver obs) { ffn_observer_ = std::move(obs); }

  // The forward pass one decoder layer at a time, for calibration that changes a layer's weights
  // before the next one runs (SparseGPT): embed() gives the residual stream entering layer 0,
  // [tokens.size(), hidden], for tokens at positions cache.length..; run_layer(l, h, cache) takes
  // h through layer l in place, writing layer l's keys and values at positions cache.length..
  // (cache.length itself does not move). Running every layer in order on one cache gives the
  // hidden states forward() computes before the final norm. Same errors as forward().
  std::vector<float> embed(std::span<const int32_t> tokens, const KvCache& cache);
  void run_layer(int64_t layer, std::vector<float>& h, KvCache& cache);

 private:
  struct NormW {
    std::vector<float> weight,
        bias;  // fp32; weight empty without an affine, bias empty for RMSNorm
  };
  struct Layer {
    std::string prefix;  // "model.layers.<i>."
    NormW attn_norm, ffn_norm;
    Linear q, k, v, o, gate, up, down;  // gate only for gated MLPs; up/down unset when neuron-major
    const NeuronMajorFfn* neurons = nullptr;  // the FFN as bundles (docs/FORMAT.md)
    std::vector<float> neuron_b1;             // [ffn] the bundles' fc1 biases, widened once
    const Tensor* fc2_bias = nullptr;         // [hidden] b2 of a neuron-major layer
  };
  void linear(const Linear& l, const std::string& name, const float* x, int64_t rows, float* y,
              const float* residual = nullptr, bool activate = false);
  // Several products of the same input (q, k, v; gate, up). One decode row with dense weights
  // runs them in one parallel pass (s24::gemv_dense_cpu); otherwise one linear() after another.
  struct Product {
    const Linear* l;
    const std::string* name;
    float* y;
    bool activate = false;
  };
  void linears(std::initializer_list<Product> ps, const float* x, int64_t rows);
  void norm(const NormW& w, const float* x, float* y, int64_t rows) const;
  void rotate(float* x, int64_t rows, int64_t heads, int64_t ld, int64_t first_pos) const;
  // Where row r of a pass lives: its sequence's cache and its position there.
  struct RowPos {
    KvCache* cache;
    int64_t pos;
  };
  // The rows of one pass: every segment's tokens in order, each row's cache and position, and the
  // scratch the layers share.
  struct Pass {
    std::vector<int32_t> ids;    // [n] the tokens (empty for run_layer, which starts from h)
    std::vector<RowPos> rows;    // [n]
    std::vector<int64_t> first;  // [segments + 1] each segment's first row
    int64_t n() const { return int64_t(rows.size()); }
    // One segment's keys and values go straight into its cache rows; a batch's are computed for
    // all rows at once into kbuf / vbuf and then copied to each row's cache.
    bool direct() const { return first.size() == 2; }
    std::vector<float> x, tmp, q, attn, kbuf, vbuf, attn_copy;
  };
  // Checks every segment (cache shape and room, positions, token ids; one segment per cache) and
  // lays out its rows. Messages name the segment only in a batch.
  Pass plan(std::span<const BatchSegment> segments) const;
  std::vector<float> embed_rows(const Pass& p);
  void layer_forward(int64_t l, Pass& p, std::vector<float>& h);
  std::vector<float> run(std::span<const BatchSegment> segments, bool all_logits);
  void attention(const float* q, std::span<const RowPos> rows, int64_t layer, float* out) const;
  void mlp(const Layer& L, int64_t l, int64_t past, int64_t n, const float* x, const float* attn_in,
           float* h, float* out);

  const Model& model_;
  arch::ModelDesc cfg_;
  s24::Activation act_ = s24::Activation::ReLU;
  const Tensor* embed_tokens_ = nullptr;  // [vocab, word_embed_proj_dim]
  const Tensor* embed_pos_ =
      nullptr;                       // learned positions [max_position_embeddings + offset, hidden]
  const Tensor* lm_head_ = nullptr;  // [vocab, word_embed_proj_dim]
  std::optional<Linear> project_in_, project_out_;
  std::vector<float> inv_freq_;         // rotary: [rope dims / 2]
  float rope_attention_factor_ = 1.0f;  // yarn scales cos and sin
  NormW final_norm_;
  std::vector<Layer> layers_;
  LinearInputObserver observer_;
  FfnObserver ffn_observer_;
};

// Wanda calibration statistics: runs the model over `tokens` (one sequence, split into windows of
// at most max_position_embeddings tokens) and returns, for every decoder linear layer
// ("model.decoder.layers.3.fc1", ...), the L2 norm over all tokens of each input channel:
// norm[j] = sqrt(sum_t x[t, j]^2), one entry per in_feature.
std::map<std::string, std::vector<float>> collect_activation_norms(const Model& model,
                                                                   std::span<const int32_t> tokens);

}  // namespace sf::model
