#pragma once
// Thin RAII wrapper over PCRE2 (8-bit, UTF + UCP, JIT) for the tokenizer's split patterns.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace farsight::tok {

class Regex {
  public:
    explicit Regex(const std::string& pattern);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends the [start, end) byte ranges of all non-overlapping, non-empty matches in s
    // (s must be valid UTF-8).
    void find_all(std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) const;
    const std::string& pattern() const { return pattern_; }

  private:
    struct Code;
    std::string pattern_;
    std::unique_ptr<Code> code_;
};

}  // namespace farsight::tok
