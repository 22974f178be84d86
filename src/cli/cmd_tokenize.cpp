// farsight tokenize: encode/decode text with a model's tokenizer.json, or benchmark encoding.
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/command.h"
#include "io/hf_cache.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace farsight::cli {
namespace {

struct Options {
    std::string model, text, decode, bench;
    bool no_special = false, json = false, text_set = false;
};

Tokenizer load(const std::string& model) {
    std::filesystem::path p(model);
    if (std::filesystem::is_regular_file(p)) return Tokenizer::from_file(p);
    return Tokenizer::from_folder(resolve_model_path(model));  // a folder or an HF cache repo id
}

int run(const Options& o) {
    Tokenizer tok = load(o.model);
    if (!o.bench.empty()) {
        std::ifstream f(o.bench, std::ios::binary);
        FS_CHECK(f.good(), "cannot open benchmark text {}", o.bench);
        std::ostringstream ss;
        ss << f.rdbuf();
        std::string text = ss.str();
        double mb = static_cast<double>(text.size()) / 1e6;
        // Paragraph chunks (split after blank lines), then the whole text as one string.
        std::vector<std::string_view> chunks;
        for (size_t start = 0; start < text.size();) {
            size_t end = text.find("\n\n", start);
            end = end == std::string::npos ? text.size() : end + 2;
            chunks.push_back(std::string_view(text).substr(start, end - start));
            start = end;
        }
        // Wall time, and this thread's CPU time (robust on a busy shared machine).
        auto cpu_now = [] {
            timespec ts{};
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
            return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
        };
        auto t0 = std::chrono::steady_clock::now();
        double c0 = cpu_now();
        size_t n = 0;
        for (auto c : chunks) n += tok.encode(c, false).size();
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double cs = cpu_now() - c0;
        fmt::print(
            "farsight, {} paragraphs: {:.2f} MB -> {} tokens in {:.3f} s: {:.2f} MB/s "
            "(cpu {:.3f} s: {:.2f} MB/s)\n",
            chunks.size(), mb, n, s, mb / s, cs, mb / cs);
        t0 = std::chrono::steady_clock::now();
        c0 = cpu_now();
        n = tok.encode(text, false).size();
        s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        cs = cpu_now() - c0;
        fmt::print(
            "farsight, whole text as one string: {} tokens in {:.3f} s: {:.2f} MB/s (cpu {:.3f} "
            "s: {:.2f} MB/s)\n",
            n, s, mb / s, cs, mb / cs);
        return 0;
    }
    if (!o.decode.empty()) {
        std::vector<int32_t> ids;
        std::istringstream in(o.decode);
        std::string word;
        while (in >> word) {
            try {
                size_t used = 0;
                long v = std::stol(word, &used);
                FS_CHECK(used == word.size(), "bad token id {:?}", word);
                ids.push_back(static_cast<int32_t>(v));
            } catch (const std::logic_error&) {
                fail("bad token id {:?} in --decode (expected space-separated integers)", word);
            }
        }
        fmt::print("{}\n", tok.decode(ids, o.no_special));
        return 0;
    }
    FS_CHECK(o.text_set, "give --text STR to encode, --decode \"IDS\" to decode, or --bench FILE");
    auto ids = tok.encode(o.text, !o.no_special);
    if (o.json)
        fmt::print("{{\"ids\": [{}]}}\n", fmt::join(ids, ", "));
    else
        fmt::print("{}\n", fmt::join(ids, " "));
    return 0;
}

Register reg(
    "tokenize", "Encode text to token ids (or decode ids) with a model's tokenizer",
    [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<Options>();
        app.add_option("-m,--model", o->model, "Folder holding tokenizer.json")->required();
        auto* t = app.add_option("--text", o->text, "Text to encode");
        app.add_flag("--no-special", o->no_special,
                     "Do not add BOS/EOS when encoding; skip special tokens when decoding");
        app.add_flag("--json", o->json, "Print {\"ids\": [...]}");
        app.add_option("--decode", o->decode, "Space-separated ids to decode");
        app.add_option("--bench", o->bench,
                       "Benchmark: encode this file single-threaded and print MB/s");
        return [o, t]() {
            o->text_set = t->count() > 0;
            return run(*o);
        };
    });

}  // namespace
}  // namespace farsight::cli
