// The HTTP server in-process on a free 127.0.0.1 port: OpenAI-shaped answers equal generate(),
// streaming, every bad input gets its 4xx JSON error while the server keeps serving, client
// disconnects free blocks, the prefix cache cuts the prefill of a shared prompt.
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/engine.h"
#include "engine/generate.h"
#include "server/server.h"

using namespace farsight;
using json = nlohmann::json;

namespace {

const std::string kModel = std::string(FARSIGHT_SHARED_DIR) + "/models/stories260K";
const std::string kKey = "sk-test-key";

std::string read_text(const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct Running {
    std::unique_ptr<Session> session;
    std::unique_ptr<Tokenizer> tok;
    std::unique_ptr<Engine> engine;
    std::unique_ptr<Server> server;
    std::thread th;
    int port = 0;

    explicit Running(int64_t max_pending = 1024, size_t max_body = 1 << 20, bool tiny_dummy = false) {
        LoadOptions lo;
        if (tiny_dummy) {
            lo.dummy = "tiny-test";  // 1,024-token context, vocabulary 512 like stories260K's tokenizer
        } else {
            lo.model = kModel;
        }
        // One CPU thread: with a thread pool on a busy 2-core CI machine, wall time is dominated
        // by thread wake-ups, not compute, which would blur the prefix-cache timing.
        lo.threads = 1;
        session = std::make_unique<Session>(lo);
        tok = std::make_unique<Tokenizer>(Tokenizer::from_folder(kModel));
        engine = std::make_unique<Engine>(*session, *tok, SchedulerConfig{}, max_pending);
        ServerOptions so;
        so.host = "127.0.0.1";
        so.port = 0;
        so.api_key = kKey;
        so.model_name = "stories";
        so.chat_template =
            read_text(std::string(FARSIGHT_FIXTURES_DIR) + "/server/chat_template.jinja");
        so.eos_ids = tok->eos_ids();
        so.max_body_bytes = max_body;
        so.http_threads = 16;
        server = std::make_unique<Server>(*engine, *tok, so);
        port = server->bind();
        th = std::thread([this] { server->listen(); });
    }
    ~Running() {
        server->stop();
        th.join();
        engine->shutdown(true);
    }
    httplib::Client client(bool auth = true) const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(60);
        if (auth) c.set_default_headers({{"Authorization", "Bearer " + kKey}});
        return c;
    }
    json metrics_value(const std::string& line_prefix) const {
        auto c = client(false);
        auto r = c.Get("/metrics");
        if (!r) return nullptr;
        std::istringstream in(r->body);
        std::string line;
        while (std::getline(in, line))
            if (line.rfind(line_prefix + " ", 0) == 0)
                return std::stod(line.substr(line_prefix.size() + 1));
        return nullptr;
    }
};

GenerationResult reference(Running& rs, const std::vector<int32_t>& prompt, int32_t max_tokens) {
    GenerationOptions go;
    go.sampling.temperature = 0;
    go.max_new_tokens = max_tokens;
    go.eos_ids = rs.tok->eos_ids();
    // generate() needs the session, which the engine thread owns: use a second one.
    LoadOptions lo;
    lo.model = kModel;
    static Session s(lo);
    return generate(s, *rs.tok, prompt, go);
}

class ServerTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        std::signal(SIGPIPE, SIG_IGN);
        rs_ = std::make_unique<Running>();
    }
    static void TearDownTestSuite() { rs_.reset(); }
    static std::unique_ptr<Running> rs_;
};
std::unique_ptr<Running> ServerTest::rs_;

json post(const Running& rs, const std::string& path, const std::string& body, int* status,
          bool auth = true) {
    auto c = rs.client(auth);
    auto r = c.Post(path, body, "application/json");
    if (!r) {
        *status = -1;
        return nullptr;
    }
    *status = r->status;
    try {
        return json::parse(r->body);
    } catch (...) {
        return r->body;
    }
}

void expect_still_serving(const Running& rs) {
    int st = 0;
    const json j =
        post(rs, "/v1/completions",
             R"({"model":"stories","prompt":"Once","max_tokens":3,"temperature":0})", &st);
    EXPECT_EQ(st, 200) << j.dump();
}

}  // namespace

