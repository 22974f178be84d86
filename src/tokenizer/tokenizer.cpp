#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <queue>
#include <sstream>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace farsight {

namespace tok {

// ------------------------------------------------------------------ MergeMap

void MergeMap::reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    count_ = 0;
}

void MergeMap::insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((count_ + 1) * 2 > slots_.size()) {
        std::vector<Slot> old = std::move(slots_);
        reserve(std::max<size_t>(count_ + 1, old.size()));
        for (auto& s : old)
            if (s.key != kEmpty)
                insert(static_cast<int32_t>(s.key >> 32), static_cast<int32_t>(s.key), s.rank,
                       s.merged);
    }
    uint64_t key = pack(a, b);
    size_t i = hash(key) & mask_;
    while (slots_[i].key != kEmpty) {
        if (slots_[i].key == key) return;  // keep the first (lowest-rank) occurrence
        i = (i + 1) & mask_;
    }
    slots_[i] = {key, rank, merged};
    ++count_;
}

// ------------------------------------------------------------------ BPE model

void BpeModel::load(const json& m, std::vector<std::pair<std::string, int32_t>>&& vocab_entries,
                    std::vector<std::pair<std::string, std::string>>&& merge_pairs,
                    std::string_view origin) {
    std::string type = m.value("type", std::string("BPE"));
    FS_CHECK(type == "BPE", "{}: model type {:?} is not supported (only BPE)", origin, type);
    FS_CHECK(!vocab_entries.empty(), "{}: model.vocab is missing or empty", origin);
    vocab.reserve(vocab_entries.size());
    int32_t max_id = -1;
    for (auto& [tok, id] : vocab_entries) {
        FS_CHECK(id >= 0, "{}: negative id {} for token {:?}", origin, id, tok);
        max_id = std::max(max_id, id);
        vocab.emplace(std::move(tok), id);
    }
    vocab_entries.clear();
    id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
    for (auto& [tok, id] : vocab) id_to_token[static_cast<size_t>(id)] = tok;

    auto str_or_empty = [&](const char* key) {
        auto it = m.find(key);
        return (it != m.end() && it->is_string()) ? it->get<std::string>() : std::string();
    };
    std::string unk = str_or_empty("unk_token");
    if (!unk.empty()) {
        auto it = vocab.find(unk);
        if (it != vocab.end()) unk_id = it->second;
    }
    auto flag = [&](const char* key) {
        auto it = m.find(key);
        return it != m.end() && it->is_boolean() && it->get<bool>();
    };
    fuse_unk = flag("fuse_unk");
    byte_fallback = flag("byte_fallback");
    ignore_merges = flag("ignore_merges");
    cont_prefix = str_or_empty("continuing_subword_prefix");
    eow_suffix = str_or_empty("end_of_word_suffix");
    if (m.contains("dropout") && m["dropout"].is_number())
        FS_CHECK(m["dropout"].get<double>() == 0.0, "{}: BPE dropout is not supported", origin);

    merges.reserve(merge_pairs.size());
    int32_t rank = 0;
    std::string ab;
    for (auto& [a, b] : merge_pairs) {
        // As HF: the merged token is a + b without b's continuing-subword prefix.
        ab.assign(a);
        ab.append(b, std::min(b.size(), cont_prefix.size()));
        auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(ab);
        FS_CHECK(ia != vocab.end() && ib != vocab.end(),
                 "{}: merge {:?} {:?} uses a token that is not in the vocabulary", origin, a, b);
        FS_CHECK(iab != vocab.end(), "{}: merge result {:?} is not in the vocabulary", origin, ab);
        merges.insert(ia->second, ib->second, rank++, iab->second);
    }
    merge_pairs.clear();
    for (int bt = 0; bt < 256; ++bt) {
        auto it = vocab.find(fmt::format("<0x{:02X}>", bt));
        fallback_ids[bt] = it == vocab.end() ? -1 : it->second;
    }
}

