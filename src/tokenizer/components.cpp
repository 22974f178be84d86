// Normalizers, pre-tokenizers, post-processors and decoders of tokenizer.json.
#include <algorithm>
#include <string>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace farsight::tok {

namespace {

std::string jstr(const json& j, const char* key, const std::string& def = {}) {
    auto it = j.find(key);
    return (it != j.end() && it->is_string()) ? it->get<std::string>() : def;
}
bool jbool(const json& j, const char* key, bool def) {
    auto it = j.find(key);
    return (it != j.end() && it->is_boolean()) ? it->get<bool>() : def;
}
std::string jtype(const json& j) {
    return j.is_object() ? jstr(j, "type") : std::string();
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
    if (from.empty()) return;
    size_t pos = s.find(from);
    if (pos == std::string::npos) return;
    std::string out;
    out.reserve(s.size());
    size_t last = 0;
    while (pos != std::string::npos) {
        out.append(s, last, pos - last);
        out.append(to);
        last = pos + from.size();
        pos = s.find(from, last);
    }
    out.append(s, last);
    s = std::move(out);
}

std::string regex_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (std::string_view("\\^$.|?*+()[]{}-/").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

// "pattern": {"String": "..."} or {"Regex": "..."}: returns (is_regex, text).
std::pair<bool, std::string> parse_pattern(const json& j, std::string_view origin) {
    FS_CHECK(j.is_object(), "{}: expected a pattern object {{\"String\"|\"Regex\": ...}}", origin);
    if (j.contains("Regex")) return {true, j["Regex"].get<std::string>()};
    if (j.contains("String")) return {false, j["String"].get<std::string>()};
    fail("{}: unsupported pattern {}", origin, j.dump());
}

// ---------------------------------------------------------------- normalizers

struct NormSequence : Normalizer {
    std::vector<std::unique_ptr<Normalizer>> items;
    std::string apply(std::string s) const override {
        for (auto& n : items) s = n->apply(std::move(s));
        return s;
    }
};

struct NormPrepend : Normalizer {
    std::string prepend;
    std::string apply(std::string s) const override {
        if (s.empty()) return s;
        return prepend + s;
    }
};

struct NormReplace : Normalizer {
    std::string pattern, content;
    std::unique_ptr<Regex> re;
    std::string apply(std::string s) const override {
        if (!re) {
            replace_all(s, pattern, content);
            return s;
        }
        std::vector<std::pair<uint32_t, uint32_t>> m;
        re->find_all(s, m);
        if (m.empty()) return s;
        std::string out;
        size_t last = 0;
        for (auto [b, e] : m) {
            out.append(s, last, b - last);
            out += content;
            last = e;
        }
        out.append(s, last);
        return out;
    }
};

struct NormUnicode : Normalizer {
    unicode::NormForm form;
    explicit NormUnicode(unicode::NormForm f) : form(f) {}
    std::string apply(std::string s) const override { return unicode::normalize(s, form); }
};

struct NormLowercase : Normalizer {
    std::string apply(std::string s) const override { return unicode::to_lower(s); }
};

struct NormStrip : Normalizer {
    bool left = true, right = true;
    std::string apply(std::string s) const override {
        size_t b = 0, e = s.size();
        if (left) {
            while (b < e) {
                size_t i = b;
                if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
                b = i;
            }
        }
        if (right) {
            while (e > b) {
                size_t start = e - 1;
                while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
                size_t i = start;
                if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
                e = start;
            }
        }
        return s.substr(b, e - b);
    }
};

// ------------------------------------------------------------- pre-tokenizers

using Matches = std::vector<std::pair<uint32_t, uint32_t>>;

// Applies HF's split semantics to one piece: `m` are the matched ranges of the piece's text.
void split_piece(const Piece& p, const Matches& m, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
    auto push = [&](uint32_t b, uint32_t e) {
        if (e > b) out.push_back({p.off + b, e - b, p.first && b == 0});
    };
    if (behavior == Behavior::Isolated) {
        uint32_t prev = 0;
        for (auto [b, e] : m) {
            push(prev, b);
            push(b, e);
            prev = e;
        }
        push(prev, p.len);
        return;
    }
    // General path: the alternating (range, is_match) list of HF find_matches.
    struct Seg {
        uint32_t b, e;
        bool match;
    };
    std::vector<Seg> segs;
    uint32_t prev = 0;
    for (auto [b, e] : m) {
        if (prev != b) segs.push_back({prev, b, false});
        segs.push_back({b, e, true});
        prev = e;
    }
    if (prev != p.len || segs.empty()) segs.push_back({prev, p.len, false});
    if (invert)
        for (auto& s : segs) s.match = !s.match;
    std::vector<Seg> res;
    switch (behavior) {
        case Behavior::Removed:
            for (auto& s : segs)
                if (!s.match) push(s.b, s.e);
            return;
        case Behavior::Isolated:
            break;
        case Behavior::Contiguous: {
            bool prev_match = false;
            for (auto& s : segs) {
                if (s.match == prev_match && !res.empty())
                    res.back().e = s.e;
                else
                    res.push_back({s.b, s.e, false});
                prev_match = s.match;
            }
            break;
        }
        case Behavior::MergedWithPrevious: {
            bool prev_match = false;
            for (auto& s : segs) {
                if (s.match && !prev_match && !res.empty())
                    res.back().e = s.e;
                else
                    res.push_back({s.b, s.e, false});
                prev_match = s.match;
            }
            break;
        }
        case Behavior::MergedWithNext: {
            bool prev_match = false;
            for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
                if (it->match && !prev_match && !res.empty())
                    res.back().b = it->b;
                else
                    res.push_back({it->b, it->e, false});
                prev_match = it->match;
            }
            for (auto it = res.rbegin(); it != res.rend(); ++it) push(it->b, it->e);
            return;
        }
    }
    for (auto& s : res) push(s.b, s.e);
}

void materialize_bytelevel(PreTokenized& pt) {
    if (!pt.bytelevel) return;
    const auto& map = byte_to_unicode();
    std::string buf;
    buf.reserve(pt.buf.size() * 2);
    for (auto& p : pt.pieces) {
        auto t = pt.text(p);
        auto off = static_cast<uint32_t>(buf.size());
        for (char c : t) buf += map[static_cast<unsigned char>(c)];
        p.off = off;
        p.len = static_cast<uint32_t>(buf.size()) - off;
    }
    pt.buf = std::move(buf);
    pt.bytelevel = false;
}

// Splits every piece by the matches of `find` (a callable filling Matches for a text).
template <typename Find>
void split_all(PreTokenized& pt, Find&& find, Behavior behavior, bool invert) {
    std::vector<Piece> out;
    out.reserve(pt.pieces.size() * 2);
    Matches m;
    for (const auto& p : pt.pieces) {
        m.clear();
        find(pt.text(p), m);
        split_piece(p, m, behavior, invert, out);
    }
    pt.pieces = std::move(out);
}

// Rewrites every piece's text through fn(piece, text) -> new text.
template <typename Fn>
void rewrite_all(PreTokenized& pt, Fn&& fn) {
    std::string buf;
    buf.reserve(pt.buf.size() + pt.pieces.size() * 3);
    for (auto& p : pt.pieces) {
        std::string t = fn(p, pt.text(p));
        p.off = static_cast<uint32_t>(buf.size());
        p.len = static_cast<uint32_t>(t.size());
        buf += t;
    }
    pt.buf = std::move(buf);
}

Behavior parse_behavior(const json& j, std::string_view origin, Behavior def) {
    std::string b = jstr(j, "behavior");
    if (b.empty()) return def;
    if (b == "Removed") return Behavior::Removed;
    if (b == "Isolated") return Behavior::Isolated;
    if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
    if (b == "MergedWithNext") return Behavior::MergedWithNext;
    if (b == "Contiguous") return Behavior::Contiguous;
    fail("{}: unknown split behavior {:?}", origin, b);
}

struct PreSequence : PreTokenizer {
    std::vector<std::unique_ptr<PreTokenizer>> items;
    void apply(PreTokenized& pt) const override {
        for (auto& p : items) p->apply(pt);
    }
};

struct PreRegexSplit : PreTokenizer {
    std::unique_ptr<Regex> re;
    Behavior behavior = Behavior::Isolated;
    bool invert = false;
    void apply(PreTokenized& pt) const override {
        materialize_bytelevel(pt);
        split_all(
            pt, [&](std::string_view t, Matches& m) { re->find_all(t, m); }, behavior, invert);
    }
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct PreByteLevel : PreTokenizer {
    bool add_prefix_space = false;
    std::unique_ptr<Regex> re;  // null when use_regex is false
    void apply(PreTokenized& pt) const override {
        materialize_bytelevel(pt);  // a second ByteLevel maps the mapped text again, like HF
        if (add_prefix_space)
            rewrite_all(pt, [](const Piece&, std::string_view t) {
                std::string r;
                r.reserve(t.size() + 1);
                if (t.empty() || t[0] != ' ') r.push_back(' ');
                r.append(t);
                return r;
            });
        if (re)
            split_all(
                pt, [&](std::string_view t, Matches& m) { re->find_all(t, m); }, Behavior::Isolated,
                false);
        pt.bytelevel = true;
    }
};

struct PreMetaspace : PreTokenizer {
    std::string replacement;
    enum class Prepend { Always, First, Never } prepend = Prepend::Always;
    bool split = true;
    void apply(PreTokenized& pt) const override {
        materialize_bytelevel(pt);
        rewrite_all(pt, [&](const Piece& p, std::string_view t) {
            std::string s(t);
            replace_all(s, " ", replacement);
            bool starts = s.compare(0, replacement.size(), replacement) == 0;
            if (!starts && (prepend == Prepend::Always || (prepend == Prepend::First && p.first)))
                s.insert(0, replacement);
            return s;
        });
        if (split) {
            split_all(
                pt,
                [&](std::string_view t, Matches& m) {
                    size_t pos = t.find(replacement);
                    while (pos != std::string_view::npos) {
                        m.emplace_back(static_cast<uint32_t>(pos),
                                       static_cast<uint32_t>(pos + replacement.size()));
                        pos = t.find(replacement, pos + replacement.size());
                    }
                },
                Behavior::MergedWithNext, false);
        }
    }
};

struct PreWhitespaceSplit : PreTokenizer {
    void apply(PreTokenized& pt) const override {
        materialize_bytelevel(pt);
        // Keep the maximal runs of non-whitespace.
        split_all(
            pt,
            [](std::string_view t, Matches& m) {
                size_t i = 0;
                bool in_word = false;
                uint32_t start = 0;
                while (i < t.size()) {
                    size_t at = i;
                    bool ws = unicode::is_whitespace(unicode::next_cp(t, i));
                    if (!ws && !in_word) {
                        start = static_cast<uint32_t>(at);
                        in_word = true;
                    } else if (ws && in_word) {
                        m.emplace_back(start, static_cast<uint32_t>(at));
                        in_word = false;
                    }
                }
                if (in_word) m.emplace_back(start, static_cast<uint32_t>(t.size()));
            },
            Behavior::Removed, true);
    }
};

// ---------------------------------------------------------- post-processors

struct PostTemplate : PostProcessor {
    // Each item: special-token ids, or an empty vector with is_seq for the sequence.
    struct Item {
        bool is_seq;
        std::vector<int32_t> ids;
    };
    std::vector<Item> items;
    void apply(std::vector<int32_t>& ids) const override {
        std::vector<int32_t> out;
        out.reserve(ids.size() + 4);
        for (auto& it : items) {
            if (it.is_seq)
                out.insert(out.end(), ids.begin(), ids.end());
            else
                out.insert(out.end(), it.ids.begin(), it.ids.end());
        }
        ids = std::move(out);
    }
    std::vector<int32_t> leading_ids() const override {
        return (!items.empty() && !items[0].is_seq) ? items[0].ids : std::vector<int32_t>{};
    }
};

struct PostNoop : PostProcessor {
    void apply(std::vector<int32_t>&) const override {}
};

struct PostSequence : PostProcessor {
    std::vector<std::unique_ptr<PostProcessor>> items;
    void apply(std::vector<int32_t>& ids) const override {
        for (auto& p : items) p->apply(ids);
    }
    std::vector<int32_t> leading_ids() const override {
        for (auto& p : items) {
            auto l = p->leading_ids();
            if (!l.empty()) return l;
        }
        return {};
    }
};

// ------------------------------------------------------------------ decoders

struct DecSequence : Decoder {
    std::vector<std::unique_ptr<Decoder>> items;
    void apply(std::vector<std::string>& t) const override {
        for (auto& d : items) d->apply(t);
    }
};

struct DecByteLevel : Decoder {
    void apply(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (auto& t : tokens) {
            size_t start = bytes.size();
            bool ok = true;
            for (size_t i = 0; i < t.size();) {
                int b = byte_from_unicode(unicode::next_cp(t, i));
                if (b < 0) {
                    ok = false;
                    break;
                }
                bytes.push_back(static_cast<char>(b));
            }
            if (!ok) {
                bytes.resize(start);
                bytes += t;
            }
        }
        tokens.assign(1, unicode::utf8_lossy(bytes));
    }
};

struct DecMetaspace : Decoder {
    std::string replacement;
    bool strip_first = true;
    void apply(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i)
            replace_all(tokens[i], replacement, (i == 0 && strip_first) ? "" : " ");
    }
};

struct DecReplace : Decoder {
    std::string pattern, content;
    std::unique_ptr<Regex> re;
    void apply(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            if (!re) {
                replace_all(t, pattern, content);
                continue;
            }
            Matches m;
            re->find_all(t, m);
            std::string out;
            size_t last = 0;
            for (auto [b, e] : m) {
                out.append(t, last, b - last);
                out += content;
                last = e;
            }
            out.append(t, last);
            t = std::move(out);
        }
    }
};

