#pragma once
// A Jinja2 interpreter covering what Hugging Face chat templates use, configured the way
// transformers compiles chat templates: ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True, extensions=[loopcontrols, generation]) with transformers' tojson filter and
// its globals raise_exception, strftime_now, namespace and dict.
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace farsight::jinja {

struct Program;  // parsed template (AST)

struct RenderOptions {
    // The clock strftime_now() reads; nullopt = the current local time.
    std::optional<std::tm> now;
};

class Template {
public:
    // Parses `source`; throws TemplateError (with the line) on a syntax error.
    explicit Template(std::string_view source);
    ~Template();
    Template(Template&&) noexcept;
    Template& operator=(Template&&) noexcept;

    // Renders with the given top-level variables. Throws TemplateError (with the line) on a
    // runtime error or when the template calls raise_exception().
    std::string render(const std::vector<std::pair<std::string, Value>>& variables,
                       const RenderOptions& options = {}) const;

private:
    std::unique_ptr<Program> prog_;
};

}  // namespace farsight::jinja
