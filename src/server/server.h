#pragma once
// An OpenAI-compatible HTTP server over an Engine: /v1/chat/completions, /v1/completions,
// /v1/models, /health and /metrics (Prometheus text). Errors use the OpenAI shape
// {"error": {"message", "type", "param", "code"}}.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "engine/generate.h"
#include "tokenizer/tokenizer.h"

namespace farsight {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;                           // 0 = any free port (see Server::port())
    std::string api_key;                       // empty = no authentication
    std::string model_name = "model";          // the id clients must name in "model"
    std::optional<std::string> chat_template;  // Jinja source; none = chat requests fail (400)
    GenerationDefaults defaults;               // sampling defaults (generation_config.json)
    std::vector<int32_t> eos_ids;              // stop generation on these
    size_t max_body_bytes = 4u << 20;          // larger request bodies get 413
    int http_threads = 64;                     // concurrent connections served
    int max_n = 16;                            // largest "n"
};

class Server {
  public:
    Server(Engine& engine, const Tokenizer& tok, ServerOptions opts);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    // Binds host:port (throws Error when it cannot); returns the port bound.
    int bind();
    int port() const;
    // Serves until stop(); in-flight requests finish before it returns.
    void listen();
    // Stops accepting connections (thread-safe; e.g. from a signal-handling thread).
    void stop();
    bool running() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace farsight
