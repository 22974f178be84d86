#include "core/dtype.h"

#include "core/error.h"

namespace farsight {

size_t dtype_bits(DType t) {
    switch (t) {
        case DType::F32: return 32;
        case DType::F16: return 16;
        case DType::BF16: return 16;
        case DType::F64: return 64;
        case DType::I8: return 8;
        case DType::I4: return 4;
        case DType::I32: return 32;
        case DType::I64: return 64;
        case DType::U8: return 8;
        case DType::BOOL: return 8;
    }
    return 0;
}

std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "f32";
        case DType::F16: return "f16";
        case DType::BF16: return "bf16";
        case DType::F64: return "f64";
        case DType::I8: return "i8";
        case DType::I4: return "i4";
        case DType::I32: return "i32";
        case DType::I64: return "i64";
        case DType::U8: return "u8";
        case DType::BOOL: return "bool";
    }
    return "?";
}

bool parse_dtype(std::string_view s, DType* out) {
    if (s == "f32" || s == "fp32" || s == "float32" || s == "float") *out = DType::F32;
    else if (s == "f16" || s == "fp16" || s == "float16" || s == "half") *out = DType::F16;
    else if (s == "bf16" || s == "bfloat16") *out = DType::BF16;
    else return false;
    return true;
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            u = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (absx >= 0x477ff000u) {                                             // overflow -> inf
        // 65520 and above round to inf
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (absx < 0x38800000u) {  // subnormal or zero in f16
        if (absx < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
        const uint32_t e = absx >> 23;  // 102..112
        const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;  // value = mant * 2^(e-150) = (mant >> shift) * 2^-24
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        uint32_t r = mant >> shift;
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return static_cast<uint16_t>(sign | r);
    }
    uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<uint16_t>(sign | (r >> 13));
}

void convert_to_f32(DType src_type, const void* src, float* dst, size_t n) {
    switch (src_type) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        // Loads go through memcpy: safetensors data need not be aligned.
        case DType::BF16: {
            const auto* s = static_cast<const unsigned char*>(src);
            for (size_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, s + 2 * i, 2);
                dst[i] = bf16_to_f32(h);
            }
            return;
        }
        case DType::F16: {
            const auto* s = static_cast<const unsigned char*>(src);
            for (size_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, s + 2 * i, 2);
                dst[i] = f16_to_f32(h);
            }
            return;
        }
        case DType::F64: {
            const auto* s = static_cast<const unsigned char*>(src);
            for (size_t i = 0; i < n; ++i) {
                double d;
                std::memcpy(&d, s + 8 * i, 8);
                dst[i] = static_cast<float>(d);
            }
            return;
        }
        default: fail("convert_to_f32: unsupported source dtype {}", dtype_name(src_type));
    }
}

void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n) {
    switch (dst_type) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::BF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
            return;
        }
        case DType::F16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
            return;
        }
        default: fail("convert_from_f32: unsupported target dtype {}", dtype_name(dst_type));
    }
}

}  // namespace farsight