struct DecByteFallback : Decoder {
    void apply(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        std::string pending;
        auto flush = [&]() {
            if (pending.empty()) return;
            if (unicode::is_valid_utf8(pending)) {
                out.push_back(pending);
            } else {
                for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
            }
            pending.clear();
        };
        for (auto& t : tokens) {
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                std::isxdigit(static_cast<unsigned char>(t[3])) &&
                std::isxdigit(static_cast<unsigned char>(t[4]))) {
                pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
                continue;
            }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
    }
};

struct DecFuse : Decoder {
    void apply(std::vector<std::string>& tokens) const override {
        std::string all;
        for (auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
    }
};

struct DecStrip : Decoder {
    uint32_t content = ' ';
    size_t start = 0, stop = 0;
    void apply(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            std::vector<size_t> bounds;  // char start offsets
            for (size_t i = 0; i < t.size(); i += unicode::cp_len(static_cast<unsigned char>(t[i])))
                bounds.push_back(i);
            size_t n = bounds.size(), a = 0, z = 0;
            auto cp_at = [&](size_t k) {
                size_t i = bounds[k];
                return unicode::next_cp(t, i);
            };
            while (a < n && a < start && cp_at(a) == content) ++a;
            while (z < n && z < stop && cp_at(n - 1 - z) == content) ++z;
            if (a + z >= n) {
                t.clear();
                continue;
            }
            size_t b = bounds[a], e = z ? bounds[n - z] : t.size();
            t = t.substr(b, e - b);
        }
    }
};

