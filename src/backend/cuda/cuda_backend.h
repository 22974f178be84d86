#pragma once
// Public face of the CUDA backend. Includes no CUDA headers, so CPU-only code (the CLI's
// `farsight bench`, tests) can include it; the definitions live in src/backend/cuda/*.cu and
// exist only in builds with FARSIGHT_HAVE_CUDA.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace farsight {

// Peak figures of the current CUDA device, measured (not looked up).
struct DeviceRoofline {
    double copy_gbps = 0;         // device-to-device copy, bytes read + written per second / 1e9
    double bf16_gemm_tflops = 0;  // 8192^3 bf16 GEMM (fp32 accumulate) through cuBLASLt
    std::string device_name;
    size_t total_mem = 0;
};

// Runs on device 0 (or `device`); takes about a second. Throws Error without a CUDA device.
DeviceRoofline measure_device_roofline(int device = 0);

// Recorded-step (CUDA graph) counters of a CUDA backend (zeros for other backends): steps
// replayed from a graph, and graphs recorded. FARSIGHT_CUDA_GRAPHS=0 turns recording off.
struct CudaGraphStats {
    int64_t replays = 0;
    int64_t captures = 0;
};
CudaGraphStats cuda_graph_stats(const Backend& backend);


}  // namespace farsight
