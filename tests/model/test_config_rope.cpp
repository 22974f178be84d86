// config.json parsing and RoPE frequencies against hand-derived formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/config.h"
#include "model/rope.h"

using namespace farsight;
using nlohmann::json;

namespace {
json base_cfg() {
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 256},
            {"intermediate_size", 512}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"vocab_size", 100}, {"max_position_embeddings", 2048},
            {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}};
}
std::string error_of(const json& j) {
    try {
        parse_model_config(j, "cfg.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST(Config, DerivedFields) {
    json j = base_cfg();
    ModelConfig c = parse_model_config(j, "cfg.json");
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.rope.type, "default");
    j["head_dim"] = 32;  // explicit head_dim wins
    j.erase("num_key_value_heads");  // defaults to num_attention_heads
    c = parse_model_config(j, "cfg.json");
    EXPECT_EQ(c.head_dim, 32);
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.q_dim(), 128);
}

TEST(Config, ArchitectureSpecifics) {
    json j = base_cfg();
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["use_sliding_window"] = true;
    j["sliding_window"] = 64;
    j["max_window_layers"] = 1;
    ModelConfig q = parse_model_config(j, "cfg.json");
    EXPECT_TRUE(q.attention_bias);
    EXPECT_FALSE(q.o_bias);
    EXPECT_EQ(q.layer_window, (std::vector<int64_t>{0, 64}));
    j["architectures"] = {"MistralForCausalLM"};
    ModelConfig m = parse_model_config(j, "cfg.json");
    EXPECT_FALSE(m.attention_bias);
    EXPECT_EQ(m.layer_window, (std::vector<int64_t>{64, 64}));
    j["architectures"] = {"LlamaForCausalLM"};
    j["attention_bias"] = true;
    ModelConfig l = parse_model_config(j, "cfg.json");
    EXPECT_TRUE(l.attention_bias && l.o_bias);
    EXPECT_EQ(l.layer_window, (std::vector<int64_t>{0, 0}));
}

TEST(Config, ErrorsNameTheProblem) {
    json j = base_cfg();
    j["architectures"] = {"GPTNeoXForCausalLM"};
    EXPECT_NE(error_of(j).find("unsupported architecture \"GPTNeoXForCausalLM\""), std::string::npos);
    j = base_cfg();
    j.erase("hidden_size");
    EXPECT_NE(error_of(j).find("\"hidden_size\" is missing"), std::string::npos);
    j = base_cfg();
    j["num_hidden_layers"] = "two";
    EXPECT_NE(error_of(j).find("\"num_hidden_layers\" must be an integer"), std::string::npos);
    j = base_cfg();
    j["rope_scaling"] = {{"rope_type", "wavy"}, {"factor", 2.0}};
    EXPECT_NE(error_of(j).find("unsupported rope type \"wavy\""), std::string::npos);
    j = base_cfg();
    j["num_key_value_heads"] = 3;
    EXPECT_NE(error_of(j).find("multiple of num_key_value_heads"), std::string::npos);
}

