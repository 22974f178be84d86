// Tokenizer tests against independent references: llama.cpp's vectors, Hugging Face
// transformers/tokenizers outputs (tests/fixtures/tokenizer, made by tools/make_tokenizer_*.py),
// the stories260K golden file and hand-derived Unicode values.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace farsight {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kShared = FARSIGHT_SHARED_DIR;
const fs::path kFixtures = fs::path(FARSIGHT_FIXTURES_DIR) / "tokenizer";

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    EXPECT_TRUE(f.good()) << "missing " << p;
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Loading the big vocabularies takes a while: load each folder once per process.
const Tokenizer& shared_tokenizer(const std::string& rel) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    auto& slot = cache[rel];
    if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::from_folder(kShared / rel));
    return *slot;
}

const json& fixture(const std::string& name) {
    static std::map<std::string, json> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, json::parse(slurp(kFixtures / name))).first;
    return it->second;
}

// ---------------------------------------------------------------- llama.cpp vectors

struct VocabCase {
    const char* vectors;  // ggml-vocab-<name>.gguf.{inp,out}
    const char* folder;
};

void PrintTo(const VocabCase& c, std::ostream* os) {
    *os << c.vectors;
}

class LlamaCppVectors : public ::testing::TestWithParam<VocabCase> {};

TEST_P(LlamaCppVectors, EncodeAndRoundTrip) {
    const auto& c = GetParam();
    fs::path base = kShared / "tokenizers" / "llamacpp-vectors" /
                    (std::string("ggml-vocab-") + c.vectors + ".gguf");
    std::string inp = slurp(base.string() + ".inp");
    std::string outp = slurp(base.string() + ".out");
    // Strings are separated (and terminated) by "\n__ggml_vocab_test__\n"; .out has one line per
    // string with space-separated ids (an empty line for the empty string).
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> texts;
    for (size_t pos = 0;;) {
        size_t next = inp.find(sep, pos);
        if (next == std::string::npos) {
            ASSERT_EQ(pos, inp.size()) << "trailing text after the last separator";
            break;
        }
        texts.push_back(inp.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::vector<std::vector<int32_t>> expected;
    std::istringstream lines(outp);
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream ls(line);
        std::vector<int32_t> ids;
        int32_t id;
        while (ls >> id) ids.push_back(id);
        expected.push_back(ids);
    }
    ASSERT_EQ(texts.size(), expected.size());
    ASSERT_EQ(texts.size(), 46u);
    const Tokenizer& tok = shared_tokenizer(c.folder);
    int passed = 0, round_trips = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
        auto ids = tok.encode(texts[i], false);
        EXPECT_EQ(ids, expected[i]) << c.vectors << " #" << i << " text: " << texts[i];
        passed += ids == expected[i];
        std::string back = tok.decode(ids);
        EXPECT_EQ(back, texts[i]) << c.vectors << " #" << i;
        round_trips += back == texts[i];
    }
    std::printf("[ vectors  ] %s: %d/%zu encode, %d/%zu round-trip\n", c.vectors, passed,
                texts.size(), round_trips, texts.size());
}

INSTANTIATE_TEST_SUITE_P(Shared, LlamaCppVectors,
                         ::testing::Values(VocabCase{"llama-spm", "tokenizers/llama2"},
                                           VocabCase{"llama-bpe", "tokenizers/llama3"},
                                           VocabCase{"qwen2", "tokenizers/qwen2.5"},
                                           VocabCase{"gpt-2", "tokenizers/gpt2"}),
                         [](const auto& info) {
                             std::string n = info.param.vectors;
                             for (auto& ch : n)
                                 if (ch == '-') ch = '_';
                             return n;
                         });

// ---------------------------------------------------------------- HF corpus fixtures

