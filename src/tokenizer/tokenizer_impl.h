#pragma once
// Internal pieces of the tokenizer (see tokenizer.h for the public API).
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/regex.h"

namespace farsight::tok {

using json = nlohmann::json;

struct StrHash {
    using is_transparent = void;
    // Not noexcept on purpose: libstdc++ then caches hash codes in the nodes (faster finds).
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StrMap = std::unordered_map<std::string, int32_t, StrHash, std::equal_to<>>;

// ---- pre-tokenized text: pieces are byte ranges of one buffer ----
struct Piece {
    uint32_t off, len;
    bool first;  // starts at offset 0 of the original input (Metaspace prepend_scheme "first")
};
struct PreTokenized {
    std::string buf;
    std::vector<Piece> pieces;
    bool bytelevel = false;  // pieces still need the ByteLevel byte->char mapping
    std::string_view text(const Piece& p) const {
        return std::string_view(buf).substr(p.off, p.len);
    }
};

// ---- normalizers ----
struct Normalizer {
    virtual ~Normalizer() = default;
    virtual std::string apply(std::string s) const = 0;
};

// ---- pre-tokenizers ----
enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
    virtual ~PreTokenizer() = default;
    virtual void apply(PreTokenized& pt) const = 0;
};

// ---- decoders: a chain over token strings ----
struct Decoder {
    virtual ~Decoder() = default;
    virtual void apply(std::vector<std::string>& tokens) const = 0;
};

// ---- post-processor: adds special tokens around the encoded sequence ----
struct PostProcessor {
    virtual ~PostProcessor() = default;
    virtual void apply(std::vector<int32_t>& ids) const = 0;
    // Leading special-token ids (for a BOS guess without tokenizer_config.json).
    virtual std::vector<int32_t> leading_ids() const { return {}; }
};

// Open-addressing hash map from a merge pair (a, b) to (rank, merged id).
class MergeMap {
  public:
    void reserve(size_t n);
    void insert(int32_t a, int32_t b, int32_t rank, int32_t merged);
    // Returns false when (a, b) is not a merge.
    bool find(int32_t a, int32_t b, int32_t* rank, int32_t* merged) const {
        if (slots_.empty()) return false;
        uint64_t key = pack(a, b);
        size_t i = hash(key) & mask_;
        while (true) {
            const Slot& s = slots_[i];
            if (s.key == kEmpty) return false;
            if (s.key == key) {
                *rank = s.rank;
                *merged = s.merged;
                return true;
            }
            i = (i + 1) & mask_;
        }
    }

  private:
    static constexpr uint64_t kEmpty = ~0ULL;
    struct Slot {
        uint64_t key = kEmpty;
        int32_t rank = 0, merged = 0;
    };
    static uint64_t pack(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    static size_t hash(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        return static_cast<size_t>(k);
    }
    std::vector<Slot> slots_;
    size_t mask_ = 0, count_ = 0;
};

struct BpeModel {
    StrMap vocab;
    std::vector<std::string> id_to_token;  // model vocabulary only
    MergeMap merges;
    std::optional<int32_t> unk_id;
    bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
    std::string cont_prefix, eow_suffix;
    std::array<int32_t, 256> fallback_ids{};  // <0xXX> pieces (-1 when absent)
    // Fast path for ByteLevel input: ids of the 256 byte-level characters, and the vocabulary
    // keyed by raw (unmapped) bytes.
    bool has_byte_ids = false;
    std::array<int32_t, 256> byte_ids{};
    StrMap raw_vocab;

    // `model` is tokenizer.json's "model" object without its vocab and merges, which the
    // streaming loader hands over separately.
    void load(const json& model, std::vector<std::pair<std::string, int32_t>>&& vocab_entries,
              std::vector<std::pair<std::string, std::string>>&& merge_pairs,
              std::string_view origin);
    void prepare_bytelevel();
    // Tokenizes one pre-token (raw bytes when bytelevel, else final text).
    void tokenize(std::string_view word, bool bytelevel, std::vector<int32_t>& out) const;

  private:
    void merge_symbols(std::vector<int32_t>& syms) const;
};

struct AddedToken {
    std::string content;
    std::string piece;  // what decode() shows: the normalized content when normalized (as HF)
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
};

// Leftmost-longest matching of added tokens (a byte trie).
class TokenTrie {
  public:
    void add(std::string_view s, int32_t index);
    bool empty() const { return nodes_.size() <= 1; }
    // Longest token starting at s[pos]: returns its index and length, or -1.
    int32_t longest(std::string_view s, size_t pos, size_t* len) const;
    bool may_start(unsigned char c) const { return first_[c]; }

  private:
    struct Node {
        std::vector<std::pair<unsigned char, int32_t>> next;
        int32_t token = -1;
    };
    std::vector<Node> nodes_{1};
    std::array<bool, 256> first_{};
};

struct Impl {
    std::string origin;
    BpeModel model;
    std::vector<AddedToken> added;
    std::unordered_map<int32_t, size_t> added_by_id;  // id -> index in added
    StrMap added_by_content;
    TokenTrie raw_trie, norm_trie;
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    std::unique_ptr<PostProcessor> post_processor;
    std::unique_ptr<Decoder> decoder;
    bool bytelevel_fast = false;
    // Words may be cut before each "▁" that follows another character, when no vocabulary token
    // contains such a pair (so no merge can cross the cut): SentencePiece-style tokenizers
    // without a pre-tokenizer then get per-word caching. Exact by construction.
    std::string word_marker;

    void tokenize_cached(std::string_view w, bool bytelevel, std::vector<int32_t>& out) const;

    std::string bos, eos;
    std::optional<int32_t> bos_id;
    std::vector<int32_t> eos_ids;
    int32_t vocab_size = 0;

    // Word cache: pre-token -> ids.
    mutable std::mutex cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StrHash, std::equal_to<>> cache;

    void encode_segment(std::string_view text, bool first, std::vector<int32_t>& out) const;
    void model_tokenize(PreTokenized& pt, std::vector<int32_t>& out) const;
    void split_added(std::string_view s, const TokenTrie& trie,
                     std::vector<std::pair<std::pair<size_t, size_t>, int32_t>>& out) const;
};

std::unique_ptr<Normalizer> make_normalizer(const json& j, std::string_view origin);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, std::string_view origin);
std::unique_ptr<PostProcessor> make_post_processor(const json& j, const Impl& impl,
                                                   std::string_view origin);
std::unique_ptr<Decoder> make_decoder(const json& j, std::string_view origin);

// ByteLevel alphabet (GPT-2 bytes_to_unicode).
const std::array<std::string, 256>& byte_to_unicode();
// Inverse: code point -> byte, or -1.
int byte_from_unicode(uint32_t cp);
// True when pt's last stage is a ByteLevel pre-tokenizer that may defer the byte mapping.
bool ends_with_bytelevel(const PreTokenizer* p);

}  // namespace farsight::tok