struct DecBpeSuffix : Decoder {
    std::string suffix;
    void apply(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i)
            replace_all(tokens[i], suffix, i + 1 == tokens.size() ? "" : " ");
    }
};

}  // namespace

// ------------------------------------------------------------------ factories

std::unique_ptr<Normalizer> make_normalizer(const json& j, std::string_view origin) {
    if (j.is_null()) return nullptr;
    std::string type = jtype(j);
    if (type == "Sequence") {
        auto s = std::make_unique<NormSequence>();
        for (auto& n : j.at("normalizers"))
            if (auto p = make_normalizer(n, origin)) s->items.push_back(std::move(p));
        return s;
    }
    if (type == "Prepend") {
        auto n = std::make_unique<NormPrepend>();
        n->prepend = jstr(j, "prepend");
        return n;
    }
    if (type == "Replace") {
        auto n = std::make_unique<NormReplace>();
        auto [is_re, pat] = parse_pattern(j.at("pattern"), origin);
        n->pattern = pat;
        n->content = jstr(j, "content");
        if (is_re) n->re = std::make_unique<Regex>(pat);
        return n;
    }
    if (type == "NFC") return std::make_unique<NormUnicode>(unicode::NormForm::NFC);
    if (type == "NFD") return std::make_unique<NormUnicode>(unicode::NormForm::NFD);
    if (type == "NFKC") return std::make_unique<NormUnicode>(unicode::NormForm::NFKC);
    if (type == "NFKD") return std::make_unique<NormUnicode>(unicode::NormForm::NFKD);
    if (type == "Lowercase") return std::make_unique<NormLowercase>();
    if (type == "Strip") {
        auto n = std::make_unique<NormStrip>();
        n->left = jbool(j, "strip_left", true);
        n->right = jbool(j, "strip_right", true);
        return n;
    }
    fail(
        "{}: normalizer type {:?} is not supported (supported: Sequence, Prepend, Replace, NFC, "
        "NFD, NFKC, NFKD, Lowercase, Strip)",
        origin, type);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, std::string_view origin) {
    if (j.is_null()) return nullptr;
    std::string type = jtype(j);
    if (type == "Sequence") {
        auto s = std::make_unique<PreSequence>();
        for (auto& p : j.at("pretokenizers"))
            if (auto q = make_pre_tokenizer(p, origin)) s->items.push_back(std::move(q));
        return s;
    }
    if (type == "Split") {
        auto s = std::make_unique<PreRegexSplit>();
        auto [is_re, pat] = parse_pattern(j.at("pattern"), origin);
        s->re = std::make_unique<Regex>(is_re ? pat : regex_escape(pat));
        s->behavior = parse_behavior(j, origin, Behavior::Isolated);
        s->invert = jbool(j, "invert", false);
        return s;
    }
    if (type == "ByteLevel") {
        auto b = std::make_unique<PreByteLevel>();
        b->add_prefix_space = jbool(j, "add_prefix_space", true);
        if (jbool(j, "use_regex", true)) b->re = std::make_unique<Regex>(kGpt2Pattern);
        return b;
    }
    if (type == "Metaspace") {
        auto m = std::make_unique<PreMetaspace>();
        m->replacement = jstr(j, "replacement", "\xE2\x96\x81");
        std::string scheme = jstr(j, "prepend_scheme");
        if (scheme.empty())  // older files: add_prefix_space
            m->prepend = jbool(j, "add_prefix_space", true) ? PreMetaspace::Prepend::Always
                                                            : PreMetaspace::Prepend::Never;
        else if (scheme == "always")
            m->prepend = PreMetaspace::Prepend::Always;
        else if (scheme == "first")
            m->prepend = PreMetaspace::Prepend::First;
        else if (scheme == "never")
            m->prepend = PreMetaspace::Prepend::Never;
        else
            fail("{}: unknown Metaspace prepend_scheme {:?}", origin, scheme);
        m->split = jbool(j, "split", true);
        return m;
    }
    if (type == "Digits") {
        auto s = std::make_unique<PreRegexSplit>();
        s->re = std::make_unique<Regex>(jbool(j, "individual_digits", false) ? R"(\p{N})"
                                                                             : R"(\p{N}+)");
        return s;
    }
    if (type == "Punctuation") {
        auto s = std::make_unique<PreRegexSplit>();
        s->re = std::make_unique<Regex>(R"([\p{P}!-/:-@\[-`{-~])");
        s->behavior = parse_behavior(j, origin, Behavior::Isolated);
        return s;
    }
    if (type == "Whitespace") {
        auto s = std::make_unique<PreRegexSplit>();
        s->re = std::make_unique<Regex>(
            R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\s]+)");
        s->behavior = Behavior::Removed;
        s->invert = true;
        return s;
    }
    if (type == "WhitespaceSplit") return std::make_unique<PreWhitespaceSplit>();
    if (type == "BertPreTokenizer") {
        auto s = std::make_unique<PreSequence>();
        s->items.push_back(std::make_unique<PreWhitespaceSplit>());
        auto p = std::make_unique<PreRegexSplit>();
        p->re = std::make_unique<Regex>(R"([\p{P}!-/:-@\[-`{-~])");
        s->items.push_back(std::move(p));
        return s;
    }
    if (type == "CharDelimiterSplit") {
        auto s = std::make_unique<PreRegexSplit>();
        s->re = std::make_unique<Regex>(regex_escape(jstr(j, "delimiter")));
        s->behavior = Behavior::Removed;
        return s;
    }
    fail(
        "{}: pre-tokenizer type {:?} is not supported (supported: Sequence, Split, ByteLevel, "
        "Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit, BertPreTokenizer, "
        "CharDelimiterSplit)",
        origin, type);
}

