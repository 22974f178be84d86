// Stubs used when farsight is built without the CUDA backend.
#ifndef FARSIGHT_HAVE_CUDA
#include "backend/backend.h"
#include "core/error.h"

namespace farsight {
std::unique_ptr<Backend> make_cuda_backend(int) {
    fail("this farsight was built without CUDA support (nvcc was not found at build time); "
         "use --device cpu or rebuild with the CUDA toolkit installed");
}
std::unique_ptr<Backend> make_cuda_backend_with(int device, DType) { return make_cuda_backend(device); }
bool cuda_available() { return false; }
}  // namespace farsight
#endif
