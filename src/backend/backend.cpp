// Defaults of the optional Backend ops: a backend that reports fused_decode() == false never
// gets the fused one-row decode calls.
#include "backend/backend.h"

#include "core/error.h"

namespace farsight {

// The unfused sequence: rotate q/k in place, then store k/v and attend.
void Backend::rope_attention(int64_t layer, Tensor& qkv, const AttnParams& p, Tensor& out) {
    rope(qkv, p);
    attention(layer, qkv, p, out);
}

// The unfused sequence: the gate and up products, then silu(gate) * up.
void Backend::linear_silu(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& gate_up,
                          Tensor& out) {
    linear(x, W, bias, gate_up);
    silu_mul(gate_up, out);
}

void Backend::norm_linear(const Tensor&, const Tensor&, float, const Tensor&, const Tensor*,
                          Tensor&) {
    fail("backend {}: norm_linear is not implemented (fused_decode() is false)", name());
}
void Backend::linear_residual(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
    fail("backend {}: linear_residual is not implemented (fused_decode() is false)", name());
}
void Backend::silu_linear_residual(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
    fail("backend {}: silu_linear_residual is not implemented (fused_decode() is false)", name());
}

}  // namespace farsight