bool ends_with_bytelevel(const PreTokenizer* p) {
    if (!p) return false;
    if (dynamic_cast<const PreByteLevel*>(p)) return true;
    if (auto s = dynamic_cast<const PreSequence*>(p))
        return !s->items.empty() && ends_with_bytelevel(s->items.back().get());
    return false;
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const Impl& impl,
                                                   std::string_view origin) {
    if (j.is_null()) return nullptr;
    std::string type = jtype(j);
    auto token_id = [&](const std::string& content) -> int32_t {
        if (auto it = impl.added_by_content.find(content); it != impl.added_by_content.end())
            return it->second;
        if (auto it = impl.model.vocab.find(content); it != impl.model.vocab.end())
            return it->second;
        fail("{}: post-processor token {:?} is not in the vocabulary", origin, content);
    };
    if (type == "TemplateProcessing") {
        auto t = std::make_unique<PostTemplate>();
        const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
        for (auto& item : j.at("single")) {
            if (item.contains("Sequence")) {
                t->items.push_back({true, {}});
            } else if (item.contains("SpecialToken")) {
                std::string name = item["SpecialToken"].at("id").get<std::string>();
                std::vector<int32_t> ids;
                if (specials.contains(name))
                    ids = specials[name].at("ids").get<std::vector<int32_t>>();
                else
                    ids.push_back(token_id(name));
                t->items.push_back({false, std::move(ids)});
            }
        }
        return t;
    }
    if (type == "RobertaProcessing" || type == "BertProcessing") {
        auto t = std::make_unique<PostTemplate>();
        t->items.push_back({false, {j.at("cls").at(1).get<int32_t>()}});
        t->items.push_back({true, {}});
        t->items.push_back({false, {j.at("sep").at(1).get<int32_t>()}});
        return t;
    }
    if (type == "ByteLevel") return std::make_unique<PostNoop>();
    if (type == "Sequence") {
        auto s = std::make_unique<PostSequence>();
        for (auto& p : j.at("processors"))
            if (auto q = make_post_processor(p, impl, origin)) s->items.push_back(std::move(q));
        return s;
    }
    fail(
        "{}: post-processor type {:?} is not supported (supported: TemplateProcessing, "
        "RobertaProcessing, BertProcessing, ByteLevel, Sequence)",
        origin, type);
}

