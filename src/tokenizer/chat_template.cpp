#include "tokenizer/chat_template.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/jinja.h"

namespace farsight {

namespace {

std::string describe(const jinja::TemplateError& e) {
    std::string where = e.line > 0 ? fmt::format(" at line {}", e.line) : "";
    if (e.raised) return fmt::format("chat template raised an exception{}: {}", where, e.what());
    return fmt::format("chat template error{}: {}", where, e.what());
}

std::string read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    FS_CHECK(f.good(), "cannot open {}", p.string());
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source) : source_(std::move(source)) {
    try {
        tmpl_ = std::make_unique<jinja::Template>(source_);
    } catch (const jinja::TemplateError& e) {
        fail("{} (syntax)", describe(e));
    }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const ChatTemplateInputs& in) const {
    FS_CHECK(in.messages.is_array(), "chat template inputs: messages must be a JSON array, got {}",
             in.messages.type_name());
    FS_CHECK(in.extra.is_null() || in.extra.is_object(),
             "chat template inputs: extra must be a JSON object, got {}", in.extra.type_name());
    std::vector<std::pair<std::string, jinja::Value>> vars;
    vars.emplace_back("messages", jinja::from_json(in.messages));
    vars.emplace_back("tools", jinja::from_json(in.tools));
    vars.emplace_back("documents", jinja::Value::none());
    vars.emplace_back("add_generation_prompt", jinja::Value::boolean(in.add_generation_prompt));
    vars.emplace_back("bos_token", jinja::Value::string(in.bos_token));
    vars.emplace_back("eos_token", jinja::Value::string(in.eos_token));
    if (in.extra.is_object())
        for (const auto& [k, v] : in.extra.items()) vars.emplace_back(k, jinja::from_json(v));
    jinja::RenderOptions opts;
    opts.now = in.now;
    try {
        return tmpl_->render(vars, opts);
    } catch (const jinja::TemplateError& e) {
        fail("{}", describe(e));
    }
}

std::optional<std::string> find_chat_template(const std::filesystem::path& model_dir) {
    namespace fs = std::filesystem;
    if (fs::exists(model_dir / "chat_template.jinja"))
        return read_file(model_dir / "chat_template.jinja");
    auto template_from = [](const nlohmann::json& ct,
                            const fs::path& file) -> std::optional<std::string> {
        if (ct.is_string()) return ct.get<std::string>();
        if (ct.is_array()) {
            for (const auto& t : ct) {
                FS_CHECK(t.is_object() && t.contains("name") && t.contains("template"),
                         "{}: chat_template list entries must be {{name, template}} objects",
                         file.string());
                if (t["name"] == "default") return t["template"].get<std::string>();
            }
            return std::nullopt;
        }
        FS_CHECK(ct.is_null(), "{}: chat_template must be a string or a list, got {}",
                 file.string(), ct.type_name());
        return std::nullopt;
    };
    for (const char* name : {"chat_template.json", "tokenizer_config.json"}) {
        fs::path p = model_dir / name;
        if (!fs::exists(p)) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(read_file(p));
        } catch (const nlohmann::json::exception& e) {
            fail("{}: invalid JSON ({})", p.string(), e.what());
        }
        if (j.is_object() && j.contains("chat_template")) {
            if (auto t = template_from(j["chat_template"], p)) return t;
        }
    }
    return std::nullopt;
}

}  // namespace farsight
