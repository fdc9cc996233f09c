// The FFN of one layer computed on the CPU from neuron bundles (format/neuron_bundles.hpp), the way
// the CPU backend runs a neuron-major model and the `cpu` offload policy computes cold neurons.
//
// fc1 is read through the bundles as a matrix of `stride`-byte rows against x zero-padded to the
// bundle width, so it goes through s24::gemm_dense_cpu and every pre-activation is bit-identical to
// the row-major path (hidden % 16 == 0, i.e. every OPT shape: the extra columns only add exact
// zeros). fc2 touches only the bundles whose activation is nonzero, accumulating in the same 16
// lanes by neuron index mod 16 and the same horizontal order as gemm_dense_cpu's dot product, so
// with the identity neuron order the layer output is bit-identical too. A hotness-permuted file
// sums the same terms in another order (fp32 rounding differences only; docs/OFFLOAD.md).
#pragma once
#include <cstdint>

#include "core/dtype.hpp"
#include "model/weights.hpp"

namespace sf::model {

// z [rows, ffn] = x [rows, hidden] W1^T + b1 (fp32; no activation). b1 [ffn] fp32 (the bundles'
// biases, widened once by the caller) or null.
void bundles_fc1_cpu(const NeuronMajorFfn& nm, const float* b1, const float* x, int64_t rows,
                     float* z);

// y [rows, hidden] = sum over b with h[r, b] != 0 of h[r, b] * fc2_col(b)  (+ b2) (+ residual).
// h [rows, ffn] is the activation output; b2 [hidden] of b2_dtype or null; residual [rows, hidden]
// fp32 or null. y must not alias h.
void bundles_fc2_cpu(const NeuronMajorFfn& nm, const float* h, int64_t rows, const void* b2,
                     DType b2_dtype, const float* residual, float* y);

}  // namespace sf::model