void check_cases(const Tokenizer& tok, const json& corpus, const json& cases,
                 const std::string& name) {
    ASSERT_EQ(corpus.size(), cases.size());
    int ok = 0;
    for (size_t i = 0; i < corpus.size(); ++i) {
        std::string s = corpus[i].get<std::string>();
        const json& c = cases[i];
        auto ids = tok.encode(s, true);
        auto ids_ns = tok.encode(s, false);
        auto want = c["ids"].get<std::vector<int32_t>>();
        auto want_ns = c["ids_no_special"].get<std::vector<int32_t>>();
        EXPECT_EQ(ids, want) << name << " #" << i << " " << s;
        EXPECT_EQ(ids_ns, want_ns) << name << " #" << i << " (no special) " << s;
        std::string dec = tok.decode(want, false), dec_skip = tok.decode(want, true);
        EXPECT_EQ(dec, c["decoded"].get<std::string>()) << name << " #" << i;
        EXPECT_EQ(dec_skip, c["decoded_skip_special"].get<std::string>()) << name << " #" << i;
        ok += ids == want && ids_ns == want_ns && dec == c["decoded"] &&
              dec_skip == c["decoded_skip_special"];
    }
    std::printf("[ hf       ] %s: %d/%zu strings identical (ids, ids w/o special, decodes)\n",
                name.c_str(), ok, corpus.size());
}

class HfCorpus : public ::testing::TestWithParam<std::string> {};

TEST_P(HfCorpus, IdsAndDecodesMatchTransformers) {
    const json& fx = fixture("hf_corpus.json");
    ASSERT_GE(fx["corpus"].size(), 40u);
    const json& t = fx["tokenizers"][GetParam()];
    const Tokenizer& tok = shared_tokenizer(t["path"].get<std::string>());
    check_cases(tok, fx["corpus"], t["cases"], GetParam());
    if (t["bos_token_id"].is_null())
        EXPECT_FALSE(tok.bos_id().has_value());
    else
        EXPECT_EQ(tok.bos_id(), t["bos_token_id"].get<int32_t>());
    ASSERT_FALSE(tok.eos_ids().empty());
    EXPECT_EQ(tok.eos_ids()[0], t["eos_token_id"].get<int32_t>());
}

