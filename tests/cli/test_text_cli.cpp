// Text in, text out through the CLI: perplexity vs transformers, tokenize, generation options.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cli_util.h"

using nlohmann::json;

namespace {
const std::string kShared = FARSIGHT_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K";
json fixture() {
    std::ifstream f(std::string(FARSIGHT_FIXTURES_DIR) + "/ref/stories260K/ref.json");
    return json::parse(f);
}
}  // namespace

// transformers (float64): tokenizer(text) with BOS, one window, mean NLL of tokens[1:].
TEST(TextCli, PerplexityMatchesTransformers) {
    const json p = fixture()["perplexity"];
    TempDir t;
    write_file(t.path / "story.txt", p["text"].get<std::string>());
    const CliResult tok = run_cli("tokenize -m " + kStories + " --json --text \"$(cat " + q(t.path / "story.txt") + ")\"");
    ASSERT_EQ(tok.code, 0) << tok.out;
    EXPECT_EQ(json::parse(tok.out)["ids"], p["tokens"]);
    const CliResult r = run_cli("perplexity -m " + kStories + " -f " + q(t.path / "story.txt") + " --json");
    ASSERT_EQ(r.code, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["tokens"], p["n_tokens"]);
    const double want = p["mean_nll"], got = j["mean_nll"];
    std::printf("[figure] stories260K perplexity: farsight mean NLL %.8f, transformers %.8f, rel diff %.2e\n", got, want,
                std::fabs(got - want) / want);
    EXPECT_LE(std::fabs(got - want) / want, 1e-4);
    EXPECT_NEAR(j["ppl"].get<double>(), p["ppl"].get<double>(), 1e-4 * p["ppl"].get<double>());
}

// Strided windows: every token scored once; with a window as long as the text it equals one pass.
TEST(TextCli, PerplexityStridedWindows) {
    const json p = fixture()["perplexity"];
    TempDir t;
    write_file(t.path / "story.txt", p["text"].get<std::string>());
    const json one = json::parse(run_cli("perplexity -m " + kStories + " -f " + q(t.path / "story.txt") + " --json").out);
    const json strided =
        json::parse(run_cli("perplexity -m " + kStories + " -f " + q(t.path / "story.txt") + " --ctx 128 --stride 64 --json").out);
    EXPECT_EQ(strided["windows"], 7);  // windows start at 0, 64, ..., 384 and the last reaches 450
    EXPECT_EQ(strided["tokens"], one["tokens"]);
    // less left context per token -> higher NLL, but of the same order
    EXPECT_GT(strided["mean_nll"].get<double>(), one["mean_nll"].get<double>());
    EXPECT_LT(strided["mean_nll"].get<double>(), one["mean_nll"].get<double>() * 1.5);
}

TEST(TextCli, TokenizeAndDecode) {
    const CliResult a = run_cli("tokenize -m " + kStories + " --text \"Once upon a time\" --json");
    ASSERT_EQ(a.code, 0) << a.out;
    EXPECT_EQ(json::parse(a.out)["ids"], json::array({1, 403, 407, 261, 378}));
    const CliResult b = run_cli("tokenize -m " + kStories + " --text \"Once upon a time\" --no-special --json");
    EXPECT_EQ(json::parse(b.out)["ids"], json::array({403, 407, 261, 378}));
    const CliResult c = run_cli("tokenize -m " + kStories + " --decode \"403 407 261 378\"");
    EXPECT_NE(c.out.find("Once upon a time"), std::string::npos) << c.out;
}

TEST(TextCli, GenerateStopsSeedsAndLimits) {
    // a stop string ends generation before it; same seed, same text
    const auto gen = [&](const std::string& extra) {
        const CliResult r = run_cli("generate -m " + kStories + " -p \"Once upon a time\" --json " + extra);
        EXPECT_EQ(r.code, 0) << r.out;
        return json::parse(r.out);
    };
    const json greedy = gen("-n 40 --temp 0");
    const std::string text = greedy["text"];
    const size_t dot = text.find('.');
    ASSERT_NE(dot, std::string::npos);
    const json stopped = gen("-n 40 --temp 0 --stop .");
    EXPECT_EQ(stopped["text"], text.substr(0, dot));
    EXPECT_EQ(stopped["finish_reason"], "stop");
    const json s1 = gen("-n 30 --temp 0.9 --top-p 0.9 --seed 7"), s2 = gen("-n 30 --temp 0.9 --top-p 0.9 --seed 7");
    EXPECT_EQ(s1["ids"], s2["ids"]);
    EXPECT_EQ(s1["ids"].size(), 30u);
    EXPECT_EQ(s1["finish_reason"], "length");
    // prompt longer than the context: clear error
    const CliResult big = run_cli("generate -m " + kStories + " -p \"$(printf 'once %.0s' $(seq 1 600))\" -n 5");
    EXPECT_EQ(big.code, 1);
    EXPECT_NE(big.out.find("context"), std::string::npos) << big.out;
}

// chat: two turns through docs-27M's chat template; the answers are what generate gives for the
// rendered conversation (checked for the first turn).
TEST(TextCli, ChatTwoTurnsThroughTemplate) {
    const std::string docs = kShared + "/models/docs-27M";
    const CliResult r2 = run_cli("chat -m " + docs + " -n 12 --temp 0 --system 'Be brief.' <<'EOF'\nHow do I list files?\nAnd hidden ones?\nEOF\n");
    ASSERT_EQ(r2.code, 0) << r2.out;
    // expected first answer: generate on the rendered prompt (bos + header blocks), no special tokens added
    const std::string prompt =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow do I list files?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    TempDir t;
    write_file(t.path / "p.txt", prompt);
    const CliResult g = run_cli("generate -m " + docs + " -n 12 --temp 0 --no-special --json -f " + q(t.path / "p.txt"));
    ASSERT_EQ(g.code, 0) << g.out;
    const std::string first = json::parse(g.out)["text"];
    EXPECT_EQ(r2.out.rfind(first, 0), 0u) << "chat output:\n" << r2.out << "\nexpected first answer:\n" << first;
    // two answers, one per line group
    EXPECT_GT(r2.out.size(), first.size() + 1);
}

// A request that cannot fit in the KV cache is refused before any work, with the figures.
TEST(TextCli, RequestLargerThanKvCacheIsRefused) {
    const CliResult r = run_cli("generate -m " + kStories + " -p \"Once upon a time\" -n 100 --kv-tokens 64");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("KV cache room for 105 tokens"), std::string::npos) << r.out;
}
