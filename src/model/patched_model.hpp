// A model with some of its dense tensors replaced by buffers the caller owns: a layer already
// pruned while the next one is calibrated (SparseGPT), or one linear pruned alone to measure what
// it costs (sensitivity). Everything else is shared with the source, which must outlive it.
#pragma once
#include <string>

#include "model/sparsegpt_model.hpp"
#include "model/weights.hpp"

namespace sf::model {

class PatchedModel : public Model {
 public:
  explicit PatchedModel(const Model& source) : Model(source), source_(source) {}
  // `w` must outlive this model (or the next replace/restore of `name`).
  void replace(const std::string& name, const PrunedWeight& w) {
    dense_[name] = Tensor{w.dtype, w.shape, w.values.data()};
  }
  // Back to the source's tensor.
  void restore(const std::string& name) { dense_[name] = source_.tensor(name); }

 private:
  const Model& source_;
};

}  // namespace sf::model