TEST_P(HfCorpus, IncrementalDecodeEqualsFullDecode) {
    const json& fx = fixture("hf_corpus.json");
    const json& t = fx["tokenizers"][GetParam()];
    const Tokenizer& tok = shared_tokenizer(t["path"].get<std::string>());
    for (size_t i = 0; i < fx["corpus"].size(); ++i) {
        auto ids = tok.encode(fx["corpus"][i].get<std::string>(), true);
        for (bool skip : {false, true}) {
            IncrementalDecoder dec(tok, skip);
            std::string acc;
            for (int32_t id : ids) {
                std::string piece = dec.push(id);
                EXPECT_TRUE(unicode::is_valid_utf8(piece)) << GetParam() << " #" << i;
                acc += piece;
            }
            acc += dec.flush();
            EXPECT_EQ(acc, tok.decode(ids, skip)) << GetParam() << " #" << i << " skip=" << skip;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Shared, HfCorpus,
                         ::testing::Values("llama2", "mistral-v0.3", "llama3", "qwen2.5", "gpt2",
                                           "stories260K", "docs-27M"),
                         [](const auto& info) {
                             std::string n = info.param;
                             for (auto& ch : n)
                                 if (ch == '-' || ch == '.') ch = '_';
                             return n;
                         });

// Small tokenizers trained with HF tokenizers, one per feature combination.
TEST(SynthTokenizers, EveryComponentMatchesHf) {
    const json& fx = fixture("synth.json");
    ASSERT_GE(fx["tokenizers"].size(), 20u);
    for (auto& [name, t] : fx["tokenizers"].items()) {
        SCOPED_TRACE(name);
        Tokenizer tok = Tokenizer::from_json(t["tokenizer_json"].get<std::string>(), {}, name);
        check_cases(tok, fx["corpus"], t["cases"], name);
        // Streaming decode agrees with the full decode for these too.
        for (size_t i = 0; i < fx["corpus"].size(); ++i) {
            auto ids = t["cases"][i]["ids"].get<std::vector<int32_t>>();
            IncrementalDecoder dec(tok);
            std::string acc;
            for (int32_t id : ids) acc += dec.push(id);
            acc += dec.flush();
            EXPECT_EQ(acc, tok.decode(ids)) << name << " #" << i;
        }
    }
}

// ---------------------------------------------------------------- stories260K golden

TEST(Stories260K, GoldenEncodeNoBos) {
    json g = json::parse(slurp(kShared / "testdata" / "stories260K_golden.json"));
    const json& v = g.at("tok512_encode_no_bos");
    ASSERT_GE(v.size(), 1u);
    const Tokenizer& tok = shared_tokenizer("models/stories260K");
    for (auto& [text, ids] : v.items()) {
        EXPECT_EQ(tok.encode(text, false), ids.get<std::vector<int32_t>>()) << text;
        auto with_bos = tok.encode(text, true);
        ASSERT_FALSE(with_bos.empty());
        EXPECT_EQ(with_bos[0], 1);
        EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
    }
    EXPECT_EQ(tok.vocab_size(), 512);
    EXPECT_EQ(tok.bos_token(), "<s>");
    EXPECT_EQ(tok.eos_token(), "</s>");
    EXPECT_TRUE(tok.is_special(1));
    EXPECT_FALSE(tok.is_special(300));
    EXPECT_EQ(tok.piece_to_id("<0x0A>"), 13);
    EXPECT_EQ(tok.id_to_piece(13), "<0x0A>");
    EXPECT_FALSE(tok.piece_to_id("no such piece").has_value());
    EXPECT_EQ(tok.id_to_piece(100000), "");
}

TEST(SharedTokenizers, SpecialTokenMetadata) {
    const Tokenizer& l3 = shared_tokenizer("tokenizers/llama3");
    EXPECT_EQ(l3.vocab_size(), 128256);
    EXPECT_EQ(l3.bos_id(), 128000);
    EXPECT_EQ(l3.eos_token(), "<|eot_id|>");
    EXPECT_EQ(l3.eos_ids(), std::vector<int32_t>({128009}));
    EXPECT_EQ(l3.piece_to_id("<|eot_id|>"), 128009);
    EXPECT_TRUE(l3.is_special(128009));
    const Tokenizer& docs = shared_tokenizer("models/docs-27M");
    // eos_token from tokenizer_config.json first, then generation_config.json's extra ids.
    auto eos = docs.eos_ids();
    ASSERT_GE(eos.size(), 2u);
    EXPECT_EQ(eos[0], 1);
    EXPECT_EQ(docs.bos_token(), "<|begin_of_text|>");
    const Tokenizer& q = shared_tokenizer("tokenizers/qwen2.5");
    EXPECT_FALSE(q.bos_id().has_value());
    EXPECT_EQ(q.bos_token(), "");
    EXPECT_EQ(q.encode("hi", true), q.encode("hi", false));  // Qwen adds nothing
}

// ---------------------------------------------------------------- streaming edge cases

TEST(IncrementalDecoder, HoldsBackPartialCharacters) {
    const Tokenizer& tok = shared_tokenizer("tokenizers/llama2");
    // 🦙 is not in the Llama 2 vocabulary: it becomes 4 byte-fallback tokens.
    auto ids = tok.encode("a 🦙 b", false);
    IncrementalDecoder dec(tok);
    std::vector<std::string> pieces;
    for (int32_t id : ids) pieces.push_back(dec.push(id));
    pieces.push_back(dec.flush());
    std::string all;
    int empty = 0;
    for (auto& p : pieces) {
        EXPECT_TRUE(unicode::is_valid_utf8(p));
        all += p;
        empty += p.empty();
    }
    EXPECT_EQ(all, "a 🦙 b");
    EXPECT_GE(empty, 3);  // three of the four byte tokens produce nothing on their own
}

TEST(IncrementalDecoder, InvalidBytesAreFlushed) {
    const Tokenizer& tok = shared_tokenizer("tokenizers/llama2");
    // A lone lead byte never completes: flush() must still return what decode() returns.
    std::vector<int32_t> ids = {*tok.piece_to_id("▁Hello"), *tok.piece_to_id("<0xF0>")};
    IncrementalDecoder dec(tok);
    std::string acc;
    for (int32_t id : ids) acc += dec.push(id);
    acc += dec.flush();
    EXPECT_EQ(acc, tok.decode(ids));
    EXPECT_EQ(acc, "Hello\xEF\xBF\xBD");
}

// ---------------------------------------------------------------- Unicode (hand-derived)

TEST(Unicode, Normalization) {
    using unicode::NormForm;
    EXPECT_EQ(unicode::normalize("e\xCC\x81", NormForm::NFC), "\xC3\xA9");  // é
    EXPECT_EQ(unicode::normalize("\xC3\xA9", NormForm::NFD), "e\xCC\x81");
    EXPECT_EQ(unicode::normalize("\xEF\xAC\x81", NormForm::NFKC), "fi");  // ﬁ
    EXPECT_EQ(unicode::normalize("\xEF\xAC\x81", NormForm::NFC), "\xEF\xAC\x81");
    EXPECT_EQ(unicode::normalize("\xE2\x84\xA6", NormForm::NFC), "\xCE\xA9");  // Ω ohm->omega
    // Hangul: jamo L V T compose to the syllable 각 (U+AC01) and decompose back.
    EXPECT_EQ(unicode::normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", NormForm::NFC),
              "\xEA\xB0\x81");
    EXPECT_EQ(unicode::normalize("\xEA\xB0\x81", NormForm::NFD),
              "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
    // Canonical reordering: a + dot below (220) + acute (230) in either order -> same NFD.
    EXPECT_EQ(unicode::normalize("a\xCC\x81\xCC\xA3", NormForm::NFD), "a\xCC\xA3\xCC\x81");
    // U+0958 is a composition exclusion: NFC keeps it decomposed.
    EXPECT_EQ(unicode::normalize("\xE0\xA5\x98", NormForm::NFC), "\xE0\xA4\x95\xE0\xA4\xBC");
    EXPECT_EQ(unicode::to_lower("ÀB İ"), "àb i\xCC\x87");
}

TEST(Unicode, LossyUtf8) {
    EXPECT_EQ(unicode::utf8_lossy("a\xF0\x9F\xA6"), "a\xEF\xBF\xBD");  // truncated: one U+FFFD
    EXPECT_EQ(unicode::utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: two
    EXPECT_EQ(unicode::utf8_lossy("ok ✓"), "ok ✓");
    EXPECT_FALSE(unicode::is_valid_utf8("\xED\xA0\x80"));  // surrogate
    EXPECT_EQ(unicode::incomplete_utf8_tail("x\xE2\x9C"), 2u);
    EXPECT_EQ(unicode::incomplete_utf8_tail("x\xE2\x9C\x93"), 0u);
}

TEST(Tokenizer, InvalidUtf8InputIsReplaced) {
    const Tokenizer& tok = shared_tokenizer("tokenizers/llama3");
    EXPECT_EQ(tok.encode("a\xFF"
                         "b",
                         false),
              tok.encode("a\xEF\xBF\xBD"
                         "b",
                         false));
}

TEST(Tokenizer, ErrorsNameTheProblem) {
    try {
        Tokenizer::from_folder(kFixtures / "no-such-folder");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos);
    }
    try {
        Tokenizer::from_json(R"({"model": {"type": "Unigram", "vocab": []}})", {}, "x.json");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos);
    }
    try {
        Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                 "pre_tokenizer": {"type": "UnicodeScripts"}})",
                             {}, "y.json");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("UnicodeScripts"), std::string::npos);
    }
}

