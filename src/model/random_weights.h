#pragma once
// Deterministic random weights for any config (like vLLM's dummy load format): benchmarking real
// shapes without files. Tensor values depend only on (seed, tensor name).
#include <cstdint>
#include <memory>

#include "io/config.h"
#include "io/safetensors.h"

namespace farsight {

// dtype: storage type of the matrices (norm weights are stored the same way).
std::unique_ptr<WeightSource> make_random_weights(const ModelConfig& cfg, DType dtype,
                                                  uint64_t seed = 0);

}  // namespace farsight
