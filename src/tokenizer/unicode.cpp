#include "tokenizer/unicode.h"

#include <algorithm>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace farsight::unicode {

namespace ut = unicode_tables;

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when ill-formed; *sub receives the length of
// the maximal ill-formed subpart (>= 1) in that case.
size_t valid_seq_len(std::string_view s, size_t i, size_t* sub) {
    auto b0 = static_cast<unsigned char>(s[i]);
    *sub = 1;
    if (b0 < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t k = 1; k < n; ++k) {
        if (i + k >= s.size()) {
            *sub = k;
            return 0;
        }
        auto b = static_cast<unsigned char>(s[i + k]);
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) {
            *sub = k;
            return 0;
        }
    }
    return n;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
    size_t i = 0, sub = 0;
    while (i < s.size()) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        size_t n = valid_seq_len(s, i, &sub);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string utf8_lossy(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0, sub = 0;
    while (i < s.size()) {
        size_t n = valid_seq_len(s, i, &sub);
        if (n == 0) {
            out += "\xEF\xBF\xBD";
            i += sub;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

size_t incomplete_utf8_tail(std::string_view s) {
    // Look back at most 3 bytes for a lead byte whose sequence is cut short.
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        auto b = static_cast<unsigned char>(s[s.size() - back]);
        if ((b & 0xC0) == 0x80) continue;  // continuation byte
        if (b < 0xC0) return 0;
        size_t need = cp_len(b);
        if (need <= back) return 0;
        size_t sub = 0;
        // Incomplete only if what is there is a valid prefix.
        valid_seq_len(s, s.size() - back, &sub);
        return sub == back ? back : 0;
    }
    return 0;
}

namespace {

constexpr uint32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
constexpr uint32_t LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount,
                   SCount = LCount * NCount;

uint8_t ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    const uint32_t* b = ut::kCombiningClass;
    const uint32_t* e = b + ut::kCombiningClassCount;
    const uint32_t* it = std::lower_bound(b, e, cp << 8);
    if (it != e && (*it >> 8) == cp) return static_cast<uint8_t>(*it & 0xFF);
    return 0;
}

const ut::DecompEntry* find_entry(const ut::DecompEntry* b, size_t n, uint32_t cp) {
    const ut::DecompEntry* e = b + n;
    const ut::DecompEntry* it =
        std::lower_bound(b, e, cp, [](const ut::DecompEntry& d, uint32_t c) { return d.cp < c; });
    return (it != e && it->cp == cp) ? it : nullptr;
}

void decompose(uint32_t cp, bool compat, std::vector<uint32_t>& out) {
    if (cp >= SBase && cp < SBase + SCount) {
        uint32_t s = cp - SBase;
        out.push_back(LBase + s / NCount);
        out.push_back(VBase + (s % NCount) / TCount);
        if (s % TCount) out.push_back(TBase + s % TCount);
        return;
    }
    const ut::DecompEntry* d = cp < 0xA0 ? nullptr : find_entry(ut::kDecomp, ut::kDecompCount, cp);
    if (!d || (d->compat && !compat)) {
        out.push_back(cp);
        return;
    }
    for (uint32_t k = 0; k < d->len; ++k) decompose(ut::kDecompData[d->offset + k], compat, out);
}

uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
        return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
    if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase &&
        b < TBase + TCount)
        return a + (b - TBase);
    uint64_t key = (static_cast<uint64_t>(a) << 21) | b;
    const ut::CompEntry* e = ut::kComp + ut::kCompCount;
    const ut::CompEntry* it = std::lower_bound(
        ut::kComp, e, key, [](const ut::CompEntry& c, uint64_t k) { return c.key < k; });
    return (it != e && it->key == key) ? it->composite : 0;
}

}  // namespace

std::string normalize(std::string_view s, NormForm form) {
    bool ascii = std::all_of(s.begin(), s.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) return std::string(s);
    bool compat = form == NormForm::NFKC || form == NormForm::NFKD;
    bool compose = form == NormForm::NFC || form == NormForm::NFKC;
    std::vector<uint32_t> cps;
    cps.reserve(s.size());
    for (size_t i = 0; i < s.size();) decompose(next_cp(s, i), compat, cps);
    // Canonical ordering: stable sort each run of non-starters by combining class.
    for (size_t i = 0; i < cps.size();) {
        if (ccc(cps[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < cps.size() && ccc(cps[j]) != 0) ++j;
        std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i),
                         cps.begin() + static_cast<std::ptrdiff_t>(j),
                         [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
        i = j;
    }
    if (compose && !cps.empty()) {
        // Canonical composition algorithm (UAX #15).
        size_t starter = 0;
        bool have_starter = ccc(cps[0]) == 0;
        size_t w = 1;
        int last_cc = have_starter ? 0 : 256;
        for (size_t r = 1; r < cps.size(); ++r) {
            uint32_t c = cps[r];
            int cc = ccc(c);
            if (have_starter && (last_cc < cc || (last_cc == 0 && w == starter + 1))) {
                uint32_t comp = compose_pair(cps[starter], c);
                if (comp) {
                    cps[starter] = comp;
                    continue;
                }
            }
            if (cc == 0) {
                starter = w;
                have_starter = true;
            }
            last_cc = cc;
            cps[w++] = c;
        }
        cps.resize(w);
    }
    std::string out;
    out.reserve(s.size() + 8);
    for (uint32_t c : cps) append_utf8(out, c);
    return out;
}

std::string to_lower(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        auto b = static_cast<unsigned char>(s[i]);
        if (b < 0x80) {
            out.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
            ++i;
            continue;
        }
        uint32_t cp = next_cp(s, i);
        const ut::DecompEntry* d = find_entry(ut::kLower, ut::kLowerCount, cp);
        if (!d) {
            append_utf8(out, cp);
            continue;
        }
        for (uint32_t k = 0; k < d->len; ++k) append_utf8(out, ut::kLowerData[d->offset + k]);
    }
    return out;
}

bool is_whitespace(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

bool is_alphanumeric(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 32) >= 'a' && (cp | 32) <= 'z');
    const ut::Range* e = ut::kAlnum + ut::kAlnumCount;
    const ut::Range* it = std::upper_bound(ut::kAlnum, e, cp,
                                           [](uint32_t c, const ut::Range& r) { return c < r.lo; });
    if (it == ut::kAlnum) return false;
    --it;
    return cp <= it->hi;
}

}  // namespace farsight::unicode