TEST(Config, RopeSpellingsAgree) {
    json a = base_cfg();
    a["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    json b = base_cfg();
    b["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
    json c = base_cfg();
    c.erase("rope_theta");
    c["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
    const auto fa = rope_freqs(parse_model_config(a, "a"), 0);
    EXPECT_EQ(parse_model_config(a, "a").rope.type, "linear");
    EXPECT_EQ(fa.inv_freq, rope_freqs(parse_model_config(b, "b"), 0).inv_freq);
    EXPECT_EQ(fa.inv_freq, rope_freqs(parse_model_config(c, "c"), 0).inv_freq);
}

TEST(Rope, DefaultAndLinear) {
    json j = base_cfg();
    const auto f = rope_freqs(parse_model_config(j, "c"), 0);
    ASSERT_EQ(f.inv_freq.size(), 32u);
    for (int i = 0; i < 32; ++i)
        EXPECT_NEAR(f.inv_freq[i], 1.0 / std::pow(10000.0, 2.0 * i / 64), 1e-6 * (1.0 / std::pow(10000.0, 2.0 * i / 64)));
    EXPECT_FLOAT_EQ(f.attention_scaling, 1.0f);
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
    const auto g = rope_freqs(parse_model_config(j, "c"), 0);
    for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(g.inv_freq[i], f.inv_freq[i] / 4.0f);
}

// Dynamic NTK: base' = base * (factor * L / mpe - (factor - 1)) ^ (d / (d - 2)) once L > mpe.
TEST(Rope, DynamicNtk) {
    json j = base_cfg();
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    const ModelConfig c = parse_model_config(j, "c");
    EXPECT_EQ(rope_freqs(c, 100).inv_freq, rope_freqs(c, 2048).inv_freq);  // no change within mpe
    const auto f = rope_freqs(c, 4096);
    const double base = 10000.0 * std::pow(2.0 * 4096 / 2048 - 1.0, 64.0 / 62.0);
    for (int i = 0; i < 32; ++i) {
        const double want = 1.0 / std::pow(base, 2.0 * i / 64);
        EXPECT_NEAR(f.inv_freq[i], want, 1e-5 * want);
    }
}

// Llama 3.1 (factor 8, low 1, high 4, original 8192): wavelengths below 2048 keep their
// frequency, above 8192 are divided by 8, and in between interpolate smoothly.
TEST(Rope, Llama3) {
    json j = base_cfg();
    j["hidden_size"] = 512;  // head_dim 128
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    const auto f = rope_freqs(parse_model_config(j, "c"), 0);
    ASSERT_EQ(f.inv_freq.size(), 64u);
    int hi = 0, lo = 0, mid = 0;
    for (int i = 0; i < 64; ++i) {
        const double inv = 1.0 / std::pow(500000.0, 2.0 * i / 128);
        const double wl = 2 * M_PI / inv;
        double want;
        if (wl < 2048) want = inv, ++hi;
        else if (wl > 8192) want = inv / 8, ++lo;
        else {
            const double s = (8192 / wl - 1.0) / (4.0 - 1.0);
            want = (1 - s) * inv / 8 + s * inv;
            ++mid;
        }
        EXPECT_NEAR(f.inv_freq[i], want, 2e-5 * want) << i;
    }
    EXPECT_GT(hi, 0);
    EXPECT_GT(lo, 0);
    EXPECT_GT(mid, 0);
}

// YaRN with factor 4 over an original 512 context: attention factor 0.1 ln(4) + 1, dims with
// many rotations keep their frequency, dims with few are interpolated by 1/4.
TEST(Rope, Yarn) {
    json j = base_cfg();
    j["max_position_embeddings"] = 2048;
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 512}};
    const auto f = rope_freqs(parse_model_config(j, "c"), 0);
    EXPECT_NEAR(f.attention_scaling, 0.1 * std::log(4.0) + 1.0, 1e-6);
    const double d = 64, b = 10000;
    auto corr = [&](double rot) { return d * std::log(512 / (rot * 2 * M_PI)) / (2 * std::log(b)); };
    const double low = std::max(0.0, std::floor(corr(32))), high = std::min(d - 1, std::ceil(corr(1)));
    for (int i = 0; i < 32; ++i) {
        const double pf = std::pow(b, 2.0 * i / d);
        const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
        const double want = (1 / (4 * pf)) * ramp + (1 / pf) * (1 - ramp);
        EXPECT_NEAR(f.inv_freq[i], want, 2e-5 * want) << i;
    }
}

// LongRoPE: short factors up to the original length, long factors beyond it.
TEST(Rope, LongRope) {
    json j = base_cfg();
    j["hidden_size"] = 32;  // head_dim 8 -> 4 factors
    j["max_position_embeddings"] = 4096;
    j["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", {1.0, 1.5, 2.0, 2.5}},
                         {"long_factor", {3.0, 4.0, 5.0, 6.0}}, {"original_max_position_embeddings", 1024}};
    const ModelConfig c = parse_model_config(j, "c");
    const auto s = rope_freqs(c, 1024), l = rope_freqs(c, 1025);
    const double sf[4] = {1.0, 1.5, 2.0, 2.5}, lf[4] = {3, 4, 5, 6};
    for (int i = 0; i < 4; ++i) {
        const double pf = std::pow(10000.0, 2.0 * i / 8);
        EXPECT_NEAR(s.inv_freq[i], 1 / (sf[i] * pf), 1e-6 / pf);
        EXPECT_NEAR(l.inv_freq[i], 1 / (lf[i] * pf), 1e-6 / pf);
    }
    EXPECT_NEAR(s.attention_scaling, std::sqrt(1 + std::log(4.0) / std::log(1024.0)), 1e-6);
}
