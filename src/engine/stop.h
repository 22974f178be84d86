#pragma once
// Stop strings for streaming: text that could still be the start of a stop string is held back
// until it is disambiguated; on a match, the text before the stop string is released and
// generation ends (the stop string itself is not part of the output, as in the OpenAI API).
#include <string>
#include <vector>

namespace farsight {

class StopMatcher {
public:
    explicit StopMatcher(std::vector<std::string> stops);
    // Feeds newly decoded text; returns text safe to emit now.
    std::string push(const std::string& text);
    bool stopped() const { return stopped_; }
    // End of generation without a stop: whatever is still held back.
    std::string flush();

private:
    std::vector<std::string> stops_;
    std::string pending_;
    bool stopped_ = false;
};

}  // namespace farsight