void BpeModel::prepare_bytelevel() {
    const auto& map = byte_to_unicode();
    has_byte_ids = cont_prefix.empty() && eow_suffix.empty();
    for (int b = 0; b < 256 && has_byte_ids; ++b) {
        auto it = vocab.find(map[b]);
        if (it == vocab.end())
            has_byte_ids = false;
        else
            byte_ids[b] = it->second;
    }
    if (!has_byte_ids || !ignore_merges) return;
    raw_vocab.reserve(vocab.size());
    for (auto& [tok, id] : vocab) {
        std::string raw;
        bool ok = true;
        for (size_t i = 0; i < tok.size() && ok;) {
            int b = byte_from_unicode(unicode::next_cp(tok, i));
            if (b < 0) ok = false;
            raw.push_back(static_cast<char>(b));
        }
        if (ok) raw_vocab.emplace(std::move(raw), id);
    }
}

void BpeModel::merge_symbols(std::vector<int32_t>& ids) const {
    const size_t n = ids.size();
    if (n < 2) return;
    struct Sym {
        int32_t id, prev, next;
    };
    struct Cand {
        int32_t rank, pos, merged;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<Sym> syms(n);
    for (size_t i = 0; i < n; ++i)
        syms[i] = {ids[i], static_cast<int32_t>(i) - 1,
                   i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
    std::vector<Cand> heap;
    heap.reserve(n);
    auto cmp = std::greater<Cand>();
    int32_t rank, merged;
    for (size_t i = 0; i + 1 < n; ++i)
        if (merges.find(ids[i], ids[i + 1], &rank, &merged))
            heap.push_back({rank, static_cast<int32_t>(i), merged});
    std::make_heap(heap.begin(), heap.end(), cmp);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), cmp);
        Cand c = heap.back();
        heap.pop_back();
        Sym& s = syms[static_cast<size_t>(c.pos)];
        if (s.id < 0 || s.next < 0) continue;
        Sym& r = syms[static_cast<size_t>(s.next)];
        // Still the same merge? (as HF: the current pair must produce the same token)
        if (!merges.find(s.id, r.id, &rank, &merged) || merged != c.merged) continue;
        s.id = c.merged;
        r.id = -1;
        s.next = r.next;
        if (r.next >= 0) syms[static_cast<size_t>(r.next)].prev = c.pos;
        if (s.prev >= 0) {
            const Sym& p = syms[static_cast<size_t>(s.prev)];
            if (merges.find(p.id, s.id, &rank, &merged)) {
                heap.push_back({rank, s.prev, merged});
                std::push_heap(heap.begin(), heap.end(), cmp);
            }
        }
        if (s.next >= 0) {
            const Sym& nx = syms[static_cast<size_t>(s.next)];
            if (merges.find(s.id, nx.id, &rank, &merged)) {
                heap.push_back({rank, c.pos, merged});
                std::push_heap(heap.begin(), heap.end(), cmp);
            }
        }
    }
    ids.clear();
    for (int32_t i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next)
        ids.push_back(syms[static_cast<size_t>(i)].id);
}

