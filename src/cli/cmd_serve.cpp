// farsight serve: an OpenAI-compatible HTTP server with continuous batching.
#include <fmt/format.h>

#include <pthread.h>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "engine/engine.h"
#include "server/server.h"
#include "tokenizer/chat_template.h"

namespace farsight::cli {
namespace {

struct ServeOpts {
    LoadOptions load;
    std::string tokenizer, chat_template_file;
    ServerOptions server;
    SchedulerConfig sched;
    std::string served_name;
    int64_t max_queue = 1024;
    bool no_prefix_caching = false;
};

int run_serve(ServeOpts& o) {
    // SIGINT/SIGTERM are taken by a dedicated thread (sigwait); every other thread blocks them.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a client that went away must not kill the server

    Session s(o.load);
    const Tokenizer tok = o.tokenizer.empty() ? [&] {
        FS_CHECK(!s.model_dir().empty(),
                 "random-weight models have no tokenizer: pass --tokenizer FOLDER (a folder with tokenizer.json)");
        return Tokenizer::from_folder(s.model_dir());
    }()
                                              : Tokenizer::from_folder(o.tokenizer);
    ServerOptions so = o.server;
    if (so.api_key.empty())
        if (const char* k = std::getenv("FARSIGHT_API_KEY")) so.api_key = k;
    so.model_name = !o.served_name.empty()  ? o.served_name
                    : !o.load.model.empty() ? o.load.model
                                            : "dummy-" + o.load.dummy;
    if (!o.chat_template_file.empty()) {
        std::ifstream f(o.chat_template_file);
        FS_CHECK(f.good(), "cannot read chat template {}", o.chat_template_file);
        std::stringstream ss;
        ss << f.rdbuf();
        so.chat_template = ss.str();
    } else if (!s.model_dir().empty()) {
        so.chat_template = find_chat_template(s.model_dir());
    } else if (!o.tokenizer.empty()) {
        so.chat_template = find_chat_template(o.tokenizer);
    }
    so.defaults = load_generation_defaults(s.model_dir());
    so.eos_ids = tok.eos_ids();
    for (int32_t id : so.defaults.eos_ids)
        if (std::find(so.eos_ids.begin(), so.eos_ids.end(), id) == so.eos_ids.end())
            so.eos_ids.push_back(id);
    SchedulerConfig sc = o.sched;
    sc.prefix_caching = !o.no_prefix_caching;
    Engine engine(s, tok, sc, o.max_queue);
    Server server(engine, tok, so);
    const int port = server.bind();
    fmt::print(
        stderr,
        "farsight serve: model '{}' ({} layers, context {}, KV cache {} tokens in {} blocks), "
        "listening on http://{}:{}{}{}\n",
        so.model_name, s.config().num_layers, s.max_model_len(), s.kv_capacity_tokens(),
        s.pool().num_blocks(), so.host, port, so.api_key.empty() ? "" : " (API key required)",
        so.chat_template ? "" : " (no chat template: /v1/chat/completions is disabled)");
    std::fflush(stderr);

    std::thread sig([&] {
        int got = 0;
        sigwait(&sigs, &got);
        fmt::print(stderr, "farsight serve: signal {} received, finishing in-flight requests\n",
                   got);
        server.stop();
    });
    server.listen();  // returns after stop(), once in-flight HTTP requests are done
    engine.shutdown(/*drain=*/true);
    // Wake the signal thread if listen() ended for another reason.
    if (sig.joinable()) {
        pthread_kill(sig.native_handle(), SIGTERM);
        sig.join();
    }
    fmt::print(stderr, "farsight serve: stopped\n");
    return 0;
}

Register reg(
    "serve", "Serve the model over an OpenAI-compatible HTTP API (continuous batching)",
    [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<ServeOpts>();
        add_model_options(app, o->load);
        app.add_option("--tokenizer", o->tokenizer, "Tokenizer folder (default: the model folder)");
        app.add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
        app.add_option("--port", o->server.port, "Port to listen on (0 = any free port)")
            ->capture_default_str();
        app.add_option(
            "--api-key", o->server.api_key,
            "Require 'Authorization: Bearer KEY' on /v1/* (default: env FARSIGHT_API_KEY)");
        app.add_option("--served-model-name", o->served_name,
                       "Model id clients send in \"model\" (default: the -m argument)");
        app.add_option("--chat-template", o->chat_template_file,
                       "Jinja chat template file (default: the model's)");
        app.add_option("--max-num-seqs", o->sched.max_num_seqs,
                       "Sequences in the running batch at most")
            ->capture_default_str();
        app.add_option("--max-num-batched-tokens", o->sched.max_num_batched_tokens,
                       "Tokens per forward step (decode tokens first, then prefill chunks)")
            ->capture_default_str();
        app.add_option("--max-queue", o->max_queue,
                       "Requests in flight before new ones get 503 (overloaded)")
            ->capture_default_str();
        app.add_option("--max-body-bytes", o->server.max_body_bytes,
                       "Largest request body (413 above)")
            ->capture_default_str();
        app.add_option("--http-threads", o->server.http_threads, "Connections served at once")
            ->capture_default_str();
        app.add_flag("--no-prefix-caching", o->no_prefix_caching,
                     "Do not reuse cached prompt prefixes");
        return [o] { return run_serve(*o); };
    });

}  // namespace
}  // namespace farsight::cli
