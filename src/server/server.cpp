#include "server/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace farsight {

using ojson = nlohmann::ordered_json;

namespace {

// An error the client caused (or an overload): sent as the OpenAI error object.
struct ApiError {
    int status = 400;
    std::string message, type = "invalid_request_error", param, code;
};

[[noreturn]] void bad(std::string message, std::string param = {}, std::string code = {}) {
    throw ApiError{400, std::move(message), "invalid_request_error", std::move(param),
                   std::move(code)};
}

ojson error_body(const ApiError& e) {
    ojson err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
    if (!e.param.empty()) err["param"] = e.param;
    if (!e.code.empty())
        err["code"] = e.code;
    else
        err["code"] = e.status;
    return ojson{{"error", err}};
}

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(error_body(e).dump(), "application/json");
}

// Typed optional fields: absent or null -> nullopt; a wrong type or range -> 400 naming it.
const ojson* field(const ojson& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
}

std::optional<double> get_number(const ojson& j, const char* key, double lo, double hi) {
    const ojson* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_number())
        bad(fmt::format("'{}' must be a number, not {}", key, v->type_name()), key);
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi))
        bad(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, x), key);
    return x;
}

std::optional<int64_t> get_int(const ojson& j, const char* key, int64_t lo, int64_t hi) {
    const ojson* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer())
        bad(fmt::format("'{}' must be an integer, not {}", key,
                        v->is_number() ? "a fraction" : v->type_name()),
            key);
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        bad(fmt::format("'{}' must be between {} and {}", key, lo, hi), key);
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi)
        bad(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, x), key);
    return x;
}

std::optional<bool> get_bool(const ojson& j, const char* key) {
    const ojson* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_boolean())
        bad(fmt::format("'{}' must be a boolean, not {}", key, v->type_name()), key);
    return v->get<bool>();
}

std::string random_id(const char* prefix) {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t salt = std::random_device{}();
    return fmt::format("{}-{:016x}{:08x}", prefix, salt, counter.fetch_add(1));
}

int64_t now_unix() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The bytes of a token's text, as OpenAI reports them.
ojson bytes_of(const std::string& s) {
    ojson a = ojson::array();
    for (unsigned char c : s) a.push_back(static_cast<int>(c));
    return a;
}

struct Choice {
    std::string text;
    std::vector<TokenInfo> tokens;
    std::string finish_reason;
    bool finished = false;
};

}  // namespace

struct Server::Impl {
    Engine& engine;
    Tokenizer tok;
    ServerOptions o;
    std::optional<ChatTemplate> tmpl;
    httplib::Server http;
    int port = 0;
    std::atomic<bool> stopping{false};
    int64_t created = now_unix();

    Impl(Engine& e, const Tokenizer& t, ServerOptions opts)
        : engine(e), tok(t), o(std::move(opts)) {
        if (o.chat_template) tmpl.emplace(*o.chat_template);
        setup();
    }

    // ---- request parsing ----
    struct Parsed {
        std::vector<int32_t> prompt;
        std::string prompt_text;  // for echo
        Request req;
        bool stream = false, include_usage = false, echo = false;
        int logprobs = -1;  // completions: number of alternatives (-1 = off)
        bool chat_logprobs = false;
    };

    ojson parse_body(const httplib::Request& r) const {
        ojson body;
        try {
            body = ojson::parse(r.body);
        } catch (const std::exception& e) {
            bad(fmt::format("the request body is not valid JSON: {}", e.what()));
        }
        if (!body.is_object()) bad("the request body must be a JSON object");
        if (const ojson* m = field(body, "model")) {
            if (!m->is_string()) bad("'model' must be a string", "model");
            if (m->get<std::string>() != o.model_name)
                throw ApiError{404,
                               fmt::format("The model '{}' does not exist; this server serves '{}'",
                                           m->get<std::string>(), o.model_name),
                               "invalid_request_error", "model", "model_not_found"};
        }
        return body;
    }