TEST_F(ServerTest, CompletionEqualsGenerateAndStreamingAgrees) {
    Running& rs = *rs_;
    const std::string prompt = "Once upon a time, there was a big dog";
    const auto ref = reference(rs, rs.tok->encode(prompt), 40);
    int st = 0;
    json j =
        post(rs, "/v1/completions",
             json{{"model", "stories"}, {"prompt", prompt}, {"max_tokens", 40}, {"temperature", 0}}
                 .dump(),
             &st);
    ASSERT_EQ(st, 200) << j.dump();
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["choices"][0]["text"], ref.text);
    EXPECT_EQ(j["usage"]["prompt_tokens"], ref.prompt_ids.size());
    EXPECT_EQ(j["usage"]["completion_tokens"], ref.ids.size());
    EXPECT_EQ(j["choices"][0]["finish_reason"],
              ref.finish_reason == "eos" ? "stop" : ref.finish_reason);
    // Logprobs: one entry per token, and the tokens' texts add up to the text.
    j = post(rs, "/v1/completions",
             json{{"model", "stories"},
                  {"prompt", prompt},
                  {"max_tokens", 40},
                  {"temperature", 0},
                  {"logprobs", 2}}
                 .dump(),
             &st);
    ASSERT_EQ(st, 200) << j.dump();
    {
        const json& lp = j["choices"][0]["logprobs"];
        ASSERT_EQ(lp["tokens"].size(), ref.ids.size());
        std::string joined;
        for (size_t i = 0; i < lp["tokens"].size(); ++i) {
            EXPECT_EQ(lp["text_offset"][i], joined.size());
            joined += lp["tokens"][i].get<std::string>();
            EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ref.logprobs[i], 1e-5);
            EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);
        }
        if (ref.finish_reason != "eos") {
            EXPECT_EQ(joined, ref.text);
        }
    }
    // Token-array prompt + echo.
    j = post(rs, "/v1/completions",
             json{{"model", "stories"},
                  {"prompt", ref.prompt_ids},
                  {"max_tokens", 40},
                  {"temperature", 0},
                  {"echo", true}}
                 .dump(),
             &st);
    ASSERT_EQ(st, 200) << j.dump();
    EXPECT_EQ(j["choices"][0]["text"], rs.tok->decode(ref.prompt_ids) + ref.text);
    // Streaming: the concatenated deltas are the same text; usage comes last, then [DONE].
    auto c = rs.client();
    std::string raw;
    auto r = c.Post("/v1/completions",
                    json{{"model", "stories"},
                         {"prompt", prompt},
                         {"max_tokens", 40},
                         {"temperature", 0},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}}
                        .dump(),
                    "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    std::istringstream in(r->body);
    std::string line, text, last;
    int chunks = 0;
    json usage;
    while (std::getline(in, line)) {
        if (line.rfind("data: ", 0) != 0) continue;
        last = line.substr(6);
        if (last == "[DONE]") break;
        const json ch = json::parse(last);
        if (ch.contains("usage") && !ch["usage"].is_null()) usage = ch["usage"];
        for (const auto& x : ch["choices"]) text += x["text"].get<std::string>();
        ++chunks;
    }
    EXPECT_EQ(last, "[DONE]");
    EXPECT_EQ(text, ref.text);
    EXPECT_GT(chunks, 10);
    EXPECT_EQ(usage["completion_tokens"], ref.ids.size());
}