TEST(Tokenizer, ConfigAddBosEosOverridesTemplate) {
    // A tiny tokenizer: add_eos_token in tokenizer_config.json appends EOS, as transformers does.
    std::string tj =
        R"({"model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4},
        "merges": ["a b"]},
        "added_tokens": [{"id": 0, "content": "<s>", "special": true},
                         {"id": 1, "content": "</s>", "special": true}],
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}})";
    Tokenizer plain = Tokenizer::from_json(tj);
    EXPECT_EQ(plain.encode("abab"), std::vector<int32_t>({0, 4, 4}));
    EXPECT_EQ(plain.bos_id(), 0);
    Tokenizer both = Tokenizer::from_json(
        tj,
        R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true, "add_eos_token": true})");
    EXPECT_EQ(both.encode("aba"), std::vector<int32_t>({0, 4, 2, 1}));
    EXPECT_EQ(both.eos_ids(), std::vector<int32_t>({1}));
    Tokenizer none = Tokenizer::from_json(tj, R"({"bos_token": "<s>", "add_bos_token": false})");
    EXPECT_EQ(none.encode("ab"), std::vector<int32_t>({4}));
}

TEST(Tokenizer, ConcurrentEncodeMatchesSerial) {
    // The word cache is shared between threads: results must not depend on interleaving.
    const json& fx = fixture("hf_corpus.json");
    const Tokenizer& tok = shared_tokenizer("models/docs-27M");
    const json& cases = fx["tokenizers"]["docs-27M"]["cases"];
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int rep = 0; rep < 5; ++rep)
                for (size_t i = 0; i < fx["corpus"].size(); ++i) {
                    size_t k = (i + static_cast<size_t>(t) * 7) % fx["corpus"].size();
                    auto ids = tok.encode(fx["corpus"][k].get<std::string>(), true);
                    if (ids != cases[k]["ids"].get<std::vector<int32_t>>()) ++mismatches;
                }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
}