    void parse_sampling(const ojson& b, Parsed& p, bool chat) const {
        const GenerationDefaults& d = o.defaults;
        SamplingParams& s = p.req.sampling;
        const bool config_greedy = d.do_sample.has_value() && !*d.do_sample;
        s.temperature =
            static_cast<float>(get_number(b, "temperature", 0, 2)
                                   .value_or(config_greedy ? 0.0 : d.temperature.value_or(1.0)));
        s.top_p =
            static_cast<float>(get_number(b, "top_p", 1e-9, 1).value_or(d.top_p.value_or(1.0)));
        s.top_k =
            static_cast<int32_t>(get_int(b, "top_k", -1, 1 << 30).value_or(d.top_k.value_or(0)));
        if (s.top_k < 0) s.top_k = 0;
        s.min_p = static_cast<float>(get_number(b, "min_p", 0, 1).value_or(d.min_p.value_or(0.0)));
        s.repetition_penalty =
            static_cast<float>(get_number(b, "repetition_penalty", 1e-6, 100)
                                   .value_or(d.repetition_penalty.value_or(1.0)));
        s.presence_penalty =
            static_cast<float>(get_number(b, "presence_penalty", -2, 2).value_or(0));
        s.frequency_penalty =
            static_cast<float>(get_number(b, "frequency_penalty", -2, 2).value_or(0));
        if (auto seed = get_int(b, "seed", INT64_MIN, INT64_MAX)) {
            s.has_seed = true;
            s.seed = static_cast<uint64_t>(*seed);
        }
        p.req.n = static_cast<int>(get_int(b, "n", 1, o.max_n).value_or(1));
        p.stream = get_bool(b, "stream").value_or(false);
        if (const ojson* so = field(b, "stream_options")) {
            if (!so->is_object()) bad("'stream_options' must be an object", "stream_options");
            if (!p.stream)
                bad("'stream_options' is only allowed when 'stream' is true", "stream_options");
            p.include_usage = get_bool(*so, "include_usage").value_or(false);
        }
        if (const ojson* st = field(b, "stop")) {
            if (st->is_string())
                p.req.stop.push_back(st->get<std::string>());
            else if (st->is_array()) {
                if (st->size() > 16) bad("'stop' may hold at most 16 strings", "stop");
                for (const auto& x : *st) {
                    if (!x.is_string()) bad("'stop' must be a string or a list of strings", "stop");
                    p.req.stop.push_back(x.get<std::string>());
                }
            } else {
                bad("'stop' must be a string or a list of strings", "stop");
            }
            for (const auto& x : p.req.stop)
                if (x.empty()) bad("'stop' strings must not be empty", "stop");
        }
        p.req.ignore_eos = get_bool(b, "ignore_eos").value_or(false);
        if (chat) {
            p.chat_logprobs = get_bool(b, "logprobs").value_or(false);
            const auto top = get_int(b, "top_logprobs", 0, 20);
            if (top && !p.chat_logprobs)
                bad("'top_logprobs' requires 'logprobs': true", "top_logprobs");
            s.top_logprobs = static_cast<int32_t>(top.value_or(0));
            p.req.logprobs = p.chat_logprobs;
        } else {
            const auto lp = get_int(b, "logprobs", 0, 20);
            p.logprobs = lp ? static_cast<int>(*lp) : -1;
            s.top_logprobs = lp ? static_cast<int32_t>(*lp) : 0;
            p.req.logprobs = lp.has_value();
            p.echo = get_bool(b, "echo").value_or(false);
        }
        p.req.eos_ids = o.eos_ids;
    }

    // max_tokens against the context: a request that cannot fit is a 400 with the numbers.
    void resolve_lengths(const ojson& b, Parsed& p, const char* what) const {
        const int64_t ctx = engine.session().max_model_len();
        const int64_t n_prompt = static_cast<int64_t>(p.prompt.size());
        if (n_prompt == 0) bad("the prompt is empty", "prompt");
        auto mt = get_int(b, "max_completion_tokens", 1, INT32_MAX);
        const char* mt_key = "max_completion_tokens";
        if (!mt) {
            mt = get_int(b, "max_tokens", 1, INT32_MAX);
            mt_key = "max_tokens";
        }
        if (n_prompt >= ctx)
            bad(fmt::format(
                    "This model's maximum context length is {} tokens. However, your {} has {} "
                    "tokens "
                    "(at least one token must be left for the completion). Please shorten it.",
                    ctx, what, n_prompt),
                what, "context_length_exceeded");
        if (mt && n_prompt + *mt > ctx)
            bad(fmt::format(
                    "This model's maximum context length is {} tokens. However, you requested {} "
                    "tokens "
                    "({} in the {}, {} in the completion). Please reduce the length of the {} or "
                    "the completion ('{}').",
                    ctx, n_prompt + *mt, n_prompt, what, *mt, what, mt_key),
                mt_key, "context_length_exceeded");
        p.req.max_tokens = static_cast<int32_t>(mt.value_or(ctx - n_prompt));
        p.req.prompt = p.prompt;
    }

