#pragma once
#include <cstdint>

namespace farsight {

// SplitMix64: a fast, well-mixed 64-bit generator step (advances s). Used to seed and to fill
// deterministic random data.
inline uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace farsight