void BpeModel::tokenize(std::string_view word, bool bytelevel, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (bytelevel) {  // raw bytes, every byte has a token
        if (ignore_merges) {
            if (auto it = raw_vocab.find(word); it != raw_vocab.end()) {
                out.push_back(it->second);
                return;
            }
        }
        std::vector<int32_t> syms(word.size());
        for (size_t i = 0; i < word.size(); ++i)
            syms[i] = byte_ids[static_cast<unsigned char>(word[i])];
        merge_symbols(syms);
        out.insert(out.end(), syms.begin(), syms.end());
        return;
    }
    if (ignore_merges) {
        if (auto it = vocab.find(word); it != vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    std::vector<int32_t> syms;
    syms.reserve(word.size());
    std::string key;
    bool pending_unk = false;
    for (size_t i = 0; i < word.size();) {
        size_t start = i;
        i += unicode::cp_len(static_cast<unsigned char>(word[i]));
        i = std::min(i, word.size());
        key.clear();
        if (start > 0) key += cont_prefix;
        key.append(word.substr(start, i - start));
        if (i == word.size()) key += eow_suffix;
        if (auto it = vocab.find(key); it != vocab.end()) {
            if (pending_unk) syms.push_back(*unk_id);
            pending_unk = false;
            syms.push_back(it->second);
            continue;
        }
        if (byte_fallback) {
            bool all = true;
            for (size_t k = start; k < i; ++k)
                all = all && fallback_ids[static_cast<unsigned char>(word[k])] >= 0;
            if (all) {
                if (pending_unk) syms.push_back(*unk_id);
                pending_unk = false;
                for (size_t k = start; k < i; ++k)
                    syms.push_back(fallback_ids[static_cast<unsigned char>(word[k])]);
                continue;
            }
        }
        if (unk_id) {
            if (fuse_unk) {
                pending_unk = true;
            } else {
                syms.push_back(*unk_id);
            }
        }
    }
    if (pending_unk) syms.push_back(*unk_id);
    merge_symbols(syms);
    out.insert(out.end(), syms.begin(), syms.end());
}

// ------------------------------------------------------------------ TokenTrie

void TokenTrie::add(std::string_view s, int32_t index) {
    if (s.empty()) return;
    first_[static_cast<unsigned char>(s[0])] = true;
    size_t node = 0;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        int32_t next = -1;
        for (auto& [k, v] : nodes_[node].next)
            if (k == c) next = v;
        if (next < 0) {
            next = static_cast<int32_t>(nodes_.size());
            nodes_[node].next.emplace_back(c, next);
            nodes_.emplace_back();
        }
        node = static_cast<size_t>(next);
    }
    if (nodes_[node].token < 0) nodes_[node].token = index;
}

int32_t TokenTrie::longest(std::string_view s, size_t pos, size_t* len) const {
    size_t node = 0;
    int32_t best = -1;
    for (size_t i = pos; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        int32_t next = -1;
        for (auto& [k, v] : nodes_[node].next)
            if (k == c) {
                next = v;
                break;
            }
        if (next < 0) break;
        node = static_cast<size_t>(next);
        if (nodes_[node].token >= 0) {
            best = nodes_[node].token;
            *len = i + 1 - pos;
        }
    }
    return best;
}

// ------------------------------------------------------------------ encoding

namespace {

bool ends_with_word(std::string_view s) {
    if (s.empty()) return false;
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    uint32_t cp = unicode::next_cp(s, i);
    return cp == '_' || unicode::is_alphanumeric(cp);
}
bool starts_with_word(std::string_view s) {
    if (s.empty()) return false;
    size_t i = 0;
    uint32_t cp = unicode::next_cp(s, i);
    return cp == '_' || unicode::is_alphanumeric(cp);
}

}  // namespace

// Splits s on the added tokens of `trie`: each entry is ((begin, end), token id or -1).
void Impl::split_added(std::string_view s, const TokenTrie& trie,
                       std::vector<std::pair<std::pair<size_t, size_t>, int32_t>>& out) const {
    size_t start_offset = 0;
    size_t pos = 0;
    while (pos < s.size()) {
        if (!trie.may_start(static_cast<unsigned char>(s[pos]))) {
            ++pos;
            continue;
        }
        size_t len = 0;
        int32_t idx = trie.longest(s, pos, &len);
        if (idx < 0) {
            ++pos;
            continue;
        }
        const AddedToken& t = added[static_cast<size_t>(idx)];
        size_t start = pos, stop = pos + len;
        pos = stop;  // the automaton resumes after the raw match
        if (t.single_word) {
            bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
            bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
            if (!start_space || !stop_space) continue;
        }
        if (t.lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t b = ns - 1;
                while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
                size_t i = b;
                if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
                ns = b;
            }
            start = std::max(ns, start_offset);
        }
        if (t.rstrip) {
            while (stop < s.size()) {
                size_t i = stop;
                if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
                stop = i;
            }
        }
        if (start_offset < start) out.push_back({{start_offset, start}, -1});
        out.push_back({{start, stop}, t.id});
        start_offset = stop;
        pos = std::max(pos, stop);
    }
    if (start_offset < s.size()) out.push_back({{start_offset, s.size()}, -1});
}