    Parsed parse_chat(const ojson& b) const {
        Parsed p;
        const ojson* msgs = field(b, "messages");
        if (!msgs) bad("'messages' is required", "messages");
        if (!msgs->is_array() || msgs->empty())
            bad("'messages' must be a non-empty list", "messages");
        ojson messages = ojson::array();
        for (const auto& m : *msgs) {
            if (!m.is_object()) bad("each message must be an object", "messages");
            const ojson* role = field(m, "role");
            if (!role || !role->is_string()) bad("each message needs a string 'role'", "messages");
            ojson mm = m;
            if (const ojson* c = field(m, "content")) {
                if (c->is_array()) {  // content parts: only text is supported
                    std::string text;
                    for (const auto& part : *c) {
                        if (!part.is_object() || part.value("type", "") != "text" ||
                            !part.contains("text") || !part["text"].is_string())
                            bad("only text content parts ({\"type\": \"text\", \"text\": ...}) are "
                                "supported",
                                "messages");
                        text += part["text"].get<std::string>();
                    }
                    mm["content"] = text;
                } else if (!c->is_string()) {
                    bad("message 'content' must be a string or a list of text parts", "messages");
                }
            }
            messages.push_back(std::move(mm));
        }
        if (!tmpl)
            bad("this model has no chat template; start the server with --chat-template FILE or "
                "use "
                "/v1/completions");
        ChatTemplateInputs in;
        in.messages = std::move(messages);
        if (const ojson* tools = field(b, "tools")) in.tools = *tools;
        in.add_generation_prompt = true;
        in.bos_token = tok.bos_token();
        in.eos_token = tok.eos_token();
        if (const ojson* kw = field(b, "chat_template_kwargs")) {
            if (!kw->is_object())
                bad("'chat_template_kwargs' must be an object", "chat_template_kwargs");
            in.extra = *kw;
        }
        try {
            p.prompt_text = tmpl->render(in);
        } catch (const Error& e) {
            bad(fmt::format("the chat template failed on these messages: {}", e.what()),
                "messages");
        }
        p.prompt = tok.encode(p.prompt_text, /*add_special_tokens=*/false);
        parse_sampling(b, p, true);
        resolve_lengths(b, p, "messages");
        return p;
    }

    Parsed parse_completion(const ojson& b) const {
        Parsed p;
        const ojson* pr = field(b, "prompt");
        if (!pr) bad("'prompt' is required", "prompt");
        const int64_t V = engine.session().config().vocab_size;
        auto from_ids = [&](const ojson& a) {
            for (const auto& x : a) {
                if (!x.is_number_integer()) bad("'prompt' token ids must be integers", "prompt");
                const int64_t id = x.get<int64_t>();
                if (id < 0 || id >= V)
                    bad(fmt::format("token id {} is outside the vocabulary [0, {})", id, V),
                        "prompt");
                p.prompt.push_back(static_cast<int32_t>(id));
            }
            p.prompt_text = tok.decode(p.prompt);
        };
        if (pr->is_string()) {
            p.prompt_text = pr->get<std::string>();
            p.prompt = tok.encode(p.prompt_text, true);
        } else if (pr->is_array() && !pr->empty() && (*pr)[0].is_number()) {
            from_ids(*pr);
        } else if (pr->is_array() && pr->size() == 1 && (*pr)[0].is_string()) {
            p.prompt_text = (*pr)[0].get<std::string>();
            p.prompt = tok.encode(p.prompt_text, true);
        } else if (pr->is_array() && pr->size() == 1 && (*pr)[0].is_array()) {
            from_ids((*pr)[0]);
        } else if (pr->is_array() && pr->size() > 1) {
            bad("only one prompt per request is supported; send several requests", "prompt");
        } else {
            bad("'prompt' must be a string, a list of token ids, or a list with one of those",
                "prompt");
        }
        parse_sampling(b, p, false);
        resolve_lengths(b, p, "prompt");
        return p;
    }

    // ---- responses ----
    // A token's own text. SentencePiece decoders drop the leading space of a sequence's first
    // token, which a lone token always is: put it back from the piece's U+2581.
    std::string token_text(int32_t id) const {
        std::string s = tok.decode({id});
        const std::string piece = tok.id_to_piece(id);
        if (piece.rfind("\xe2\x96\x81", 0) == 0 && (s.empty() || s[0] != ' '))
            s = std::string(" ") + s;
        return s;
    }

