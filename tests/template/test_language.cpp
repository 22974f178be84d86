// Jinja language features: hand-derived expectations (tests/fixtures/template/features.json,
// cross-checked against python jinja2 by tools/make_template_feature_cases.py) and error
// reporting with template line numbers.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"

using farsight::ChatTemplate;
using farsight::ChatTemplateInputs;
using ojson = nlohmann::ordered_json;
namespace jinja = farsight::jinja;

namespace {

std::tm fixed_now() {
    std::tm tm{};
    tm.tm_year = 125;
    tm.tm_mon = 2;
    tm.tm_mday = 14;
    tm.tm_hour = 9;
    tm.tm_min = 26;
    tm.tm_sec = 53;
    tm.tm_wday = 5;
    tm.tm_yday = 72;
    return tm;
}

std::string render(const std::string& tmpl, const ojson& vars = ojson::object()) {
    jinja::Template t(tmpl);
    std::vector<std::pair<std::string, jinja::Value>> v;
    for (const auto& [k, x] : vars.items()) v.emplace_back(k, jinja::from_json(x));
    jinja::RenderOptions opts;
    opts.now = fixed_now();
    return t.render(v, opts);
}

// The message of the farsight::Error that rendering `tmpl` through ChatTemplate throws.
std::string chat_error(const std::string& tmpl, const ojson& messages = ojson::array()) {
    try {
        ChatTemplate t(tmpl);
        ChatTemplateInputs in;
        in.messages = messages;
        t.render(in);
    } catch (const farsight::Error& e) {
        return e.what();
    }
    return "<no error>";
}

}  // namespace

TEST(JinjaFeatures, HandDerivedCases) {
    std::ifstream f(std::string(FARSIGHT_FIXTURES_DIR) + "/template/features.json");
    ASSERT_TRUE(f.good());
    std::stringstream ss;
    ss << f.rdbuf();
    ojson doc = ojson::parse(ss.str());
    ASSERT_GE(doc["cases"].size(), 50u);
    for (const auto& c : doc["cases"]) {
        SCOPED_TRACE(c["name"].get<std::string>());
        try {
            EXPECT_EQ(render(c["template"], c["variables"]), c["expected"].get<std::string>());
        } catch (const std::exception& e) {
            ADD_FAILURE() << "threw: " << e.what();
        }
    }
}

TEST(JinjaFeatures, ToolsNoneAndDocumentsDefinedLikeTransformers) {
    ChatTemplate t("{{ tools is defined }} {{ tools is none }} {{ documents is none }} "
                   "{{ add_generation_prompt }} {{ bos_token }}{{ eos_token }} {{ x }}");
    ChatTemplateInputs in;
    in.bos_token = "<s>";
    in.eos_token = "</s>";
    in.extra = {{"x", 3}, {"bos_token", "<B>"}};
    EXPECT_EQ(t.render(in), "True True True True <B></s> 3");
    in.tools = ojson::array({{{"type", "function"}}});
    in.add_generation_prompt = false;
    EXPECT_EQ(t.render(in), "True False True False <B></s> 3");
}

TEST(JinjaFeatures, KeyOrderOfInputsIsKept) {
    ChatTemplate t("{{ messages[0] | tojson }}");
    ChatTemplateInputs in;
    in.messages = ojson::parse(R"([{"role": "user", "content": "c", "a": 1}])");
    EXPECT_EQ(t.render(in), R"({"role": "user", "content": "c", "a": 1})");
}

TEST(JinjaErrors, SyntaxErrorsNameTheLine) {
    std::string e = chat_error("line1\n{% if x %}\n{{ 1 + }}\n{% endif %}");
    EXPECT_NE(e.find("line 3"), std::string::npos) << e;
    e = chat_error("a\n{% for x in y %}\nb");
    EXPECT_NE(e.find("line 2"), std::string::npos) << e;
    EXPECT_NE(e.find("endfor"), std::string::npos) << e;
    e = chat_error("x\n\n{{ 1 | nofilter }}");
    EXPECT_NE(e.find("line 3"), std::string::npos) << e;
    EXPECT_NE(e.find("no filter named 'nofilter'"), std::string::npos) << e;
    e = chat_error("{% if true %}\n{% endfor %}");
    EXPECT_NE(e.find("line 2"), std::string::npos) << e;
    e = chat_error("{{ 'abc }}");
    EXPECT_NE(e.find("unterminated string"), std::string::npos) << e;
    e = chat_error("ok\n{% include 'x' %}");
    EXPECT_NE(e.find("line 2"), std::string::npos) << e;
    EXPECT_NE(e.find("include"), std::string::npos) << e;
}

TEST(JinjaErrors, RuntimeErrorsNameTheLine) {
    std::string e = chat_error("a\nb\n{{ x.y.z }}");
    EXPECT_NE(e.find("line 3"), std::string::npos) << e;
    EXPECT_NE(e.find("'x' is undefined"), std::string::npos) << e;
    e = chat_error("{% for m in messages %}\n\n{{ m.content + 1 }}{% endfor %}",
                   ojson::parse(R"([{"role": "user", "content": "hi"}])"));
    EXPECT_NE(e.find("line 3"), std::string::npos) << e;
    EXPECT_NE(e.find("'str' and 'int'"), std::string::npos) << e;
    e = chat_error("{{ messages[0]['role'] }}");  // empty conversation
    EXPECT_NE(e.find("line 1"), std::string::npos) << e;
    e = chat_error("{% set ns = 3 %}\n{% set ns.x = 1 %}");
    EXPECT_NE(e.find("line 2"), std::string::npos) << e;
    EXPECT_NE(e.find("namespace"), std::string::npos) << e;
    e = chat_error("{{ [1, 2].append(3) }}");
    EXPECT_NE(e.find("not allowed"), std::string::npos) << e;
}

TEST(JinjaErrors, RaiseExceptionCarriesMessageAndLine) {
    std::string e = chat_error("{% if true %}\n  {{ raise_exception('Bad roles!') }}\n{% endif %}");
    EXPECT_NE(e.find("raised an exception at line 2: Bad roles!"), std::string::npos) << e;

    // A real template: Mistral v0.3 rejects non-alternating roles.
    auto src = farsight::find_chat_template(std::string(FARSIGHT_SHARED_DIR) +
                                            "/tokenizers/mistral-v0.3");
    ASSERT_TRUE(src.has_value());
    e = chat_error(*src, ojson::parse(R"([{"role": "user", "content": "a"},
                                          {"role": "user", "content": "b"}])"));
    EXPECT_NE(e.find("conversation roles must alternate user/assistant/user/assistant"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find("line 18"), std::string::npos) << e;
}

TEST(JinjaValues, PythonFloatRepr) {
    EXPECT_EQ(jinja::py_float_repr(0.1), "0.1");
    EXPECT_EQ(jinja::py_float_repr(1.0), "1.0");
    EXPECT_EQ(jinja::py_float_repr(1e16), "1e+16");
    EXPECT_EQ(jinja::py_float_repr(123456789012345.6), "123456789012345.6");
    EXPECT_EQ(jinja::py_float_repr(1e-5), "1e-05");
    EXPECT_EQ(jinja::py_float_repr(0.0001), "0.0001");
    EXPECT_EQ(jinja::py_float_repr(-2.5e-7), "-2.5e-07");
    EXPECT_EQ(jinja::py_float_repr(5e-324), "5e-324");
    EXPECT_EQ(jinja::py_float_repr(1.7976931348623157e308), "1.7976931348623157e+308");
}
