// Defaults of the optional Backend ops: a backend that reports fused_decode() == false never
// gets these calls.
#include "backend/backend.h"

#include "core/error.h"

namespace farsight {

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