    ojson chat_logprobs_json(const std::vector<TokenInfo>& toks) const {
        ojson content = ojson::array();
        for (const auto& t : toks) {
            const std::string s = token_text(t.id);
            ojson top = ojson::array();
            for (const auto& a : t.top) {
                const std::string as = token_text(a.id);
                top.push_back({{"token", as}, {"logprob", a.logprob}, {"bytes", bytes_of(as)}});
            }
            content.push_back({{"token", s},
                               {"logprob", t.logprob},
                               {"bytes", bytes_of(s)},
                               {"top_logprobs", top}});
        }
        return ojson{{"content", content}};
    }

    ojson completion_logprobs_json(const std::vector<TokenInfo>& toks, size_t text_offset,
                                   int n_top) const {
        ojson tokens = ojson::array(), lps = ojson::array(), tops = ojson::array(),
              offs = ojson::array();
        size_t off = text_offset;
        for (const auto& t : toks) {
            const std::string s = token_text(t.id);
            tokens.push_back(s);
            lps.push_back(t.logprob);
            offs.push_back(off);
            off += s.size();
            ojson top = ojson::object();
            for (const auto& a : t.top) top[token_text(a.id)] = a.logprob;
            tops.push_back(n_top > 0 ? top : ojson(nullptr));
        }
        return ojson{{"tokens", tokens},
                     {"token_logprobs", lps},
                     {"top_logprobs", tops},
                     {"text_offset", offs}};
    }

    static ojson usage_json(int64_t prompt, int64_t completion, int64_t cached) {
        return ojson{{"prompt_tokens", prompt},
                     {"completion_tokens", completion},
                     {"total_tokens", prompt + completion},
                     {"prompt_tokens_details", {{"cached_tokens", cached}}}};
    }

    std::shared_ptr<RequestStream> submit(Request r) {
        try {
            return engine.submit(std::move(r));
        } catch (const Overloaded& e) {
            throw ApiError{503, e.what(), "server_error", "", "overloaded"};
        }
    }

    // Cancels the request unless it finished (RAII: any exit path frees its blocks).
    struct CancelGuard {
        Engine& e;
        std::shared_ptr<RequestStream> s;
        ~CancelGuard() {
            if (s && !s->finished()) e.cancel(s->id());
        }
    };