void Impl::model_tokenize(PreTokenized& pt, std::vector<int32_t>& out) const {
    bool bl = pt.bytelevel;
    if (bl && !bytelevel_fast) {
        // Map bytes to the ByteLevel alphabet and use the general path.
        const auto& map = byte_to_unicode();
        std::string buf;
        for (auto& p : pt.pieces) {
            auto t = pt.text(p);
            auto off = static_cast<uint32_t>(buf.size());
            for (char c : t) buf += map[static_cast<unsigned char>(c)];
            p.off = off;
            p.len = static_cast<uint32_t>(buf.size()) - off;
        }
        pt.buf = std::move(buf);
        bl = false;
    }
    for (const auto& p : pt.pieces) {
        std::string_view w = pt.text(p);
        if (w.empty()) continue;
        if (w.size() == 1 && bl) {
            out.push_back(model.byte_ids[static_cast<unsigned char>(w[0])]);
            continue;
        }
        if (bl || word_marker.empty() || w.size() <= 64) {
            tokenize_cached(w, bl, out);
            continue;
        }
        // Cut before each marker that follows a non-marker character.
        const std::string_view m = word_marker;
        size_t start = 0, pos = w.find(m, 1);
        while (pos != std::string_view::npos) {
            bool after_marker = pos >= m.size() && w.substr(pos - m.size(), m.size()) == m;
            if (!after_marker) {
                tokenize_cached(w.substr(start, pos - start), false, out);
                start = pos;
            }
            pos = w.find(m, pos + m.size());
        }
        tokenize_cached(w.substr(start), false, out);
    }
}

void Impl::tokenize_cached(std::string_view w, bool bl, std::vector<int32_t>& out) const {
    constexpr size_t kMaxCachedWord = 64, kMaxCacheEntries = 1 << 18;
    bool cacheable = w.size() <= kMaxCachedWord;
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mu);
        if (auto it = cache.find(w); it != cache.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    size_t before = out.size();
    model.tokenize(w, bl, out);
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mu);
        if (cache.size() >= kMaxCacheEntries) cache.clear();
        cache.emplace(
            std::string(w),
            std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(before), out.end()));
    }
}

void Impl::encode_segment(std::string_view text, bool first, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::string normalized = normalizer ? normalizer->apply(std::string(text)) : std::string(text);
    std::vector<std::pair<std::pair<size_t, size_t>, int32_t>> parts;
    if (!norm_trie.empty())
        split_added(normalized, norm_trie, parts);
    else
        parts.push_back({{0, normalized.size()}, -1});
    PreTokenized pt;
    for (auto& [range, id] : parts) {
        if (id >= 0) {
            out.push_back(id);
            continue;
        }
        size_t len = range.second - range.first;
        if (len == 0) continue;
        pt.buf.assign(normalized, range.first, len);
        pt.pieces.assign(1, Piece{0, static_cast<uint32_t>(len), first && range.first == 0});
        pt.bytelevel = false;
        if (pre_tokenizer) pre_tokenizer->apply(pt);
        model_tokenize(pt, out);
    }
}

}  // namespace tok

// ------------------------------------------------------------------ loading

namespace {

std::string read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    FS_CHECK(f.good(), "cannot open {}: check that the file exists and is readable", p.string());
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

tok::json parse_json(std::string_view text, std::string_view origin) {
    try {
        return tok::json::parse(text.begin(), text.end());
    } catch (const tok::json::exception& e) {
        fail("{}: invalid JSON: {}", origin, e.what());
    }
}

// bos_token/eos_token may be a string or {"content": ...}.
std::string token_string(const tok::json& cfg, const char* key) {
    auto it = cfg.find(key);
    if (it == cfg.end()) return {};
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        return (*it)["content"].get<std::string>();
    return {};
}

// Streaming JSON reader: builds a DOM for everything except model.vocab and model.merges, which
// go straight into flat vectors (they are most of the file; a DOM for them is slow to build).
class TokenizerSax : public tok::json::json_sax_t {
  public:
    using json = tok::json;
    json root;
    std::vector<std::pair<std::string, int32_t>> vocab;
    std::vector<std::pair<std::string, std::string>> merges;
    std::string error;

