// Chat templates rendered against independent references: transformers' apply_chat_template
// (tests/fixtures/template/hf_renders.json, made by tools/make_template_fixtures.py) and the
// TGI / python-jinja2 cases in ../shared/testdata/chat_template_cases.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/chat_template.h"

namespace fs = std::filesystem;
using farsight::ChatTemplate;
using farsight::ChatTemplateInputs;
using ojson = nlohmann::ordered_json;

namespace {

const fs::path kShared = FARSIGHT_SHARED_DIR;
const fs::path kFixtures = FARSIGHT_FIXTURES_DIR;

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    EXPECT_TRUE(f.good()) << "cannot open " << p;
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::tm fixed_now() {
    // 2025-03-14T09:26:53, the clock the fixtures were rendered with.
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

}  // namespace

TEST(HfRenders, AllTemplatesMatchTransformers) {
    ojson doc = ojson::parse(slurp(kFixtures / "template" / "hf_renders.json"));
    ASSERT_EQ(doc["now"], "2025-03-14T09:26:53");
    const auto& cases = doc["cases"];
    ASSERT_GE(cases.size(), 70u);
    std::set<std::string> templates;
    size_t passed = 0;
    for (const auto& c : cases) {
        const std::string name = c["name"];
        SCOPED_TRACE(name);
        std::string source;
        if (c["model_dir"].is_string()) {
            auto found = farsight::find_chat_template(kShared / c["model_dir"].get<std::string>());
            ASSERT_TRUE(found.has_value());
            source = *found;
            templates.insert(c["model_dir"]);
        } else {
            source = slurp(kShared / c["template_file"].get<std::string>());
            templates.insert(c["template_file"]);
        }
        ChatTemplate t(source);
        ChatTemplateInputs in;
        in.messages = c["messages"];
        in.tools = c["tools"];
        in.add_generation_prompt = c["add_generation_prompt"];
        in.bos_token = c["bos_token"].is_string() ? c["bos_token"].get<std::string>() : "";
        in.eos_token = c["eos_token"].is_string() ? c["eos_token"].get<std::string>() : "";
        in.extra = c["extra"];
        in.now = fixed_now();
        std::string got;
        try {
            got = t.render(in);
        } catch (const std::exception& e) {
            ADD_FAILURE() << e.what();
            continue;
        }
        EXPECT_EQ(got, c["expected"].get<std::string>());
        passed += got == c["expected"].get<std::string>();
    }
    // Every template in the shared folders is covered.
    EXPECT_EQ(templates.size(), 8u + 4u);
    std::cout << "[ hf renders ] " << passed << "/" << cases.size() << " cases identical to transformers "
              << doc["transformers"] << "\n";
}

TEST(SharedCases, RenderLikeJinja2AndTgi) {
    ojson cases = ojson::parse(slurp(kShared / "testdata" / "chat_template_cases.json"));
    ASSERT_FALSE(cases.empty());
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        ChatTemplateInputs in;
        in.messages = c["messages"];
        in.add_generation_prompt = c["add_generation_prompt"];
        in.bos_token = c["bos_token"];
        in.eos_token = c["eos_token"];
        // transformers / python-jinja2 with trim_blocks + lstrip_blocks.
        const std::string tmpl = c["template"];
        EXPECT_EQ(ChatTemplate(tmpl).render(in), c["expected_hf_transformers_style"].get<std::string>());
        // TGI strips every line of the template and joins them before rendering.
        if (c.value("tgi_expected_reproduced_by_jinja2_on_line_trimmed_template", false)) {
            std::string joined, line;
            std::istringstream ss(tmpl);
            while (std::getline(ss, line)) {
                size_t b = line.find_first_not_of(" \t\r");
                size_t e = line.find_last_not_of(" \t\r");
                if (b != std::string::npos) joined += line.substr(b, e - b + 1);
            }
            EXPECT_EQ(ChatTemplate(joined).render(in), c["expected_tgi"].get<std::string>());
        }
    }
}

TEST(FindChatTemplate, PrefersJinjaFileAndReturnsNulloptWithoutTemplate) {
    auto llama3 = farsight::find_chat_template(kShared / "tokenizers" / "llama3");
    ASSERT_TRUE(llama3.has_value());
    EXPECT_EQ(*llama3, slurp(kShared / "tokenizers" / "llama3" / "chat_template.jinja"));
    EXPECT_FALSE(farsight::find_chat_template(kShared / "tokenizers" / "gpt2").has_value());
    EXPECT_FALSE(farsight::find_chat_template(kShared / "tokenizers" / "llama2").has_value());
}

TEST(FindChatTemplate, ReadsTokenizerConfigStringAndDefaultFromList) {
    fs::path dir = fs::temp_directory_path() / ("farsight_ct_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{{ 'one' }}"})";
    }
    EXPECT_EQ(farsight::find_chat_template(dir).value(), "{{ 'one' }}");
    {
        std::ofstream(dir / "tokenizer_config.json")
            << R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})";
    }
    EXPECT_EQ(farsight::find_chat_template(dir).value(), "D");
    {
        std::ofstream(dir / "tokenizer_config.json")
            << R"({"chat_template": [{"name": "tool_use", "template": "T"}]})";
    }
    EXPECT_FALSE(farsight::find_chat_template(dir).has_value());
    {
        std::ofstream(dir / "chat_template.jinja") << "J";
    }
    EXPECT_EQ(farsight::find_chat_template(dir).value(), "J");
    fs::remove_all(dir);
}
