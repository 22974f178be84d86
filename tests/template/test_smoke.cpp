#include <gtest/gtest.h>
#include "tokenizer/chat_template.h"
TEST(Smoke, Basic) {
    farsight::ChatTemplate t("{% for m in messages %}{{ m.role }}:{{ m['content'] }};{% endfor %}");
    farsight::ChatTemplateInputs in;
    in.messages = nlohmann::json::parse(R"([{"role":"user","content":"hi"}])");
    EXPECT_EQ(t.render(in), "user:hi;");
}