TEST_F(ServerTest, ChatThroughTemplateWithLogprobsAndN) {
    Running& rs = *rs_;
    const json body = {{"model", "stories"},
                       {"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
                       {"max_tokens", 30},
                       {"temperature", 0},
                       {"n", 2},
                       {"logprobs", true},
                       {"top_logprobs", 3}};
    int st = 0;
    const json j = post(rs, "/v1/chat/completions", body.dump(), &st);
    ASSERT_EQ(st, 200) << j.dump();
    const std::string rendered = "<s>Question: Tell me a story\nAnswer:";
    const auto ref = reference(rs, rs.tok->encode(rendered, false), 30);
    ASSERT_EQ(j["choices"].size(), 2u);
    for (const auto& ch : j["choices"]) {
        EXPECT_EQ(ch["message"]["role"], "assistant");
        EXPECT_EQ(ch["message"]["content"], ref.text);
        const auto& lp = ch["logprobs"]["content"];
        ASSERT_EQ(lp.size(), ref.ids.size());
        for (size_t i = 0; i < lp.size(); ++i) {
            EXPECT_NEAR(lp[i]["logprob"].get<double>(), ref.logprobs[i], 1e-5);
            EXPECT_EQ(lp[i]["top_logprobs"].size(), 3u);
            // Greedy: the chosen token is the most likely one.
            EXPECT_NEAR(lp[i]["top_logprobs"][0]["logprob"].get<double>(), ref.logprobs[i], 1e-5);
        }
    }
    EXPECT_EQ(j["usage"]["prompt_tokens"], ref.prompt_ids.size());
    EXPECT_EQ(j["usage"]["completion_tokens"], 2 * ref.ids.size());
}

TEST_F(ServerTest, ModelsHealthMetrics) {
    Running& rs = *rs_;
    auto c = rs.client();
    auto r = c.Get("/v1/models");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    const json j = json::parse(r->body);
    EXPECT_EQ(j["data"][0]["id"], "stories");
    EXPECT_EQ(j["data"][0]["max_model_len"], 512);
    auto h = rs.client(false).Get("/health");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    auto m = rs.client(false).Get("/metrics");
    ASSERT_TRUE(m);
    for (const char* name :
         {"farsight_time_to_first_token_seconds_bucket", "farsight_inter_token_latency_seconds_sum",
          "farsight_kv_blocks{state=\"used\"}", "farsight_num_requests_waiting",
          "farsight_prefix_cache_hits_total", "farsight_generation_tokens_total"})
        EXPECT_NE(m->body.find(name), std::string::npos) << name;
}

TEST_F(ServerTest, EachBadInputGetsItsErrorAndTheServerKeepsServing) {
    Running& rs = *rs_;
    struct Case {
        const char* what;
        std::string path, body;
        int status;
        const char* param;  // expected "param", or nullptr
        bool auth = true;
    };
    const std::string long_prompt = [] {
        std::string s;
        for (int i = 0; i < 200; ++i) s += "Once upon a time. ";
        return s;
    }();
    const std::vector<Case> cases = {
        {"malformed JSON", "/v1/completions", R"({"prompt": "x",)", 400, nullptr},
        {"not an object", "/v1/completions", R"([1, 2])", 400, nullptr},
        {"prompt missing", "/v1/completions", R"({"model":"stories"})", 400, "prompt"},
        {"prompt wrong type", "/v1/completions", R"({"prompt": {"a": 1}})", 400, "prompt"},
        {"temperature string", "/v1/completions", R"({"prompt":"x","temperature":"hot"})", 400,
         "temperature"},
        {"temperature too high", "/v1/completions", R"({"prompt":"x","temperature":7})", 400,
         "temperature"},
        {"n not an integer", "/v1/completions", R"({"prompt":"x","n":1.5})", 400, "n"},
        {"stop wrong type", "/v1/completions", R"({"prompt":"x","stop":[1]})", 400, "stop"},
        {"stream not bool", "/v1/completions", R"({"prompt":"x","stream":"yes"})", 400, "stream"},
        {"negative max_tokens", "/v1/completions", R"({"prompt":"x","max_tokens":-5})", 400,
         "max_tokens"},
        {"zero max_tokens", "/v1/completions", R"({"prompt":"x","max_tokens":0})", 400,
         "max_tokens"},
        {"huge max_tokens", "/v1/completions", R"({"prompt":"x","max_tokens":99999999999})", 400,
         "max_tokens"},
        {"max_tokens past context", "/v1/completions", R"({"prompt":"x","max_tokens":600})", 400,
         "max_tokens"},
        {"token id outside vocab", "/v1/completions", R"({"prompt":[1, 99999]})", 400, "prompt"},
        {"prompt longer than context", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400,
         "prompt"},
        {"chat messages missing", "/v1/chat/completions", R"({"model":"stories"})", 400,
         "messages"},
        {"chat messages wrong type", "/v1/chat/completions", R"({"messages":"hi"})", 400,
         "messages"},
        {"chat message without role", "/v1/chat/completions", R"({"messages":[{"content":"hi"}]})",
         400, "messages"},
        {"chat top_logprobs without logprobs", "/v1/chat/completions",
         R"({"messages":[{"role":"user","content":"hi"}],"top_logprobs":2})", 400, "top_logprobs"},
        {"unknown model", "/v1/completions", R"({"model":"gpt-9","prompt":"x"})", 404, "model"},
        {"missing API key", "/v1/completions", R"({"prompt":"x"})", 401, nullptr, false},
        {"unknown route", "/v1/engines", R"({})", 404, nullptr},
        {"oversized body", "/v1/completions", json{{"prompt", std::string(2 << 20, 'a')}}.dump(),
         413, nullptr},
    };
    for (const Case& c : cases) {
        int st = 0;
        const json j = post(rs, c.path, c.body, &st, c.auth);
        EXPECT_EQ(st, c.status) << c.what << ": " << j.dump();
        ASSERT_TRUE(j.is_object() && j.contains("error")) << c.what << ": " << j.dump();
        const json& e = j["error"];
        EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << c.what;
        EXPECT_TRUE(e.contains("type") && e.contains("param") && e.contains("code")) << c.what;
        if (c.param) {
            EXPECT_EQ(e["param"], c.param) << c.what << ": " << j.dump();
        }
        expect_still_serving(rs);
    }
    // A wrong key, and the context error names the numbers.
    httplib::Client c("127.0.0.1", rs.port);
    c.set_default_headers({{"Authorization", "Bearer wrong"}});
    auto r = c.Post("/v1/completions", R"({"prompt":"x"})", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
    int st = 0;
    const json j = post(rs, "/v1/completions", json{{"prompt", long_prompt}}.dump(), &st);
    const std::string msg = j["error"]["message"];
    EXPECT_NE(msg.find("512"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(rs.tok->encode(long_prompt).size())), std::string::npos)
        << msg;
    EXPECT_EQ(j["error"]["code"], "context_length_exceeded");
}

TEST_F(ServerTest, ClientDisconnectMidStreamCancelsAndFreesBlocks) {
    Running& rs = *rs_;
    const double aborted0 =
        rs.metrics_value("farsight_request_success_total{finish_reason=\"abort\"}").get<double>();
    auto c = rs.client();
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = {{"Authorization", "Bearer " + kKey}, {"Content-Type", "application/json"}};
    req.body = json{
        {"prompt", "Once upon a time"},
        {"max_tokens", 480},
        {"ignore_eos", true},
        {"stream",
         true}}.dump();
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
    auto res = c.send(req);
    EXPECT_FALSE(res);  // we hung up
    EXPECT_GE(chunks, 3);
    // The engine notices at its next write, cancels the request and frees its blocks.
    double used = -1, aborted = aborted0;
    for (int i = 0; i < 200 && (used != 0 || aborted == aborted0); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        used = rs.metrics_value("farsight_kv_blocks{state=\"used\"}").get<double>();
        aborted = rs.metrics_value("farsight_request_success_total{finish_reason=\"abort\"}")
                      .get<double>();
    }
    EXPECT_EQ(used, 0);
    EXPECT_EQ(aborted, aborted0 + 1);
    const double generated = rs.metrics_value("farsight_generation_tokens_total").get<double>();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(rs.metrics_value("farsight_generation_tokens_total").get<double>(),
              generated);  // really stopped
    expect_still_serving(rs);
}

TEST_F(ServerTest, SharedPrefixIsComputedOnce) {
    Running& rs = *rs_;
    // ~450-token shared prefix (the context is 512), then different questions.
    std::string prefix;
    for (int i = 0; prefix.size() < 1500; ++i)
        prefix +=
            "Tim and Sue played with a red ball in the park number " + std::to_string(i) + ". ";
    std::vector<int32_t> ids = rs.tok->encode(prefix);
    ids.resize(450);
    std::vector<double> first_ms, second_ms;
    for (int round = 0; round < 5; ++round) {
        std::vector<int32_t> p = ids;
        p[1] = 100 + round;  // a fresh prefix each round (nothing cached yet)
        std::vector<int32_t> a = p, b = p;
        a.insert(a.end(), {20, 30, 40});
        b.insert(b.end(), {21, 31, 41, 51});
        int st = 0;
        json ja = post(rs, "/v1/completions",
                       json{{"prompt", a}, {"max_tokens", 2}, {"temperature", 0}}.dump(), &st);
        ASSERT_EQ(st, 200) << ja.dump();
        json jb = post(rs, "/v1/completions",
                       json{{"prompt", b}, {"max_tokens", 2}, {"temperature", 0}}.dump(), &st);
        ASSERT_EQ(st, 200) << jb.dump();
        EXPECT_EQ(ja["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        EXPECT_EQ(jb["usage"]["prompt_tokens_details"]["cached_tokens"],
                  448);  // 28 full blocks of 16
        first_ms.push_back(ja["timings"]["prefill_ms"].get<double>());
        second_ms.push_back(jb["timings"]["prefill_ms"].get<double>());
    }
    // Wall-clock times on a shared CI machine: compare the best of 5 rounds (noise only adds).
    const double first = *std::min_element(first_ms.begin(), first_ms.end());
    const double second = *std::min_element(second_ms.begin(), second_ms.end());
    std::printf(
        "prefill of a 453-token prompt: %.3f ms; with 448 tokens cached: %.3f ms (best of 5)\n",
        first, second);
    EXPECT_LE(second, 0.2 * first);
}

// The acceptance case: a 1,000-token shared system prompt (random-weight model with a 1,024
// context; the stories260K tokenizer has the same 512-token vocabulary).
TEST(ServerPrefix, ThousandTokenSharedPrefixIsComputedOnce) {
    Running rs(1024, 1 << 20, /*tiny_dummy=*/true);
    std::vector<int32_t> ids(1000);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(3 + (i * 7919) % 500);
    std::vector<double> first_ms, second_ms;
    for (int round = 0; round < 3; ++round) {
        std::vector<int32_t> p = ids;
        p[1] = 100 + round;  // a fresh prefix each round
        std::vector<int32_t> a = p, b = p;
        a.insert(a.end(), {20, 30});
        b.insert(b.end(), {21, 31, 41});
        int st = 0;
        json ja = post(rs, "/v1/completions", json{{"prompt", a}, {"max_tokens", 1}, {"temperature", 0}}.dump(), &st);
        ASSERT_EQ(st, 200) << ja.dump();
        json jb = post(rs, "/v1/completions", json{{"prompt", b}, {"max_tokens", 1}, {"temperature", 0}}.dump(), &st);
        ASSERT_EQ(st, 200) << jb.dump();
        EXPECT_EQ(ja["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        EXPECT_EQ(jb["usage"]["prompt_tokens_details"]["cached_tokens"], 992);  // 62 full blocks of 16
        first_ms.push_back(ja["timings"]["prefill_ms"].get<double>());
        second_ms.push_back(jb["timings"]["prefill_ms"].get<double>());
    }
    const double first = *std::min_element(first_ms.begin(), first_ms.end());
    const double second = *std::min_element(second_ms.begin(), second_ms.end());
    std::printf("[figure] prefill of a 1002-token prompt: %.3f ms; sharing a 992-token cached prefix: %.3f ms (%.1f%%)\n",
                first, second, 100 * second / first);
    EXPECT_LE(second, 0.2 * first);
}

TEST(ServerOverload, FullQueueGets503) {
    std::signal(SIGPIPE, SIG_IGN);
    Running rs(/*max_pending=*/1);
    auto c1 = rs.client();
    std::thread slow([&] {
        auto r = c1.Post("/v1/completions",
                         R"({"prompt":"Once","max_tokens":500,"ignore_eos":true,"temperature":0})",
                         "application/json");
        EXPECT_TRUE(r && r->status == 200);
    });
    // Wait until the first request is in flight, then a second one is refused.
    for (int i = 0; i < 500 && rs.engine->pending() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    int st = 0;
    const json j = post(rs, "/v1/completions", R"({"prompt":"Once","max_tokens":3})", &st);
    EXPECT_EQ(st, 503) << j.dump();
    EXPECT_EQ(j["error"]["code"], "overloaded");
    slow.join();
    expect_still_serving(rs);
}