    bool null() override { return value(json()); }
    bool boolean(bool v) override { return value(json(v)); }
    bool number_integer(number_integer_t v) override {
        if (mode_ == Mode::Vocab) return vocab_id(v);
        return value(json(v));
    }
    bool number_unsigned(number_unsigned_t v) override {
        if (mode_ == Mode::Vocab) return vocab_id(static_cast<int64_t>(v));
        return value(json(v));
    }
    bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
    bool binary(binary_t&) override { return bad("binary data"); }
    bool string(string_t& v) override {
        if (mode_ == Mode::Merges) {
            size_t sp = v.find(' ');
            if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos)
                return bad(fmt::format("merge {:?} is not of the form \"a b\"", v));
            merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
            return true;
        }
        if (mode_ == Mode::MergePair) {
            pair_.push_back(std::move(v));
            return pair_.size() <= 2 || bad("a merge has more than two parts");
        }
        return value(json(std::move(v)));
    }
    bool start_object(std::size_t) override {
        if (mode_ != Mode::Dom) return bad("unexpected object in model.vocab/merges");
        if (in_model() && key_ == "vocab") {
            mode_ = Mode::Vocab;
            return true;
        }
        return open(json::object());
    }
    bool key(string_t& k) override {
        key_ = std::move(k);
        return true;
    }
    bool end_object() override {
        if (mode_ == Mode::Vocab) {
            mode_ = Mode::Dom;
            return true;
        }
        stack_.pop_back();
        return true;
    }
    bool start_array(std::size_t) override {
        if (mode_ == Mode::Merges) {
            mode_ = Mode::MergePair;
            pair_.clear();
            return true;
        }
        if (mode_ != Mode::Dom) return bad("unexpected array in model.vocab/merges");
        if (in_model() && key_ == "merges") {
            mode_ = Mode::Merges;
            return true;
        }
        return open(json::array());
    }
    bool end_array() override {
        if (mode_ == Mode::MergePair) {
            if (pair_.size() != 2) return bad("a merge is not a pair of strings");
            merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
            mode_ = Mode::Merges;
            return true;
        }
        if (mode_ == Mode::Merges) {
            mode_ = Mode::Dom;
            return true;
        }
        stack_.pop_back();
        return true;
    }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& e) override {
        return bad(e.what());
    }

  private:
    enum class Mode { Dom, Vocab, Merges, MergePair };
    Mode mode_ = Mode::Dom;
    std::vector<json*> stack_;  // open containers; stack_[0] is the root object
    std::string key_;
    std::vector<std::string> pair_;
    const json* model_ = nullptr;  // the root's "model" object once opened

    bool bad(std::string msg) {
        if (error.empty()) error = std::move(msg);
        return false;
    }
    // True when the innermost open container is the root's "model" object.
    bool in_model() const { return stack_.size() == 2 && stack_.back() == model_; }
    bool vocab_id(int64_t v) {
        if (v < 0 || v > INT32_MAX) return bad(fmt::format("bad id {} for token {:?}", v, key_));
        vocab.emplace_back(key_, static_cast<int32_t>(v));
        return true;
    }
    json* insert(json v) {
        if (stack_.empty()) {
            root = std::move(v);
            return &root;
        }
        json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(v));
            return &parent.back();
        }
        json& slot = parent[key_];
        slot = std::move(v);
        return &slot;
    }
    bool value(json v) {
        if (mode_ != Mode::Dom) return bad("unexpected value in model.vocab/merges");
        insert(std::move(v));
        return true;
    }
    bool open(json v) {
        bool is_model = stack_.size() == 1 && key_ == "model" && v.is_object();
        json* p = insert(std::move(v));
        stack_.push_back(p);
        if (is_model) model_ = p;
        return true;
    }
};