std::unique_ptr<Decoder> make_decoder(const json& j, std::string_view origin) {
    if (j.is_null()) return nullptr;
    std::string type = jtype(j);
    if (type == "Sequence") {
        auto s = std::make_unique<DecSequence>();
        for (auto& d : j.at("decoders"))
            if (auto q = make_decoder(d, origin)) s->items.push_back(std::move(q));
        return s;
    }
    if (type == "ByteLevel") return std::make_unique<DecByteLevel>();
    if (type == "Metaspace") {
        auto m = std::make_unique<DecMetaspace>();
        m->replacement = jstr(j, "replacement", "\xE2\x96\x81");
        std::string scheme = jstr(j, "prepend_scheme");
        m->strip_first = scheme.empty() ? jbool(j, "add_prefix_space", true) : scheme != "never";
        return m;
    }
    if (type == "Replace") {
        auto r = std::make_unique<DecReplace>();
        auto [is_re, pat] = parse_pattern(j.at("pattern"), origin);
        r->pattern = pat;
        r->content = jstr(j, "content");
        if (is_re) r->re = std::make_unique<Regex>(pat);
        return r;
    }
    if (type == "ByteFallback") return std::make_unique<DecByteFallback>();
    if (type == "Fuse") return std::make_unique<DecFuse>();
    if (type == "Strip") {
        auto s = std::make_unique<DecStrip>();
        std::string c = jstr(j, "content", " ");
        size_t i = 0;
        s->content = c.empty() ? ' ' : unicode::next_cp(c, i);
        s->start = j.value("start", 0);
        s->stop = j.value("stop", 0);
        return s;
    }
    if (type == "BPEDecoder") {
        auto d = std::make_unique<DecBpeSuffix>();
        d->suffix = jstr(j, "suffix", "</w>");
        return d;
    }
    fail(
        "{}: decoder type {:?} is not supported (supported: Sequence, ByteLevel, Metaspace, "
        "Replace, ByteFallback, Fuse, Strip, BPEDecoder)",
        origin, type);
}

const std::array<std::string, 256>& byte_to_unicode() {
    static const std::array<std::string, 256> table = [] {
        std::array<std::string, 256> t;
        uint32_t n = 0;
        for (int b = 0; b < 256; ++b) {
            bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            uint32_t cp = direct ? static_cast<uint32_t>(b) : 256 + n++;
            unicode::append_utf8(t[b], cp);
        }
        return t;
    }();
    return table;
}

int byte_from_unicode(uint32_t cp) {
    static const std::array<int16_t, 512> inv = [] {
        std::array<int16_t, 512> t;
        t.fill(-1);
        const auto& fwd = byte_to_unicode();
        for (int b = 0; b < 256; ++b) {
            size_t i = 0;
            t[unicode::next_cp(fwd[b], i)] = static_cast<int16_t>(b);
        }
        return t;
    }();
    return cp < 512 ? inv[cp] : -1;
}

}  // namespace farsight::tok
