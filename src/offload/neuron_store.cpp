#include "offload/neuron_store.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.hpp"
#include "model/weights.hpp"

namespace sf::offload {

namespace {

std::shared_ptr<void> aligned_buffer(uint64_t bytes) {
  const uint64_t size = std::max<uint64_t>(4096, (bytes + 4095) / 4096 * 4096);
  void* p = std::aligned_alloc(4096, size);
  if (!p)
    fail(Status::OutOfMemory, "cannot allocate {} bytes of host memory for neuron bundles", size);
  std::memset(p, 0, size);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

const model::Tensor* find_f32(const model::Model& m, const std::string& name,
                              std::vector<int64_t> shape) {
  const model::Tensor* t = m.find(name);
  if (!t) return nullptr;
  if (t->dtype != DType::F32 || t->shape != shape)
    fail(Status::Format, "'{}' should be F32 [{}], found {} with {} dims", name,
         fmt::join(shape, ", "), dtype_name(t->dtype), t->shape.size());
  return t;
}

}  // namespace

uint64_t PredictorLayer::bytes() const {
  uint64_t b = 0;
  for (const model::Tensor* t : {u, v, threshold})
    if (t) b += uint64_t(t->numel()) * dtype_size(t->dtype);
  return b;
}

uint64_t NeuronStore::bundle_bytes() const {
  uint64_t b = 0;
  for (const auto& l : layers_) b += l.bytes();
  return b;
}

std::vector<int32_t> NeuronStore::hottest(int64_t layer, int64_t count) const {
  const NeuronLayer& L = layers_.at(size_t(layer));
  count = std::clamp<int64_t>(count, 0, L.ffn);
  if (!L.firing_rate || hotness_ordered_) {
    std::vector<int32_t> v(static_cast<size_t>(count));
    std::iota(v.begin(), v.end(), 0);
    return v;
  }
  auto order = hotness_order({L.firing_rate, size_t(L.ffn)});
  order.resize(size_t(count));
  return order;
}

NeuronStore NeuronStore::from_model(const model::Model& m, bool pack_row_major) {
  const auto& c = m.config();
  if (m.is_sparse())
    fail(Status::UnsupportedShape,
         "this model is 2:4-compressed; neuron bundles are dense only in this build "
         "(ffn_neurons_s24 is specified "
         "in docs/FORMAT.md but not implemented). Offload the dense checkpoint, converted with "
         "--neuron-major.");
  NeuronStore s;
  s.ffn_ = c.ffn_dim;
  s.hidden_ = c.hidden_size;
  s.mapped_ = m.is_neuron_major();
  s.layout_ = BundleLayout::make(c.hidden_size, m.dtype());
  s.layers_.resize(size_t(c.num_hidden_layers));
  s.has_profile_ = true;
  s.hotness_ordered_ = true;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    NeuronLayer& L = s.layers_[size_t(l)];
    L.ffn = c.ffn_dim;
    const std::string p = fmt::format("model.decoder.layers.{}.", l);
    if (const model::NeuronMajorFfn* nm = m.ffn_neurons(l)) {
      L.layout = BundleLayout::make(nm->hidden, nm->dtype);
      L.bundles = nm->bundles;
      L.neuron_order = nm->order;
    } else {
      if (s.mapped_)
        fail(Status::Format,
             "layer {} is row-major while other layers are neuron-major; convert the model again",
             l);
      if (!pack_row_major)
        fail(Status::UnsupportedShape,
             "the model's FFN is row-major (fc1/fc2); convert it with `sparseflow convert "
             "--neuron-major` to offload it from the file, or let the engine pack it in host "
             "memory");
      const model::Tensor& w1 = m.tensor(p + "fc1.weight");
      const model::Tensor& w2 = m.tensor(p + "fc2.weight");
      const model::Tensor* b1 = m.find(p + "fc1.bias");
      if (w1.dtype != m.dtype() || w2.dtype != m.dtype() || (b1 && b1->dtype != m.dtype()))
        fail(Status::UnsupportedShape,
             "layer {}: fc1/fc2 weights and bias must share one dtype to be bundled", l);
      L.layout = BundleLayout::make(c.hidden_size, m.dtype());
      auto buf = aligned_buffer(uint64_t(L.ffn) * L.layout.stride);
      pack_bundles(L.layout, L.ffn, w1.data, b1 ? b1->data : nullptr, w2.data, {},
                   static_cast<uint8_t*>(buf.get()));
      L.bundles = static_cast<const uint8_t*>(buf.get());
      s.owned_.push_back(buf);
      auto ord = std::make_shared<std::vector<int32_t>>(size_t(L.ffn));
      std::iota(ord->begin(), ord->end(), 0);
      L.neuron_order = ord->data();
      s.owned_.push_back(ord);
    }
    if (const model::Tensor* b2 = m.find(p + "fc2.bias")) {
      if (b2->dtype == L.layout.dtype) {
        L.fc2_bias = b2->data;
      } else {
        auto buf =
            std::make_shared<std::vector<uint8_t>>(model::convert_elements(*b2, L.layout.dtype));
        L.fc2_bias = buf->data();
        s.owned_.push_back(buf);
      }
    }
    if (const model::Tensor* r = find_f32(m, firing_rate_name(l), {L.ffn})) {
      L.firing_rate = static_cast<const float*>(r->data);
      for (int64_t b = 1; b < L.ffn && s.hotness_ordered_; ++b)
        if (L.firing_rate[b] > L.firing_rate[b - 1]) s.hotness_ordered_ = false;
    } else {
      s.has_profile_ = false;
    }
  }
  if (!s.has_profile_) s.hotness_ordered_ = false;

  // Predictors: all layers or none.
  std::vector<PredictorLayer> preds;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    PredictorLayer P;
    P.u = m.find(predictor_name(l, "u"));
    P.v = m.find(predictor_name(l, "v"));
    P.threshold = m.find(predictor_name(l, "threshold"));
    if (!P.u || !P.v || !P.threshold) break;
    if (P.u->shape.size() != 2 || P.u->shape[0] != c.hidden_size || P.v->shape.size() != 2 ||
        P.v->shape[0] != P.u->shape[1] || P.v->shape[1] != c.ffn_dim ||
        P.threshold->dtype != DType::F32 || P.threshold->shape != std::vector<int64_t>{c.ffn_dim})
      fail(Status::Format,
           "predictor of layer {} has the wrong shapes: expected u [{}, R], v [R, {}], threshold "
           "F32 [{}]",
           l, c.hidden_size, c.ffn_dim, c.ffn_dim);
    P.rank = P.u->shape[1];
    P.hidden = c.hidden_size;
    P.ffn = c.ffn_dim;
    preds.push_back(P);
  }
  if (int64_t(preds.size()) == c.num_hidden_layers) {
    s.predictors_ = std::move(preds);
    const auto& md = m.metadata();
    PredictorInfo& I = s.predictor_info_;
    I.kind = md.value("predictor.kind", std::string("lowrank"));
    I.rank = md.value("predictor.rank", int64_t(s.predictors_[0].rank));
    I.recall = md.value("predictor.recall", 0.0);
    I.precision = md.value("predictor.precision", 0.0);
    I.predicted_fraction = md.value("predictor.predicted_fraction", 0.0);
    for (const auto& P : s.predictors_) I.bytes += P.bytes();
  }
  return s;
}

}  // namespace sf::offload