std::shared_ptr<tok::Impl> build(std::string_view tokenizer_json, std::string_view config_json,
                                 std::string_view gen_config_json, std::string_view origin) {
    auto impl = std::make_shared<tok::Impl>();
    impl->origin = std::string(origin);
    TokenizerSax sax;
    bool ok = tok::json::sax_parse(tokenizer_json.begin(), tokenizer_json.end(), &sax);
    FS_CHECK(ok, "{}: invalid tokenizer.json: {}", origin, sax.error);
    tok::json& j = sax.root;
    FS_CHECK(j.is_object() && j.contains("model"),
             "{}: not a Hugging Face tokenizer.json (no \"model\" key)", origin);
    try {
        impl->model.load(j["model"], std::move(sax.vocab), std::move(sax.merges), origin);
        int32_t max_id = static_cast<int32_t>(impl->model.id_to_token.size()) - 1;
        if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
            for (auto& a : j["added_tokens"]) {
                tok::AddedToken t;
                t.content = a.at("content").get<std::string>();
                t.id = a.at("id").get<int32_t>();
                t.special = a.value("special", false);
                t.lstrip = a.value("lstrip", false);
                t.rstrip = a.value("rstrip", false);
                t.single_word = a.value("single_word", false);
                t.normalized = a.value("normalized", !t.special);
                max_id = std::max(max_id, t.id);
                impl->added_by_id[t.id] = impl->added.size();
                impl->added_by_content[t.content] = t.id;
                impl->added.push_back(std::move(t));
            }
        }
        impl->vocab_size = max_id + 1;
        impl->normalizer = tok::make_normalizer(j.value("normalizer", tok::json()), origin);
        impl->pre_tokenizer =
            tok::make_pre_tokenizer(j.value("pre_tokenizer", tok::json()), origin);
        impl->post_processor =
            tok::make_post_processor(j.value("post_processor", tok::json()), *impl, origin);
        impl->decoder = tok::make_decoder(j.value("decoder", tok::json()), origin);
        // The trie gives leftmost-longest matches. Tokens with normalized=true are matched in
        // the normalized text, so (as HF) their content is normalized too.
        for (size_t i = 0; i < impl->added.size(); ++i) {
            auto& t = impl->added[i];
            t.piece = t.content;
            if (!t.normalized) {
                impl->raw_trie.add(t.content, static_cast<int32_t>(i));
            } else {
                if (impl->normalizer) t.piece = impl->normalizer->apply(t.content);
                impl->norm_trie.add(t.piece, static_cast<int32_t>(i));
            }
        }
        {
            // Safe word cuts before "▁" (see Impl::word_marker).
            const std::string marker = "\xE2\x96\x81";
            auto& mdl = impl->model;
            bool safe =
                mdl.vocab.count(marker) && mdl.cont_prefix.empty() && mdl.eow_suffix.empty();
            for (auto it = mdl.vocab.begin(); safe && it != mdl.vocab.end(); ++it) {
                const std::string& t = it->first;
                for (size_t pos = t.find(marker, 1); safe && pos != std::string::npos;
                     pos = t.find(marker, pos + marker.size()))
                    safe = pos >= marker.size() &&
                           t.compare(pos - marker.size(), marker.size(), marker) == 0;
            }
            if (safe) impl->word_marker = marker;
        }
        if (tok::ends_with_bytelevel(impl->pre_tokenizer.get())) {
            impl->model.prepare_bytelevel();
            impl->bytelevel_fast = impl->model.has_byte_ids;
        }
    } catch (const tok::json::exception& e) {
        fail("{}: unexpected tokenizer.json structure: {}", origin, e.what());
    }

    auto lookup = [&](const std::string& s) -> std::optional<int32_t> {
        if (auto it = impl->added_by_content.find(s); it != impl->added_by_content.end())
            return it->second;
        if (auto it = impl->model.vocab.find(s); it != impl->model.vocab.end()) return it->second;
        return std::nullopt;
    };
    if (!config_json.empty()) {
        tok::json cfg = parse_json(config_json, "tokenizer_config.json");
        impl->bos = token_string(cfg, "bos_token");
        impl->eos = token_string(cfg, "eos_token");
        // transformers rebuilds the post-processor when add_bos_token/add_eos_token are set.
        bool has_bos_flag = cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean();
        bool has_eos_flag = cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean();
        if (has_bos_flag || has_eos_flag) {
            bool add_bos = has_bos_flag ? cfg["add_bos_token"].get<bool>() : false;
            bool add_eos = has_eos_flag ? cfg["add_eos_token"].get<bool>() : false;
            tok::json tp = {{"type", "TemplateProcessing"}, {"single", tok::json::array()}};
            if (add_bos && !impl->bos.empty())
                tp["single"].push_back({{"SpecialToken", {{"id", impl->bos}}}});
            tp["single"].push_back({{"Sequence", {{"id", "A"}}}});
            if (add_eos && !impl->eos.empty())
                tp["single"].push_back({{"SpecialToken", {{"id", impl->eos}}}});
            impl->post_processor = tok::make_post_processor(tp, *impl, origin);
        }
    } else {
        if (impl->post_processor) {
            auto lead = impl->post_processor->leading_ids();
            if (lead.size() == 1) {
                auto it = impl->added_by_id.find(lead[0]);
                if (it != impl->added_by_id.end()) impl->bos = impl->added[it->second].content;
            }
        }
        for (const char* name :
             {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>"}) {
            if (impl->added_by_content.count(name)) {
                impl->eos = name;
                break;
            }
        }
    }
    if (!impl->bos.empty()) {
        impl->bos_id = lookup(impl->bos);
        FS_CHECK(impl->bos_id.has_value(), "{}: bos_token {:?} is not in the vocabulary", origin,
                 impl->bos);
    }
    if (!impl->eos.empty()) {
        auto id = lookup(impl->eos);
        FS_CHECK(id.has_value(), "{}: eos_token {:?} is not in the vocabulary", origin, impl->eos);
        impl->eos_ids.push_back(*id);
    }
    if (!gen_config_json.empty()) {
        tok::json g = parse_json(gen_config_json, "generation_config.json");
        std::vector<int32_t> extra;
        if (g.contains("eos_token_id")) {
            if (g["eos_token_id"].is_number_integer())
                extra.push_back(g["eos_token_id"].get<int32_t>());
            if (g["eos_token_id"].is_array())
                for (auto& e : g["eos_token_id"])
                    if (e.is_number_integer()) extra.push_back(e.get<int32_t>());
        }
        for (int32_t e : extra)
            if (std::find(impl->eos_ids.begin(), impl->eos_ids.end(), e) == impl->eos_ids.end())
                impl->eos_ids.push_back(e);
    }
    return impl;
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                               std::string_view origin) {
    return Tokenizer(build(tokenizer_json, config_json, {}, origin));
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
    std::string text = read_file(tokenizer_json);
    return Tokenizer(build(text, {}, {}, tokenizer_json.string()));
}

