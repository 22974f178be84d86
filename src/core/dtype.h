#pragma once
// Element types and scalar conversions (bit-exact round-to-nearest-even like PyTorch).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace farsight {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, I4, I32, I64, U8, BOOL };

size_t dtype_bits(DType t);
inline size_t dtype_size(DType t) { return dtype_bits(t) / 8; }
std::string_view dtype_name(DType t);            // "f32", "bf16", ...
bool parse_dtype(std::string_view s, DType* out);  // accepts f32/float32/fp32, bf16/bfloat16, f16/fp16/float16

inline float bf16_to_f32(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Convert n elements of a stored dtype (F32/F16/BF16/F64) to float.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);
// Convert n floats to F32/F16/BF16.
void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace farsight