    void handle_generate(const httplib::Request& hreq, httplib::Response& res, bool chat) {
        const ojson body = parse_body(hreq);
        Parsed p = chat ? parse_chat(body) : parse_completion(body);
        const int n = p.req.n;
        const std::string id = random_id(chat ? "chatcmpl" : "cmpl");
        const int64_t created = now_unix();
        if (!p.stream) {
            auto stream = submit(std::move(p.req));
            CancelGuard guard{engine, stream};
            std::vector<Choice> choices(static_cast<size_t>(n));
            int64_t prompt_tokens = 0, completion = 0, cached = 0;
            double prefill_s = 0, ttft_s = 0, total_s = 0;
            std::string error;
            while (!stream->finished()) {
                auto ev = stream->next(std::chrono::milliseconds(200));
                if (!ev) continue;
                Choice& c = choices[static_cast<size_t>(ev->index)];
                c.text += ev->text;
                c.tokens.insert(c.tokens.end(), ev->tokens.begin(), ev->tokens.end());
                if (ev->finished) {
                    c.finished = true;
                    c.finish_reason = ev->finish_reason;
                    if (ev->finish_reason == "error") error = ev->error;
                    prompt_tokens = ev->prompt_tokens;
                    completion += ev->completion_tokens;
                    cached = std::max(cached, ev->cached_tokens);
                    prefill_s = std::max(prefill_s, ev->prefill_s);
                    ttft_s = std::max(ttft_s, ev->ttft_s);
                    total_s = std::max(total_s, ev->total_s);
                }
            }
            if (!error.empty()) throw ApiError{500, error, "server_error", "", "internal_error"};
            ojson out_choices = ojson::array();
            for (int i = 0; i < n; ++i) {
                const Choice& c = choices[static_cast<size_t>(i)];
                ojson ch;
                ch["index"] = i;
                if (chat) {
                    ch["message"] = {{"role", "assistant"}, {"content", c.text}};
                    ch["logprobs"] =
                        p.chat_logprobs ? chat_logprobs_json(c.tokens) : ojson(nullptr);
                } else {
                    const std::string prefix = p.echo ? p.prompt_text : std::string();
                    ch["text"] = prefix + c.text;
                    ch["logprobs"] = p.logprobs >= 0 ? completion_logprobs_json(
                                                           c.tokens, prefix.size(), p.logprobs)
                                                     : ojson(nullptr);
                }
                ch["finish_reason"] = c.finish_reason;
                out_choices.push_back(std::move(ch));
            }
            ojson out = {{"id", id},
                         {"object", chat ? "chat.completion" : "text_completion"},
                         {"created", created},
                         {"model", o.model_name},
                         {"choices", out_choices},
                         {"usage", usage_json(prompt_tokens, completion, cached)},
                         {"timings",
                          {{"prefill_ms", prefill_s * 1e3},
                           {"ttft_ms", ttft_s * 1e3},
                           {"total_ms", total_s * 1e3}}}};
            res.set_content(out.dump(-1, ' ', false, ojson::error_handler_t::replace), "application/json");
            return;
        }

        // Streaming: server-sent events, one chunk per new text, ending in [DONE].
        auto stream = submit(std::move(p.req));
        auto shared = std::make_shared<Parsed>(std::move(p));
        Engine& eng = engine;
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream",
            [this, stream, shared, id, created, chat, n](size_t, httplib::DataSink& sink) -> bool {
                CancelGuard guard{engine, stream};
                const Parsed& p = *shared;
                auto send = [&](const ojson& j) {
                    const std::string s = "data: " + j.dump(-1, ' ', false, ojson::error_handler_t::replace) + "\n\n";
                    return sink.write(s.data(), s.size());
                };
                auto chunk = [&](ojson choice) {
                    return ojson{{"id", id},
                                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                                 {"created", created},
                                 {"model", o.model_name},
                                 {"choices", ojson::array({std::move(choice)})}};
                };
                if (chat)
                    for (int i = 0; i < n; ++i)
                        if (!send(chunk({{"index", i},
                                         {"delta", {{"role", "assistant"}, {"content", ""}}},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}})))
                            return false;
                std::vector<size_t> offsets(static_cast<size_t>(n),
                                            p.echo ? p.prompt_text.size() : 0);
                if (!chat && p.echo)
                    for (int i = 0; i < n; ++i)
                        if (!send(chunk({{"index", i},
                                         {"text", p.prompt_text},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}})))
                            return false;
                int64_t prompt_tokens = 0, completion = 0, cached = 0;
                while (!stream->finished()) {
                    auto ev = stream->next(std::chrono::milliseconds(100));
                    if (!ev) {
                        if (!sink.is_writable()) return false;  // the client went away
                        continue;
                    }
                    if (ev->finished && ev->finish_reason == "error") {
                        send(ojson{{"error",
                                    {{"message", ev->error},
                                     {"type", "server_error"},
                                     {"param", nullptr},
                                     {"code", 500}}}});
                        continue;
                    }
                    const bool has_text =
                        !ev->text.empty() || (p.req.logprobs && !ev->tokens.empty());
                    if (has_text || ev->finished) {
                        ojson ch{{"index", ev->index}};
                        if (chat) {
                            ch["delta"] = has_text ? ojson{{"content", ev->text}} : ojson::object();
                            ch["logprobs"] = p.chat_logprobs && !ev->tokens.empty()
                                                 ? chat_logprobs_json(ev->tokens)
                                                 : ojson(nullptr);
                        } else {
                            ch["text"] = ev->text;
                            auto& off = offsets[static_cast<size_t>(ev->index)];
                            ch["logprobs"] =
                                p.logprobs >= 0 && !ev->tokens.empty()
                                    ? completion_logprobs_json(ev->tokens, off, p.logprobs)
                                    : ojson(nullptr);
                            off += ev->text.size();
                        }
                        ch["finish_reason"] =
                            ev->finished ? ojson(ev->finish_reason) : ojson(nullptr);
                        if (!send(chunk(std::move(ch)))) return false;
                    }
                    if (ev->finished) {
                        prompt_tokens = ev->prompt_tokens;
                        completion += ev->completion_tokens;
                        cached = std::max(cached, ev->cached_tokens);
                    }
                }
                if (p.include_usage) {
                    ojson u = chunk(nullptr);
                    u["choices"] = ojson::array();
                    u["usage"] = usage_json(prompt_tokens, completion, cached);
                    if (!send(u)) return false;
                }
                const std::string done = "data: [DONE]\n\n";
                if (!sink.write(done.data(), done.size())) return false;
                sink.done();
                return true;
            },
            [&eng, stream](bool) {
                if (!stream->finished()) eng.cancel(stream->id());
            });
    }

    std::string metrics_text() const {
        const SchedulerMetrics m = engine.metrics();
        std::string s;
        auto metric = [&](const char* name, const char* type, const char* help) {
            s += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
        };
        auto hist = [&](const char* name, const char* help, const Histogram& h) {
            metric(name, "histogram", help);
            uint64_t cum = 0;
            for (size_t i = 0; i < h.bounds.size(); ++i) {
                cum += h.counts[i];
                s += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cum);
            }
            s += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, h.count,
                             name, h.sum, name, h.count);
        };
        metric("farsight_requests_received_total", "counter", "Requests accepted by the engine");
        s += fmt::format("farsight_requests_received_total {}\n", m.requests_received);
        metric("farsight_request_success_total", "counter", "Finished sequences by finish reason");
        s += fmt::format("farsight_request_success_total{{finish_reason=\"stop\"}} {}\n",
                         m.requests_stop);
        s += fmt::format("farsight_request_success_total{{finish_reason=\"length\"}} {}\n",
                         m.requests_length);
        s += fmt::format("farsight_request_success_total{{finish_reason=\"abort\"}} {}\n",
                         m.requests_abort);
        s += fmt::format("farsight_request_success_total{{finish_reason=\"error\"}} {}\n",
                         m.requests_error);
        metric("farsight_prompt_tokens_total", "counter", "Prompt tokens received");
        s += fmt::format("farsight_prompt_tokens_total {}\n", m.prompt_tokens);
        metric("farsight_generation_tokens_total", "counter", "Tokens generated");
        s += fmt::format("farsight_generation_tokens_total {}\n", m.generation_tokens);
        metric("farsight_prefix_cache_queries_total", "counter",
               "Tokens looked up in the prefix cache");
        s += fmt::format("farsight_prefix_cache_queries_total {}\n", m.prefix_cache_queries);
        metric("farsight_prefix_cache_hits_total", "counter",
               "Prompt tokens served from the prefix cache");
        s += fmt::format("farsight_prefix_cache_hits_total {}\n", m.prefix_cache_hits);
        metric("farsight_num_preemptions_total", "counter",
               "Sequences preempted (recomputed later)");
        s += fmt::format("farsight_num_preemptions_total {}\n", m.preemptions);
        metric("farsight_engine_steps_total", "counter", "Forward steps run");
        s += fmt::format("farsight_engine_steps_total {}\n", m.steps);
        metric("farsight_num_requests_running", "gauge", "Sequences in the running batch");
        s += fmt::format("farsight_num_requests_running {}\n", m.running);
        metric("farsight_num_requests_waiting", "gauge",
               "Sequences waiting to be scheduled (queue depth)");
        s += fmt::format("farsight_num_requests_waiting {}\n", m.waiting);
        metric("farsight_kv_blocks", "gauge",
               "KV cache blocks: used (referenced by a sequence), free (allocatable, includes "
               "cached_free), cached_free (free but holding a reusable prefix)");
        s += fmt::format("farsight_kv_blocks{{state=\"used\"}} {}\n", m.kv_blocks_used);
        s += fmt::format("farsight_kv_blocks{{state=\"free\"}} {}\n", m.kv_blocks_free);
        s += fmt::format("farsight_kv_blocks{{state=\"cached_free\"}} {}\n",
                         m.kv_blocks_cached_free);
        metric("farsight_kv_blocks_total", "gauge", "KV cache blocks in all");
        s += fmt::format("farsight_kv_blocks_total {}\n", m.kv_blocks_total);
        metric("farsight_kv_cache_usage_perc", "gauge", "Share of KV blocks in use");
        s += fmt::format("farsight_kv_cache_usage_perc {}\n",
                         m.kv_blocks_total ? static_cast<double>(m.kv_blocks_used) /
                                                 static_cast<double>(m.kv_blocks_total)
                                           : 0.0);
        hist("farsight_time_to_first_token_seconds", "Time from arrival to the first token",
             m.ttft);
        hist("farsight_inter_token_latency_seconds",
             "Time between consecutive tokens of a sequence", m.itl);
        hist("farsight_e2e_request_latency_seconds", "Time from arrival to finish", m.e2e);
        return s;
    }

    bool authorized(const httplib::Request& r) const {
        if (o.api_key.empty()) return true;
        return r.get_header_value("Authorization") == "Bearer " + o.api_key;
    }

    template <typename F>
    httplib::Server::Handler wrap(F f) {
        return [f](const httplib::Request& req, httplib::Response& res) {
            try {
                f(req, res);
            } catch (const ApiError& e) {
                send_error(res, e);
            } catch (const Error& e) {
                send_error(res, ApiError{400, e.what(), "invalid_request_error", "", ""});
            } catch (const std::exception& e) {
                send_error(res, ApiError{500, e.what(), "server_error", "", "internal_error"});
            }
        };
    }

    void setup() {
        http.new_task_queue = [n = o.http_threads] {
            return new httplib::ThreadPool(static_cast<size_t>(n));
        };
        http.set_payload_max_length(o.max_body_bytes);
        http.set_keep_alive_timeout(2);
        http.set_read_timeout(30);
        http.set_write_timeout(30);
        http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
            if (req.path.rfind("/v1/", 0) == 0 && !authorized(req)) {
                send_error(
                    res,
                    ApiError{401, "Incorrect API key provided (send 'Authorization: Bearer KEY')",
                             "invalid_request_error", "", "invalid_api_key"});
                return httplib::Server::HandlerResponse::Handled;
            }
            return httplib::Server::HandlerResponse::Unhandled;
        });
        http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;
            if (res.status == 404)
                send_error(res, ApiError{404, fmt::format("no route {} {}", req.method, req.path),
                                         "invalid_request_error", "", "not_found"});
            else if (res.status == 413)
                send_error(res, ApiError{413, "the request body is too large",
                                         "invalid_request_error", "", "payload_too_large"});
            else
                send_error(
                    res,
                    ApiError{res.status, fmt::format("HTTP error {}", res.status),
                             res.status >= 500 ? "server_error" : "invalid_request_error", "", ""});
        });
        http.set_exception_handler(
            [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
                std::string msg = "internal error";
                try {
                    if (ep) std::rethrow_exception(ep);
                } catch (const std::exception& e) {
                    msg = e.what();
                } catch (...) {
                }
                send_error(res, ApiError{500, msg, "server_error", "", "internal_error"});
            });
        http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
            res.set_content("{\"status\":\"ok\"}", "application/json");
        });
        http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
            res.set_content(metrics_text(), "text/plain; version=0.0.4");
        });
        http.Get("/v1/models", wrap([this](const httplib::Request&, httplib::Response& res) {
                     ojson m = {{"id", o.model_name},
                                {"object", "model"},
                                {"created", created},
                                {"owned_by", "farsight"},
                                {"max_model_len", engine.session().max_model_len()}};
                     res.set_content(ojson{{"object", "list"}, {"data", ojson::array({m})}}.dump(),
                                     "application/json");
                 }));
        http.Post("/v1/chat/completions",
                  wrap([this](const httplib::Request& req, httplib::Response& res) {
                      handle_generate(req, res, true);
                  }));
        http.Post("/v1/completions",
                  wrap([this](const httplib::Request& req, httplib::Response& res) {
                      handle_generate(req, res, false);
                  }));
    }
};

Server::Server(Engine& engine, const Tokenizer& tok, ServerOptions opts)
    : impl_(std::make_unique<Impl>(engine, tok, std::move(opts))) {}

Server::~Server() {
    stop();
}

int Server::bind() {
    Impl& m = *impl_;
    if (m.o.port == 0) {
        m.port = m.http.bind_to_any_port(m.o.host);
        FS_CHECK(m.port > 0, "cannot bind to {} (any port)", m.o.host);
    } else {
        FS_CHECK(m.http.bind_to_port(m.o.host, m.o.port),
                 "cannot bind to {}:{} (in use? try another --port)", m.o.host, m.o.port);
        m.port = m.o.port;
    }
    return m.port;
}

int Server::port() const {
    return impl_->port;
}

void Server::listen() {
    impl_->http.listen_after_bind();
}

void Server::stop() {
    impl_->stopping = true;
    impl_->http.stop();
}

bool Server::running() const {
    return impl_->http.is_running();
}

}  // namespace farsight
