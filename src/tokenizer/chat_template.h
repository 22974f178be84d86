#pragma once
// Chat templates: renders a Hugging Face chat template (Jinja) exactly like transformers'
// tokenizer.apply_chat_template(messages, tokenize=False, ...).
#include <nlohmann/json.hpp>

#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace farsight {

namespace jinja {
class Template;
}

struct ChatTemplateInputs {
    // JSON values keep their key order (ordered_json): templates print dicts with tojson, and
    // transformers prints keys in insertion order. A plain nlohmann::json converts implicitly
    // (its keys are then sorted).
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    nlohmann::ordered_json tools;  // null if none (the template then sees tools = none)
    bool add_generation_prompt = true;
    std::string bos_token, eos_token;
    // Other template variables, as an object (e.g. {"enable_thinking": false,
    // "date_string": "26 Jul 2024"}); they override the variables above, like transformers'
    // **kwargs.
    nlohmann::ordered_json extra;
    // The clock strftime_now() reads; nullopt = the current local time.
    std::optional<std::tm> now;
};

class ChatTemplate {
public:
    // Parses the template; throws Error (naming the template line) on a syntax error.
    explicit ChatTemplate(std::string source);
    ~ChatTemplate();
    ChatTemplate(ChatTemplate&&) noexcept;
    ChatTemplate& operator=(ChatTemplate&&) noexcept;

    // Throws Error naming the template line on a runtime error or raise_exception().
    std::string render(const ChatTemplateInputs& inputs) const;

    const std::string& source() const { return source_; }

private:
    std::string source_;
    std::unique_ptr<jinja::Template> tmpl_;
};

// Finds the chat template of a model folder: chat_template.jinja beside tokenizer_config.json,
// else chat_template.json's "chat_template", else tokenizer_config.json's "chat_template" (a
// string, or a list of {name, template} from which the "default" one is taken). nullopt if none.
std::optional<std::string> find_chat_template(const std::filesystem::path& model_dir);

}  // namespace farsight