Tokenizer Tokenizer::from_folder(const std::filesystem::path& dir) {
    auto tj = dir / "tokenizer.json";
    FS_CHECK(std::filesystem::exists(tj),
             "{} has no tokenizer.json (only Hugging Face fast-tokenizer files are supported)",
             dir.string());
    std::string text = read_file(tj);
    std::string cfg, gen;
    if (std::filesystem::exists(dir / "tokenizer_config.json"))
        cfg = read_file(dir / "tokenizer_config.json");
    if (std::filesystem::exists(dir / "generation_config.json"))
        gen = read_file(dir / "generation_config.json");
    return Tokenizer(build(text, cfg, gen, tj.string()));
}

// ------------------------------------------------------------------ public API

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
    const tok::Impl& im = *impl_;
    std::string fixed;
    if (!unicode::is_valid_utf8(text)) {
        fixed = unicode::utf8_lossy(text);
        text = fixed;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (im.raw_trie.empty()) {
        im.encode_segment(text, true, ids);
    } else {
        std::vector<std::pair<std::pair<size_t, size_t>, int32_t>> parts;
        im.split_added(text, im.raw_trie, parts);
        for (auto& [range, id] : parts) {
            if (id >= 0)
                ids.push_back(id);
            else
                im.encode_segment(text.substr(range.first, range.second - range.first),
                                  range.first == 0, ids);
        }
    }
    if (add_special_tokens && im.post_processor) im.post_processor->apply(ids);
    return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
    const tok::Impl& im = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        if (auto it = im.added_by_id.find(id); it != im.added_by_id.end()) {
            const auto& t = im.added[it->second];
            if (!(skip_special_tokens && t.special)) tokens.push_back(t.piece);
            continue;
        }
        if (id >= 0 && static_cast<size_t>(id) < im.model.id_to_token.size())
            tokens.push_back(im.model.id_to_token[static_cast<size_t>(id)]);
    }
    if (!im.decoder) {
        std::string out;
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (i) out += ' ';
            out += tokens[i];
        }
        return out;
    }
    im.decoder->apply(tokens);
    std::string out;
    for (auto& t : tokens) out += t;
    return out;
}

