#pragma once
// Rotary position embeddings: inverse frequencies and attention scaling for every Hugging Face
// rope type, computed the way transformers computes them (float32 tensors, double scalars).
#include <cstdint>

#include "backend/backend.h"
#include "io/config.h"

namespace farsight {

int64_t rotary_dim(const ModelConfig& c);
// Frequencies for a sequence whose longest position in this step is seq_len - 1. Only
// "dynamic" and "longrope" depend on seq_len.
RopeFreqs rope_freqs(const ModelConfig& c, int64_t seq_len);
// True when rope_freqs depends on seq_len (dynamic NTK, longrope).
bool rope_depends_on_length(const ModelConfig& c);

}  // namespace farsight