TEST(Tokenizer, DecodeSkipsUnknownIds) {
    const Tokenizer& tok = shared_tokenizer("models/stories260K");
    // Ids outside the vocabulary (e.g. padded embedding rows) are skipped, as in HF.
    EXPECT_EQ(tok.decode({-1, 403, 100000, 407}), tok.decode({403, 407}));
    EXPECT_EQ(tok.decode({403, 407}), "Once upon");
}

// ---------------------------------------------------------------- CLI

std::string run_cli(const std::string& args) {
    std::string cmd = std::string(FARSIGHT_CLI) + " " + args + " 2>&1";
    std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
    std::string out;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p.get())) > 0) out.append(buf.data(), n);
    return out;
}

TEST(Cli, TokenizeAndDecode) {
    std::string model = (kShared / "models" / "stories260K").string();
    const Tokenizer& tok = shared_tokenizer("models/stories260K");
    auto ids = tok.encode("Once upon a time", true);
    std::string joined;
    for (size_t i = 0; i < ids.size(); ++i) joined += (i ? ", " : "") + std::to_string(ids[i]);
    EXPECT_EQ(run_cli("tokenize -m " + model + " --text 'Once upon a time' --json"),
              "{\"ids\": [" + joined + "]}\n");
    EXPECT_EQ(run_cli("tokenize -m " + model + " --text 'Once upon a time' --no-special"),
              "403 407 261 378\n");
    EXPECT_EQ(run_cli("tokenize -m " + model + " --decode '1 403 407 261 378'"),
              "<s> Once upon a time\n");
    EXPECT_EQ(run_cli("tokenize -m " + model + " --decode '1 403 407 261 378' --no-special"),
              "Once upon a time\n");
    EXPECT_NE(run_cli("tokenize -m /nonexistent --text x").find("error:"), std::string::npos);
}

}  // namespace
}  // namespace farsight
