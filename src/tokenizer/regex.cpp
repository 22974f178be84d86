#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "core/error.h"

namespace farsight::tok {

struct Regex::Code {
    pcre2_code* code = nullptr;
    bool jit = false;
    ~Code() { pcre2_code_free(code); }
};

namespace {

// Per-thread JIT stack and match data, reused across calls.
struct ThreadState {
    pcre2_jit_stack* stack = nullptr;
    pcre2_match_context* mctx = nullptr;
    pcre2_match_data* md = nullptr;
    ThreadState() {
        stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
        mctx = pcre2_match_context_create(nullptr);
        if (stack && mctx) pcre2_jit_stack_assign(mctx, nullptr, stack);
        md = pcre2_match_data_create(4, nullptr);
    }
    ~ThreadState() {
        pcre2_match_data_free(md);
        pcre2_match_context_free(mctx);
        pcre2_jit_stack_free(stack);
    }
    ThreadState(const ThreadState&) = delete;
    ThreadState& operator=(const ThreadState&) = delete;
};

ThreadState& thread_state() {
    thread_local ThreadState ts;
    return ts;
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern), code_(std::make_unique<Code>()) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (!code_->code) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(err, buf, sizeof(buf));
        fail("tokenizer regex {:?} does not compile (at offset {}): {}", pattern, off,
             reinterpret_cast<const char*>(buf));
    }
    code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
    ThreadState& ts = thread_state();
    auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
        int rc;
        if (code_->jit) {
            rc = pcre2_jit_match(code_->code, subject, s.size(), pos, 0, ts.md, ts.mctx);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match(code_->code, subject, s.size(), pos,
                                 PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, ts.md, nullptr);
        } else {
            rc = pcre2_match(code_->code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, ts.md,
                             nullptr);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR buf[256];
            pcre2_get_error_message(rc, buf, sizeof(buf));
            fail("tokenizer regex {:?} failed on a {}-byte input: {}", pattern_, s.size(),
                 reinterpret_cast<const char*>(buf));
        }
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.md);
        size_t b = ov[0], e = ov[1];
        if (e > b) {
            out.emplace_back(static_cast<uint32_t>(b), static_cast<uint32_t>(e));
            pos = e;
        } else {
            // Empty match: step over one character.
            if (b >= s.size()) break;
            pos = b + 1;
            while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
        }
    }
}

}  // namespace farsight::tok
