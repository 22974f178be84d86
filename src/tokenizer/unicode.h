#pragma once
// UTF-8 helpers and Unicode normalization (NFC/NFD/NFKC/NFKD, lowercase) used by the tokenizer.
#include <cstdint>
#include <string>
#include <string_view>

namespace farsight::unicode {

// Decodes the code point starting at s[i] (s must be valid UTF-8) and advances i.
inline uint32_t next_cp(std::string_view s, size_t& i) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
        ++i;
        return b;
    }
    auto cont = [&](size_t k) {
        return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
    };
    uint32_t cp;
    if (b < 0xE0) {
        cp = ((b & 0x1Fu) << 6) | cont(1);
        i += 2;
    } else if (b < 0xF0) {
        cp = ((b & 0x0Fu) << 12) | (cont(1) << 6) | cont(2);
        i += 3;
    } else {
        cp = ((b & 0x07u) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
        i += 4;
    }
    return cp;
}

// Length in bytes of the UTF-8 sequence that starts with lead byte b (1 for invalid leads).
inline size_t cp_len(unsigned char b) {
    if (b < 0xC0) return 1;
    if (b < 0xE0) return 2;
    if (b < 0xF0) return 3;
    return 4;
}

void append_utf8(std::string& out, uint32_t cp);

// True when s is well-formed UTF-8.
bool is_valid_utf8(std::string_view s);
// Replaces ill-formed sequences with U+FFFD, one per maximal ill-formed subpart (like Rust's
// String::from_utf8_lossy).
std::string utf8_lossy(std::string_view s);
// Number of bytes at the end of s that form an incomplete (but so far valid) UTF-8 sequence.
size_t incomplete_utf8_tail(std::string_view s);

enum class NormForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, NormForm form);
std::string to_lower(std::string_view s);

bool is_whitespace(uint32_t cp);  // Unicode White_Space (Rust char::is_whitespace)
bool is_alphanumeric(uint32_t cp);

}  // namespace farsight::unicode
