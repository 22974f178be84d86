#pragma once
// Errors: every failure a user can cause is reported as farsight::Error with a message that
// names the file/object involved and what to do about it.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace farsight {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}

#define FS_CHECK(cond, ...)                          \
    do {                                             \
        if (!(cond)) ::farsight::fail(__VA_ARGS__);  \
    } while (0)

}  // namespace farsight