std::string Tokenizer::id_to_piece(int32_t id) const {
    if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end())
        return impl_->added[it->second].piece;
    if (id >= 0 && static_cast<size_t>(id) < impl_->model.id_to_token.size())
        return impl_->model.id_to_token[static_cast<size_t>(id)];
    return {};
}

std::optional<int32_t> Tokenizer::piece_to_id(std::string_view piece) const {
    if (auto it = impl_->added_by_content.find(piece); it != impl_->added_by_content.end())
        return it->second;
    if (auto it = impl_->model.vocab.find(piece); it != impl_->model.vocab.end()) return it->second;
    return std::nullopt;
}

int32_t Tokenizer::vocab_size() const {
    return impl_->vocab_size;
}
std::optional<int32_t> Tokenizer::bos_id() const {
    return impl_->bos_id;
}
std::vector<int32_t> Tokenizer::eos_ids() const {
    return impl_->eos_ids;
}
std::string Tokenizer::bos_token() const {
    return impl_->bos;
}
std::string Tokenizer::eos_token() const {
    return impl_->eos;
}

bool Tokenizer::is_special(int32_t id) const {
    auto it = impl_->added_by_id.find(id);
    return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

// ------------------------------------------------------------------ streaming

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string IncrementalDecoder::emit(bool final) {
    auto begin = ids_.begin();
    std::vector<int32_t> prefix_ids(begin + static_cast<std::ptrdiff_t>(prefix_),
                                    begin + static_cast<std::ptrdiff_t>(read_));
    std::vector<int32_t> all_ids(begin + static_cast<std::ptrdiff_t>(prefix_), ids_.end());
    std::string prefix_text = tok_.decode(prefix_ids, skip_special_);
    std::string new_text = tok_.decode(all_ids, skip_special_);
    if (new_text.size() <= prefix_text.size() && !final) return {};
    // Wait while the text ends in a replacement character: more bytes may complete it.
    static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
    if (!final && new_text.size() >= 3 &&
        new_text.compare(new_text.size() - 3, 3, kReplacement) == 0)
        return {};
    std::string out;
    if (new_text.compare(0, prefix_text.size(), prefix_text) == 0)
        out = new_text.substr(prefix_text.size());
    else
        out = new_text.substr(std::min(prefix_text.size(), new_text.size()));
    // Keep a little context: the next window starts at the old read offset.
    prefix_ = read_;
    read_ = ids_.size();
    return out;
}

std::string IncrementalDecoder::push(int32_t id) {
    ids_.push_back(id);
    return emit(false);
}

std::string IncrementalDecoder::flush() {
    if (read_ == ids_.size()) return {};
    return emit(true);
}

}  // namespace farsight
