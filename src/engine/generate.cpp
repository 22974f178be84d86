#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "engine/stop.h"

namespace farsight {

GenerationDefaults load_generation_defaults(const std::filesystem::path& model_dir) {
    GenerationDefaults d;
    const auto p = model_dir / "generation_config.json";
    if (model_dir.empty() || !std::filesystem::exists(p)) return d;
    nlohmann::json j;
    try {
        std::ifstream f(p);
        j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
        fail("{}: not valid JSON ({})", p.string(), e.what());
    }
    auto num = [&](const char* k) -> std::optional<float> {
        if (j.contains(k) && j[k].is_number()) return j[k].get<float>();
        return std::nullopt;
    };
    d.temperature = num("temperature");
    d.top_p = num("top_p");
    d.min_p = num("min_p");
    d.repetition_penalty = num("repetition_penalty");
    if (j.contains("top_k") && j["top_k"].is_number_integer()) d.top_k = j["top_k"].get<int32_t>();
    if (j.contains("max_new_tokens") && j["max_new_tokens"].is_number_integer())
        d.max_new_tokens = j["max_new_tokens"].get<int32_t>();
    if (j.contains("do_sample") && j["do_sample"].is_boolean()) d.do_sample = j["do_sample"].get<bool>();
    if (j.contains("eos_token_id")) {
        const auto& e = j["eos_token_id"];
        if (e.is_number_integer()) d.eos_ids.push_back(e.get<int32_t>());
        else if (e.is_array())
            for (const auto& x : e)
                if (x.is_number_integer()) d.eos_ids.push_back(x.get<int32_t>());
    }
    return d;
}

GenerationResult generate(Session& s, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                          const GenerationOptions& o, const TextCallback& on_text) {
    using clock = std::chrono::steady_clock;
    GenerationResult r;
    r.prompt_ids = prompt;
    FS_CHECK(!prompt.empty(), "the prompt is empty (no tokens, not even BOS)");
    const int64_t ctx = s.max_model_len();
    FS_CHECK(static_cast<int64_t>(prompt.size()) < ctx,
             "the prompt has {} tokens but the context is {} tokens (--max-model-len); shorten the "
             "prompt or raise the limit",
             prompt.size(), ctx);
    const int64_t budget = std::min<int64_t>(o.max_new_tokens, ctx - static_cast<int64_t>(prompt.size()));
    // Refuse up front what the KV cache cannot hold, rather than failing mid-generation.
    const int64_t need = static_cast<int64_t>(prompt.size()) + budget;
    const int64_t free_tokens = s.pool().num_free() * s.block_size();
    FS_CHECK(need <= free_tokens,
             "this request needs KV cache room for {} tokens ({} prompt + {} new) but only {} are free "
             "(cache: {} tokens; see `farsight plan`, --kv-tokens, --gpu-memory-fraction)",
             need, prompt.size(), budget, free_tokens, s.kv_capacity_tokens());
    const int64_t V = s.config().vocab_size;

    Sampler sampler(o.sampling);
    TokenHistory hist;
    hist.add_prompt(prompt);
    StopMatcher stops(o.stop);
    IncrementalDecoder dec(tok, /*skip_special=*/true);
    for (int32_t id : prompt) dec.push(id);  // context for spacing; prompt text is not emitted
    (void)dec.flush();
    auto emit = [&](const std::string& piece) {
        if (piece.empty()) return;
        r.text += piece;
        if (on_text) on_text(piece);
    };

    BlockTable table;
    struct Release {
        Session& s;
        BlockTable& t;
        ~Release() { t.release(s.pool()); }
    } release{s, table};

    std::vector<int32_t> next(prompt.begin(), prompt.end());
    r.finish_reason = "length";
    auto t0 = clock::now();
    auto t_first = t0;
    // Sampling on the backend (only the id and its logprob come back) when it prefers that and
    // the parameters need no logits on the host (no penalties, min-p or top logprobs).
    RowSampling rs;
    const bool on_device = s.device_sampling() && sampler.row_sampling(0, &rs);
    // Pipelined (Session::forward_sample_enqueue): step k + 1 is queued, its token fed from
    // step k's sampling, before step k's id is read back; a step queued past the end (eos,
    // stop) is collected and dropped.
    const bool pipelined = on_device && s.pipelined_decode();
    int64_t queued = 0;
    static const int32_t kFedToken = 0;  // placeholder: the token comes from the last sampling
    auto enqueue = [&] {
        rs.counter = static_cast<uint64_t>(queued);
        SeqStep st{&table, queued == 0 ? std::span<const int32_t>(next)
                                       : std::span<const int32_t>(&kFedToken, 1),
                   false};
        s.forward_sample_enqueue(std::span<SeqStep>(&st, 1), std::span<const RowSampling>(&rs, 1),
                                 /*tokens_from_previous=*/queued > 0, /*want_logprobs=*/true);
        ++queued;
    };
    struct Drain {  // leaves the session with nothing outstanding, on every exit
        Session& s;
        ~Drain() {
            try {
                while (s.outstanding() > 0) (void)s.forward_sample_collect();
            } catch (...) {
            }
        }
    } drain{s};
    if (pipelined) enqueue();
    std::vector<float> lp;
    for (int64_t step = 0; step < budget; ++step) {
        SeqStep st{&table, next, false};
        int32_t id = 0;
        if (pipelined) {
            if (queued < budget) enqueue();
            id = s.forward_sample_collect(&lp)[0];
            r.logprobs.push_back(lp[0]);
        } else if (on_device) {
            rs.counter = static_cast<uint64_t>(step);
            id = s.forward_sample(std::span<SeqStep>(&st, 1), std::span<const RowSampling>(&rs, 1), &lp)[0];
            r.logprobs.push_back(lp[0]);
        } else {
            std::vector<float> logits = s.forward(std::span<SeqStep>(&st, 1));
            std::span<float> lg(logits.data(), static_cast<size_t>(V));
            id = sampler.sample(lg, hist);
            r.logprobs.push_back(Sampler::logprob_of(lg, id));
            if (o.sampling.top_logprobs > 0) r.top_logprobs.push_back(Sampler::top_logprobs(lg, o.sampling.top_logprobs));
        }
        if (step == 0) {
            t_first = clock::now();
            r.prefill_seconds = std::chrono::duration<double>(t_first - t0).count();
        }
        r.ids.push_back(id);
        hist.add_output(id);
        if (!o.ignore_eos && std::find(o.eos_ids.begin(), o.eos_ids.end(), id) != o.eos_ids.end()) {
            r.finish_reason = "eos";
            break;
        }
        emit(stops.push(dec.push(id)));
        if (stops.stopped()) {
            r.finish_reason = "stop";
            break;
        }
        next.assign(1, id);
    }
    if (!stops.stopped()) {
        emit(stops.push(dec.flush()));
        if (stops.stopped()) r.finish_reason = "stop";
        else emit(stops.flush());
    }
    r.decode_seconds = std::chrono::duration<double>(clock::now() - t_first).count();
    return r;
}

}  // namespace farsight
