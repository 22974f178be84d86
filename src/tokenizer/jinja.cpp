#include "tokenizer/jinja.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <unordered_map>

namespace farsight::jinja {

namespace {

[[noreturn]] void error(int line, const std::string& msg) { throw TemplateError(msg, line); }

// ============================================================================================
// Lexer
// ============================================================================================

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
    Tok type;
    std::string text;  // Text content, name, string value, operator
    int line;
    int64_t ival = 0;
    double fval = 0;
};

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.rstrip() on UTF-8 text.
std::string rstrip_py(const std::string& s) {
    std::u32string u = utf8_decode(s);
    size_t e = u.size();
    while (e > 0 && is_py_space(u[e - 1])) --e;
    if (e == u.size()) return s;
    return utf8_encode(std::u32string_view(u).substr(0, e));
}

class Lexer {
public:
    explicit Lexer(std::string_view source) {
        // Jinja normalises every newline sequence to "\n" and drops one trailing newline.
        src_.reserve(source.size());
        for (size_t i = 0; i < source.size(); ++i) {
            if (source[i] == '\r') {
                src_ += '\n';
                if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
            } else {
                src_ += source[i];
            }
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
        line_starts_.push_back(0);
        for (size_t i = 0; i < src_.size(); ++i)
            if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }

    std::vector<Token> run() {
        size_t pos = 0;
        bool line_starting = true;
        const size_t n = src_.size();
        while (pos < n) {
            size_t p = pos;
            while (true) {
                p = src_.find('{', p);
                if (p == std::string::npos || p + 1 >= n) {
                    p = std::string::npos;
                    break;
                }
                char k = src_[p + 1];
                if (k == '{' || k == '%' || k == '#') break;
                ++p;
            }
            if (p == std::string::npos) {
                emit_text(src_.substr(pos), pos);
                break;
            }
            std::string text = src_.substr(pos, p - pos);
            char kind = src_[p + 1];
            char sign = (p + 2 < n && (src_[p + 2] == '-' || src_[p + 2] == '+')) ? src_[p + 2] : 0;
            if (sign == '-') {
                text = rstrip_py(text);
            } else if (sign != '+' && kind != '{') {
                // lstrip_blocks: drop the spaces between the line start and a block/comment.
                size_t l_pos = text.rfind('\n');
                l_pos = (l_pos == std::string::npos) ? 0 : l_pos + 1;
                if (l_pos > 0 || line_starting) {
                    bool all_ws = l_pos < text.size();
                    for (size_t i = l_pos; i < text.size(); ++i)
                        if (!is_ws(text[i])) all_ws = false;
                    if (all_ws) text.resize(l_pos);
                }
            }
            emit_text(text, pos);
            size_t body = p + 2 + (sign ? 1 : 0);
            if (kind == '#') {
                size_t e = src_.find("#}", body);
                if (e == std::string::npos) error(line_of(p), "unclosed comment");
                char esign = (e > body && (src_[e - 1] == '-' || src_[e - 1] == '+')) ? src_[e - 1] : 0;
                pos = after_tag_end(e + 2, esign, true);
            } else if (kind == '%' && try_raw(p, body, pos)) {
                // handled
            } else {
                pos = lex_tag(p, body, kind == '{');
            }
            line_starting = pos > 0 && src_[pos - 1] == '\n';
        }
        toks_.push_back(Token{Tok::Eof, "", line_of(n)});
        return std::move(toks_);
    }

private:
    std::string src_;
    std::vector<size_t> line_starts_;
    std::vector<Token> toks_;

    int line_of(size_t pos) const {
        auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
        return static_cast<int>(it - line_starts_.begin());
    }

    void emit_text(std::string text, size_t pos) {
        if (!text.empty()) toks_.push_back(Token{Tok::Text, std::move(text), line_of(pos)});
    }

    // Position after a tag's end delimiter (which ends at `pos`), applying "-" (strip all
    // following whitespace) or trim_blocks (drop one newline) for blocks and comments.
    size_t after_tag_end(size_t pos, char sign, bool block_like) {
        if (sign == '-') {
            while (pos < src_.size()) {
                // Python's \s includes Unicode spaces; decode when non-ASCII.
                auto c = static_cast<unsigned char>(src_[pos]);
                if (c < 0x80) {
                    if (!is_ws(src_[pos]) && !(c >= 0x1c && c <= 0x1f)) break;
                    ++pos;
                } else {
                    size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
                    std::u32string u = utf8_decode(std::string_view(src_).substr(pos, len));
                    if (u.size() != 1 || !is_py_space(u[0])) break;
                    pos += len;
                }
            }
        } else if (sign != '+' && block_like && pos < src_.size() && src_[pos] == '\n') {
            ++pos;
        }
        return pos;
    }

    // {% raw %}...{% endraw %}
    bool try_raw(size_t p, size_t body, size_t& pos) {
        size_t i = body;
        while (i < src_.size() && is_ws(src_[i])) ++i;
        if (src_.compare(i, 3, "raw") != 0) return false;
        i += 3;
        while (i < src_.size() && is_ws(src_[i])) ++i;
        char sign = 0;
        if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) sign = src_[i++];
        if (src_.compare(i, 2, "%}") != 0) return false;
        size_t start = after_tag_end(i + 2, sign, false);
        // Find {%[-+]? endraw [-+]?%}
        size_t s = start;
        while (true) {
            s = src_.find("{%", s);
            if (s == std::string::npos) error(line_of(p), "missing endraw for raw block");
            size_t j = s + 2;
            char bsign = 0;
            if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) bsign = src_[j++];
            while (j < src_.size() && is_ws(src_[j])) ++j;
            if (src_.compare(j, 6, "endraw") != 0) {
                s += 2;
                continue;
            }
            j += 6;
            while (j < src_.size() && is_ws(src_[j])) ++j;
            char esign = 0;
            if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) esign = src_[j++];
            if (src_.compare(j, 2, "%}") != 0) {
                s += 2;
                continue;
            }
            std::string text = src_.substr(start, s - start);
            if (bsign == '-') text = rstrip_py(text);
            emit_text(text, start);
            pos = after_tag_end(j + 2, esign, true);
            return true;
        }
    }

    // Tokenises the inside of {{ }} or {% %}; returns the position after the tag.
    size_t lex_tag(size_t p, size_t i, bool var) {
        int line = line_of(p);
        toks_.push_back(Token{var ? Tok::VarBegin : Tok::BlockBegin, "", line});
        const char* close = var ? "}}" : "%}";
        const size_t n = src_.size();
        while (true) {
            while (i < n && is_ws(src_[i])) ++i;
            if (i >= n) error(line, var ? "unclosed '{{' (missing '}}')" : "unclosed '{%' (missing '%}')");
            int tl = line_of(i);
            if (src_.compare(i, 2, close) == 0) {
                toks_.push_back(Token{var ? Tok::VarEnd : Tok::BlockEnd, "", tl});
                return after_tag_end(i + 2, 0, !var);
            }
            if ((src_[i] == '-' || (!var && src_[i] == '+')) && src_.compare(i + 1, 2, close) == 0) {
                toks_.push_back(Token{var ? Tok::VarEnd : Tok::BlockEnd, "", tl});
                return after_tag_end(i + 3, src_[i], !var);
            }
            char c = src_[i];
            if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
                size_t j = i;
                while (j < n && (std::isalnum(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
                toks_.push_back(Token{Tok::Name, src_.substr(i, j - i), tl});
                i = j;
            } else if (std::isdigit(static_cast<unsigned char>(c))) {
                i = lex_number(i, tl);
            } else if (c == '\'' || c == '"') {
                i = lex_string(i, tl);
            } else {
                static const char* ops2[] = {"//", "**", "==", "!=", "<=", ">="};
                std::string op;
                for (const char* o : ops2)
                    if (src_.compare(i, 2, o) == 0) op = o;
                if (op.empty()) {
                    if (std::strchr("+-*/%~()[]{},.:|=<>;", c) == nullptr)
                        error(tl, fmt::format("unexpected character '{}'", c));
                    op = std::string(1, c);
                }
                toks_.push_back(Token{Tok::Op, op, tl});
                i += op.size();
            }
        }
    }

    size_t lex_number(size_t i, int line) {
        size_t j = i;
        const size_t n = src_.size();
        auto digits = [&] {
            while (j < n && (std::isdigit(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
        };
        digits();
        bool is_float = false;
        if (j + 1 < n && src_[j] == '.' && std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
            is_float = true;
            ++j;
            digits();
        }
        if (j < n && (src_[j] == 'e' || src_[j] == 'E')) {
            size_t k = j + 1;
            if (k < n && (src_[k] == '+' || src_[k] == '-')) ++k;
            if (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) {
                is_float = true;
                j = k;
                digits();
            }
        }
        std::string s;
        for (size_t k = i; k < j; ++k)
            if (src_[k] != '_') s += src_[k];
        Token t{is_float ? Tok::Float : Tok::Int, s, line};
        if (is_float) {
            t.fval = std::stod(s);
        } else {
            try {
                t.ival = std::stoll(s);
            } catch (const std::exception&) {
                error(line, fmt::format("integer literal {} is too large", s));
            }
        }
        toks_.push_back(std::move(t));
        return j;
    }

    size_t lex_string(size_t i, int line) {
        char q = src_[i];
        size_t j = i + 1;
        std::string out;
        const size_t n = src_.size();
        while (true) {
            if (j >= n) error(line, "unterminated string literal");
            char c = src_[j];
            if (c == q) break;
            if (c != '\\' || j + 1 >= n) {
                out += c;
                ++j;
                continue;
            }
            char e = src_[j + 1];
            j += 2;
            switch (e) {
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'v': out += '\v'; break;
                case 'a': out += '\a'; break;
                case '0': out += '\0'; break;
                case '\\': out += '\\'; break;
                case '\'': out += '\''; break;
                case '"': out += '"'; break;
                case '\n': break;  // line continuation
                case 'x':
                case 'u':
                case 'U': {
                    size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (j + len > n) error(line, "truncated escape in string literal");
                    char32_t cp = static_cast<char32_t>(std::stoul(src_.substr(j, len), nullptr, 16));
                    out += utf8_encode(std::u32string(1, cp));
                    j += len;
                    break;
                }
                default:
                    out += '\\';
                    out += e;
            }
        }
        toks_.push_back(Token{Tok::String, out, line});
        return j + 1;
    }
};

// ============================================================================================
// AST
// ============================================================================================

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
    enum class K {
        Literal, Name, Attr, Item, Slice, Call, Filter, Test, Neg, Pos, Not, Bin, And, Or,
        Compare, Cond, List, Tuple, Dict
    };
    K k;
    int line;
    Value lit;
    std::string name;  // Name / Attr / Filter / Test name, Bin operator
    std::vector<ExprP> a;
    std::vector<std::pair<std::string, ExprP>> kw;
    std::vector<std::string> ops;  // Compare operators
    Expr(K k, int line) : k(k), line(line) {}
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
    enum class K {
        Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue,
        Generation
    };
    K k;
    int line;
    std::string text;                  // Text; Set/SetBlock/Macro name; Set namespace name
    std::string attr;                  // Set ns.attr
    std::vector<std::string> targets;  // For targets; Set targets
    ExprP expr;                        // Output, For iterable, Set value, CallBlock call, filter
    ExprP cond;                        // For filter
    std::vector<std::pair<ExprP, Body>> branches;       // If
    Body body, else_body;                               // For/If else
    std::vector<std::pair<std::string, ExprP>> params;  // Macro params (default may be null)
    Node(K k, int line) : k(k), line(line) {}
};

}  // namespace

struct Program {
    Body body;
};

namespace {

const std::set<std::string>& filter_names() {
    static const std::set<std::string> s = {
        "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first",
        "float", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max",
        "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
        "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
        "wordcount"};
    return s;
}

const std::set<std::string>& test_names() {
    static const std::set<std::string> s = {
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "even", "false",
        "float", "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lower", "lt",
        "lessthan", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string",
        "true", "undefined", "upper", "filter", "test", "escaped", "!=", "<", "<=", ">", ">="};
    return s;
}

// ============================================================================================
// Parser
// ============================================================================================

class Parser {
public:
    explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

    Body parse_template() {
        std::string found;
        Body b = parse_body({}, found, 0);
        return b;
    }

private:
    std::vector<Token> t_;
    size_t i_ = 0;

    const Token& cur() const { return t_[i_]; }
    const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
    Token next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
    bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
    bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
    bool accept_op(const char* op) {
        if (!is_op(op)) return false;
        ++i_;
        return true;
    }
    bool accept_name(const char* n) {
        if (!is_name(n)) return false;
        ++i_;
        return true;
    }
    std::string describe(const Token& t) const {
        switch (t.type) {
            case Tok::Eof: return "end of template";
            case Tok::BlockEnd: return "end of statement block ('%}')";
            case Tok::VarEnd: return "end of print statement ('}}')";
            case Tok::String: return "string literal";
            case Tok::Text: return "template text";
            default: return "'" + t.text + "'";
        }
    }
    [[noreturn]] void unexpected(const char* expected) const {
        error(cur().line, fmt::format("expected {}, got {}", expected, describe(cur())));
    }
    void expect_op(const char* op) {
        if (!accept_op(op)) unexpected(fmt::format("'{}'", op).c_str());
    }
    std::string expect_name() {
        if (cur().type != Tok::Name) unexpected("a name");
        return next().text;
    }
    void expect_block_end() {
        if (cur().type != Tok::BlockEnd) unexpected("'%}'");
        ++i_;
    }

    // Parses nodes until a block whose tag is in `ends` (consumes "{%" and the tag name; the
    // caller consumes the rest of that block).
    Body parse_body(const std::vector<std::string>& ends, std::string& found, int open_line) {
        Body body;
        while (true) {
            const Token& tk = cur();
            if (tk.type == Tok::Eof) {
                if (ends.empty()) return body;
                std::string closer = ends.back();
                for (const auto& e : ends)
                    if (e.rfind("end", 0) == 0) closer = e;
                error(open_line, fmt::format(
                                     "block opened here is never closed (expected '{{% {} %}}')",
                                     closer));
            }
            if (tk.type == Tok::Text) {
                auto n = std::make_unique<Node>(Node::K::Text, tk.line);
                n->text = tk.text;
                body.push_back(std::move(n));
                ++i_;
            } else if (tk.type == Tok::VarBegin) {
                ++i_;
                auto n = std::make_unique<Node>(Node::K::Output, tk.line);
                n->expr = parse_tuple();
                if (cur().type != Tok::VarEnd) unexpected("'}}'");
                ++i_;
                body.push_back(std::move(n));
            } else if (tk.type == Tok::BlockBegin) {
                ++i_;
                if (cur().type != Tok::Name) unexpected("a statement name");
                std::string tag = cur().text;
                if (std::find(ends.begin(), ends.end(), tag) != ends.end()) {
                    ++i_;
                    found = tag;
                    return body;
                }
                body.push_back(parse_statement());
            } else {
                unexpected("template text or a tag");
            }
        }
    }

    std::unique_ptr<Node> parse_statement() {
        Token tag = next();
        const std::string& s = tag.text;
        int line = tag.line;
        if (s == "if") return parse_if(line);
        if (s == "for") return parse_for(line);
        if (s == "set") return parse_set(line);
        if (s == "macro") return parse_macro(line);
        if (s == "call") return parse_call_block(line);
        if (s == "filter") return parse_filter_block(line);
        if (s == "break" || s == "continue") {
            expect_block_end();
            return std::make_unique<Node>(s == "break" ? Node::K::Break : Node::K::Continue, line);
        }
        if (s == "generation") {
            expect_block_end();
            auto n = std::make_unique<Node>(Node::K::Generation, line);
            std::string found;
            n->body = parse_body({"endgeneration"}, found, line);
            expect_block_end();
            return n;
        }
        if (s == "endif" || s == "endfor" || s == "endmacro" || s == "endset" || s == "else" ||
            s == "elif" || s == "endcall" || s == "endfilter" || s == "endgeneration")
            error(line, fmt::format("unexpected '{{% {} %}}' with no matching opening block", s));
        error(line, fmt::format("unsupported or unknown statement '{{% {} %}}'", s));
    }

    std::unique_ptr<Node> parse_if(int line) {
        auto n = std::make_unique<Node>(Node::K::If, line);
        ExprP cond = parse_expr();
        expect_block_end();
        while (true) {
            std::string found;
            Body b = parse_body({"elif", "else", "endif"}, found, line);
            n->branches.emplace_back(std::move(cond), std::move(b));
            if (found == "elif") {
                cond = parse_expr();
                expect_block_end();
                continue;
            }
            expect_block_end();
            if (found == "else") {
                n->else_body = parse_body({"endif"}, found, line);
                expect_block_end();
            }
            return n;
        }
    }

    std::unique_ptr<Node> parse_for(int line) {
        auto n = std::make_unique<Node>(Node::K::For, line);
        bool paren = accept_op("(");
        do {
            n->targets.push_back(expect_name());
        } while (accept_op(","));
        if (paren) expect_op(")");
        if (!accept_name("in")) unexpected("'in'");
        n->expr = parse_tuple(/*with_condexpr=*/false);
        if (accept_name("if")) n->cond = parse_expr();
        if (is_name("recursive")) error(cur().line, "recursive for loops are not supported");
        expect_block_end();
        std::string found;
        n->body = parse_body({"endfor", "else"}, found, line);
        expect_block_end();
        if (found == "else") {
            n->else_body = parse_body({"endfor"}, found, line);
            expect_block_end();
        }
        return n;
    }

    std::unique_ptr<Node> parse_set(int line) {
        std::string first = expect_name();
        if (accept_op(".")) {
            auto n = std::make_unique<Node>(Node::K::Set, line);
            n->text = first;
            n->attr = expect_name();
            expect_op("=");
            n->expr = parse_tuple();
            expect_block_end();
            return n;
        }
        std::vector<std::string> targets{first};
        while (accept_op(",")) targets.push_back(expect_name());
        if (accept_op("=")) {
            auto n = std::make_unique<Node>(Node::K::Set, line);
            n->targets = std::move(targets);
            n->expr = parse_tuple();
            expect_block_end();
            return n;
        }
        if (targets.size() != 1) unexpected("'='");
        auto n = std::make_unique<Node>(Node::K::SetBlock, line);
        n->text = first;
        if (is_op("|")) n->expr = parse_filter_chain(nullptr);
        expect_block_end();
        std::string found;
        n->body = parse_body({"endset"}, found, line);
        expect_block_end();
        return n;
    }

    std::unique_ptr<Node> parse_macro(int line) {
        auto n = std::make_unique<Node>(Node::K::Macro, line);
        n->text = expect_name();
        expect_op("(");
        while (!accept_op(")")) {
            if (!n->params.empty()) expect_op(",");
            std::string p = expect_name();
            ExprP def;
            if (accept_op("=")) def = parse_expr();
            n->params.emplace_back(std::move(p), std::move(def));
        }
        expect_block_end();
        std::string found;
        n->body = parse_body({"endmacro"}, found, line);
        if (cur().type == Tok::Name && cur().text == n->text) ++i_;
        expect_block_end();
        return n;
    }

    std::unique_ptr<Node> parse_call_block(int line) {
        auto n = std::make_unique<Node>(Node::K::CallBlock, line);
        if (accept_op("(")) {
            while (!accept_op(")")) {
                if (!n->params.empty()) expect_op(",");
                std::string p = expect_name();
                ExprP def;
                if (accept_op("=")) def = parse_expr();
                n->params.emplace_back(std::move(p), std::move(def));
            }
        }
        n->expr = parse_expr();
        if (n->expr->k != Expr::K::Call) error(line, "'{% call %}' needs a macro call");
        expect_block_end();
        std::string found;
        n->body = parse_body({"endcall"}, found, line);
        expect_block_end();
        return n;
    }

    std::unique_ptr<Node> parse_filter_block(int line) {
        auto n = std::make_unique<Node>(Node::K::FilterBlock, line);
        n->expr = parse_filter_chain(nullptr, /*first_without_pipe=*/true);
        expect_block_end();
        std::string found;
        n->body = parse_body({"endfilter"}, found, line);
        expect_block_end();
        return n;
    }

    // ---- expressions ----

    ExprP make(Expr::K k, int line) { return std::make_unique<Expr>(k, line); }

    ExprP parse_tuple(bool with_condexpr = true) {
        int line = cur().line;
        ExprP e = with_condexpr ? parse_expr() : parse_or();
        if (!is_op(",")) return e;
        auto t = make(Expr::K::Tuple, line);
        t->a.push_back(std::move(e));
        while (accept_op(",")) {
            if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) break;
            if (!with_condexpr && is_name("if")) break;
            t->a.push_back(with_condexpr ? parse_expr() : parse_or());
        }
        return t;
    }

    ExprP parse_expr() {
        ExprP e = parse_or();
        while (is_name("if")) {
            int line = next().line;
            auto c = make(Expr::K::Cond, line);
            ExprP cond = parse_or();
            ExprP els;
            if (accept_name("else")) els = parse_expr();
            c->a.push_back(std::move(e));
            c->a.push_back(std::move(cond));
            c->a.push_back(std::move(els));
            e = std::move(c);
        }
        return e;
    }

    ExprP binary(Expr::K k, ExprP l, ExprP r, int line, std::string op = "") {
        auto e = make(k, line);
        e->name = std::move(op);
        e->a.push_back(std::move(l));
        e->a.push_back(std::move(r));
        return e;
    }

    ExprP parse_or() {
        ExprP e = parse_and();
        while (is_name("or")) {
            int line = next().line;
            e = binary(Expr::K::Or, std::move(e), parse_and(), line);
        }
        return e;
    }

    ExprP parse_and() {
        ExprP e = parse_not();
        while (is_name("and")) {
            int line = next().line;
            e = binary(Expr::K::And, std::move(e), parse_not(), line);
        }
        return e;
    }

    ExprP parse_not() {
        if (is_name("not")) {
            int line = next().line;
            auto e = make(Expr::K::Not, line);
            e->a.push_back(parse_not());
            return e;
        }
        return parse_compare();
    }

    ExprP parse_compare() {
        int line = cur().line;
        ExprP e = parse_math1();
        ExprP cmp;
        while (true) {
            std::string op;
            if (cur().type == Tok::Op &&
                (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                 cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
                op = next().text;
            } else if (is_name("in")) {
                ++i_;
                op = "in";
            } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
                i_ += 2;
                op = "notin";
            } else {
                break;
            }
            if (!cmp) {
                cmp = make(Expr::K::Compare, line);
                cmp->a.push_back(std::move(e));
            }
            cmp->ops.push_back(op);
            cmp->a.push_back(parse_math1());
        }
        return cmp ? std::move(cmp) : std::move(e);
    }

    ExprP parse_math1() {
        ExprP e = parse_concat();
        while (is_op("+") || is_op("-")) {
            Token op = next();
            e = binary(Expr::K::Bin, std::move(e), parse_concat(), op.line, op.text);
        }
        return e;
    }

    ExprP parse_concat() {
        ExprP e = parse_math2();
        while (is_op("~")) {
            Token op = next();
            e = binary(Expr::K::Bin, std::move(e), parse_math2(), op.line, "~");
        }
        return e;
    }

    ExprP parse_math2() {
        ExprP e = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            Token op = next();
            e = binary(Expr::K::Bin, std::move(e), parse_pow(), op.line, op.text);
        }
        return e;
    }

    ExprP parse_pow() {
        ExprP e = parse_unary();
        while (is_op("**")) {
            Token op = next();
            e = binary(Expr::K::Bin, std::move(e), parse_unary(), op.line, "**");
        }
        return e;
    }

    ExprP parse_unary(bool with_filter = true) {
        ExprP e;
        if (is_op("-") || is_op("+")) {
            Token op = next();
            e = make(op.text == "-" ? Expr::K::Neg : Expr::K::Pos, op.line);
            e->a.push_back(parse_unary(false));
        } else {
            e = parse_primary();
        }
        e = parse_postfix(std::move(e));
        if (with_filter) e = parse_filter_expr(std::move(e));
        return e;
    }

    ExprP parse_primary() {
        const Token& tk = cur();
        int line = tk.line;
        if (tk.type == Tok::Name) {
            std::string n = next().text;
            auto e = make(Expr::K::Literal, line);
            if (n == "true" || n == "True") {
                e->lit = Value::boolean(true);
            } else if (n == "false" || n == "False") {
                e->lit = Value::boolean(false);
            } else if (n == "none" || n == "None") {
                e->lit = Value::none();
            } else {
                e->k = Expr::K::Name;
                e->name = n;
            }
            return e;
        }
        if (tk.type == Tok::String) {
            std::string s;
            while (cur().type == Tok::String) s += next().text;
            auto e = make(Expr::K::Literal, line);
            e->lit = Value::string(std::move(s));
            return e;
        }
        if (tk.type == Tok::Int || tk.type == Tok::Float) {
            Token t = next();
            auto e = make(Expr::K::Literal, line);
            e->lit = t.type == Tok::Int ? Value::integer(t.ival) : Value::number(t.fval);
            return e;
        }
        if (accept_op("(")) {
            if (accept_op(")")) return make(Expr::K::Tuple, line);
            ExprP e = parse_expr();
            if (is_op(",")) {
                auto t = make(Expr::K::Tuple, line);
                t->a.push_back(std::move(e));
                while (accept_op(",")) {
                    if (is_op(")")) break;
                    t->a.push_back(parse_expr());
                }
                e = std::move(t);
            }
            expect_op(")");
            return e;
        }
        if (accept_op("[")) {
            auto e = make(Expr::K::List, line);
            while (!accept_op("]")) {
                if (!e->a.empty()) {
                    expect_op(",");
                    if (accept_op("]")) break;
                }
                e->a.push_back(parse_expr());
            }
            return e;
        }
        if (accept_op("{")) {
            auto e = make(Expr::K::Dict, line);
            while (!accept_op("}")) {
                if (!e->a.empty()) {
                    expect_op(",");
                    if (accept_op("}")) break;
                }
                e->a.push_back(parse_expr());
                expect_op(":");
                e->a.push_back(parse_expr());
            }
            return e;
        }
        unexpected("an expression");
    }

    ExprP parse_postfix(ExprP e) {
        while (true) {
            if (is_op(".")) {
                int line = next().line;
                if (cur().type == Tok::Int) {
                    auto it = make(Expr::K::Item, line);
                    auto idx = make(Expr::K::Literal, line);
                    idx->lit = Value::integer(next().ival);
                    it->a.push_back(std::move(e));
                    it->a.push_back(std::move(idx));
                    e = std::move(it);
                    continue;
                }
                auto at = make(Expr::K::Attr, line);
                at->name = expect_name();
                at->a.push_back(std::move(e));
                e = std::move(at);
            } else if (is_op("[")) {
                e = parse_subscript(std::move(e));
            } else if (is_op("(")) {
                e = parse_call(std::move(e));
            } else {
                return e;
            }
        }
    }

    ExprP parse_subscript(ExprP obj) {
        int line = next().line;  // '['
        ExprP parts[3];
        bool slice = false;
        if (!is_op(":")) {
            parts[0] = parse_expr();
            if (accept_op("]")) {
                auto it = make(Expr::K::Item, line);
                it->a.push_back(std::move(obj));
                it->a.push_back(std::move(parts[0]));
                return it;
            }
        }
        expect_op(":");
        slice = true;
        if (!is_op(":") && !is_op("]")) parts[1] = parse_expr();
        if (accept_op(":")) {
            if (!is_op("]")) parts[2] = parse_expr();
        }
        expect_op("]");
        (void)slice;
        auto s = make(Expr::K::Slice, line);
        s->a.push_back(std::move(obj));
        for (auto& p : parts) s->a.push_back(std::move(p));
        return s;
    }

    void parse_call_args(Expr& call) {
        expect_op("(");
        bool first = true;
        while (!accept_op(")")) {
            if (!first) {
                expect_op(",");
                if (accept_op(")")) break;
            }
            first = false;
            if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
                std::string k = next().text;
                ++i_;
                call.kw.emplace_back(k, parse_expr());
            } else {
                if (!call.kw.empty()) unexpected("a keyword argument (positional after keyword)");
                call.a.push_back(parse_expr());
            }
        }
    }

    ExprP parse_call(ExprP callee) {
        auto c = make(Expr::K::Call, cur().line);
        c->a.push_back(std::move(callee));
        parse_call_args(*c);
        return c;
    }

    ExprP parse_filter_expr(ExprP e) {
        while (true) {
            if (is_op("|")) {
                e = parse_filter_chain(std::move(e));
            } else if (is_name("is")) {
                e = parse_test(std::move(e));
            } else if (is_op("(")) {
                e = parse_call(std::move(e));
            } else {
                return e;
            }
        }
    }

    // `| name(args) | name2 ...`; subject may be null (filter blocks, set blocks).
    ExprP parse_filter_chain(ExprP subject, bool first_without_pipe = false) {
        bool first = true;
        while ((first && first_without_pipe) || is_op("|")) {
            if (!(first && first_without_pipe)) ++i_;
            first = false;
            int line = cur().line;
            std::string name = expect_name();
            while (accept_op(".")) name += "." + expect_name();
            if (!filter_names().count(name)) error(line, fmt::format("no filter named '{}'", name));
            auto f = make(Expr::K::Filter, line);
            f->name = name;
            f->a.push_back(std::move(subject));
            if (is_op("(")) parse_call_args(*f);
            subject = std::move(f);
        }
        return subject;
    }

    ExprP parse_test(ExprP subject) {
        int line = next().line;  // 'is'
        bool negated = accept_name("not");
        std::string name = expect_name();
        while (accept_op(".")) name += "." + expect_name();
        if (!test_names().count(name)) error(line, fmt::format("no test named '{}'", name));
        auto t = make(Expr::K::Test, line);
        t->name = name;
        t->a.push_back(std::move(subject));
        if (is_op("(")) {
            parse_call_args(*t);
        } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                    cur().type == Tok::Float || is_op("[") || is_op("{")) &&
                   !(cur().type == Tok::Name &&
                     (cur().text == "else" || cur().text == "or" || cur().text == "and" ||
                      cur().text == "if" || cur().text == "is" || cur().text == "in" ||
                      cur().text == "not"))) {
            t->a.push_back(parse_postfix(parse_primary()));
        }
        if (!negated) return t;
        auto n = make(Expr::K::Not, line);
        n->a.push_back(std::move(t));
        return n;
    }
};

// ============================================================================================
// Interpreter
// ============================================================================================

struct Scope {
    std::unordered_map<std::string, Value> vars;
    std::shared_ptr<Scope> parent;
};

enum class Flow { Normal, Break, Continue };

int64_t py_floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

int64_t py_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}

std::string strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
    std::u32string u = utf8_decode(s);
    std::u32string set;
    bool ws = chars.is_undefined() || chars.is_none();
    if (!ws) set = utf8_decode(chars.str());
    auto strip = [&](char32_t c) {
        return ws ? is_py_space(c) : set.find(c) != std::u32string::npos;
    };
    size_t b = 0, e = u.size();
    if (left)
        while (b < e && strip(u[b])) ++b;
    if (right)
        while (e > b && strip(u[e - 1])) --e;
    return utf8_encode(std::u32string_view(u).substr(b, e - b));
}

std::string upper(std::string s) {
    for (char& c : s)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return s;
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

bool is_alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

// Python str.title() (ASCII letters).
std::string py_title(std::string s) {
    bool prev_letter = false;
    for (char& c : s) {
        if (is_alpha(c)) {
            c = prev_letter ? lower(std::string(1, c))[0] : upper(std::string(1, c))[0];
            prev_letter = true;
        } else {
            prev_letter = false;
        }
    }
    return s;
}

std::string capitalize(const std::string& s) {
    if (s.empty()) return s;
    return upper(s.substr(0, 1)) + lower(s.substr(1));
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
    std::string out;
    if (from.empty()) {
        // Python inserts `to` between every character (and at both ends).
        std::u32string u = utf8_decode(s);
        int64_t done = 0;
        for (char32_t c : u) {
            if (count < 0 || done < count) {
                out += to;
                ++done;
            }
            out += utf8_encode(std::u32string(1, c));
        }
        if (count < 0 || done < count) out += to;
        return out;
    }
    size_t pos = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
        size_t f = s.find(from, pos);
        if (f == std::string::npos) break;
        out.append(s, pos, f - pos);
        out += to;
        pos = f + from.size();
        ++done;
    }
    out.append(s, pos);
    return out;
}

List py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
    List out;
    if (sep.is_undefined() || sep.is_none()) {
        std::u32string u = utf8_decode(s);
        size_t i = 0;
        int64_t splits = 0;
        while (true) {
            while (i < u.size() && is_py_space(u[i])) ++i;
            if (i >= u.size()) break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                size_t e = u.size();
                while (e > i && is_py_space(u[e - 1])) --e;
                out.push_back(Value::string(utf8_encode(std::u32string_view(u).substr(i, e - i))));
                break;
            }
            size_t j = i;
            while (j < u.size() && !is_py_space(u[j])) ++j;
            out.push_back(Value::string(utf8_encode(std::u32string_view(u).substr(i, j - i))));
            ++splits;
            i = j;
        }
        return out;
    }
    const std::string& d = sep.str();
    if (d.empty()) throw TemplateError("split(): empty separator");
    size_t pos = 0;
    int64_t splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
        size_t f = s.find(d, pos);
        if (f == std::string::npos) break;
        out.push_back(Value::string(s.substr(pos, f - pos)));
        pos = f + d.size();
        ++splits;
    }
    out.push_back(Value::string(s.substr(pos)));
    return out;
}

// Python slice semantics on a sequence of length n.
std::vector<size_t> slice_indices(int64_t n, const Value& start, const Value& stop,
                                  const Value& step) {
    auto is_missing = [](const Value& v) { return v.is_undefined() || v.is_none(); };
    int64_t st = is_missing(step) ? 1 : step.as_int();
    if (st == 0) throw TemplateError("slice step cannot be zero");
    int64_t lo, hi;
    if (st > 0) {
        lo = is_missing(start) ? 0 : start.as_int();
        hi = is_missing(stop) ? n : stop.as_int();
        if (lo < 0) lo = std::max<int64_t>(0, lo + n);
        if (hi < 0) hi = std::max<int64_t>(0, hi + n);
        lo = std::min(lo, n);
        hi = std::min(hi, n);
    } else {
        lo = is_missing(start) ? n - 1 : start.as_int();
        hi = is_missing(stop) ? -1 : stop.as_int();
        if (!is_missing(start)) {
            if (lo < 0) lo += n;
            if (lo < 0) lo = -1;
            if (lo >= n) lo = n - 1;
        }
        if (!is_missing(stop)) {
            if (hi < 0) hi += n;
            if (hi < 0) hi = -1;
            if (hi >= n) hi = n - 1;
        }
    }
    std::vector<size_t> idx;
    if (st > 0) {
        for (int64_t i = lo; i < hi; i += st) idx.push_back(static_cast<size_t>(i));
    } else {
        for (int64_t i = lo; i > hi; i += st) idx.push_back(static_cast<size_t>(i));
    }
    return idx;
}

// Items of an iterable as a list (dict -> keys, string -> characters).
List iterate(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::Undefined: return {};
        case Value::Kind::List: return v.items();
        case Value::Kind::Dict: {
            if (v.is_namespace()) throw TemplateError("'Namespace' object is not iterable");
            List out;
            for (const auto& [k, x] : v.map().entries) out.push_back(Value::string(k));
            return out;
        }
        case Value::Kind::String: {
            List out;
            for (char32_t c : utf8_decode(v.str()))
                out.push_back(Value::string(utf8_encode(std::u32string(1, c))));
            return out;
        }
        default: throw TemplateError(fmt::format("'{}' object is not iterable", type_name(v)));
    }
}

int64_t length(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::Undefined: return 0;
        case Value::Kind::String: return static_cast<int64_t>(utf8_decode(v.str()).size());
        case Value::Kind::List: return static_cast<int64_t>(v.items().size());
        case Value::Kind::Dict:
            if (!v.is_namespace()) return static_cast<int64_t>(v.map().entries.size());
            [[fallthrough]];
        default: throw TemplateError(fmt::format("object of type '{}' has no len()", type_name(v)));
    }
}

Value items_of(const Value& d) {
    if (d.is_undefined()) return Value::list();
    if (!d.is_mapping())
        throw TemplateError(fmt::format("items() needs a mapping, got '{}'", type_name(d)));
    List out;
    for (const auto& [k, x] : d.map().entries)
        out.push_back(Value::list({Value::string(k), x}));
    return Value::list(std::move(out));
}

class Renderer {
public:
    Renderer(const std::vector<std::pair<std::string, Value>>& vars, const RenderOptions& opts)
        : opts_(opts) {
        for (const auto& [k, v] : vars) context_[k] = v;
        install_globals();
        scope_ = std::make_shared<Scope>();
        root_ = scope_;
    }

    void run(const Body& body, std::string& out) { exec(body, out); }

private:
    const RenderOptions& opts_;
    std::unordered_map<std::string, Value> context_;
    std::unordered_map<std::string, Value> globals_;
    std::shared_ptr<Scope> scope_, root_;
    int depth_ = 0;

    struct ScopeGuard {
        Renderer& r;
        std::shared_ptr<Scope> saved;
        ScopeGuard(Renderer& r, std::shared_ptr<Scope> parent) : r(r), saved(r.scope_) {
            auto s = std::make_shared<Scope>();
            s->parent = std::move(parent);
            r.scope_ = std::move(s);
        }
        ~ScopeGuard() { r.scope_ = std::move(saved); }
        ScopeGuard(const ScopeGuard&) = delete;
        ScopeGuard& operator=(const ScopeGuard&) = delete;
    };

    void install_globals() {
        globals_["raise_exception"] = Value::function([](CallArgs& a) -> Value {
            auto m = a.get(0, "message");
            throw TemplateError(m ? to_str(*m) : std::string("raise_exception() called"), 0, true);
        });
        globals_["strftime_now"] = Value::function([this](CallArgs& a) -> Value {
            auto f = a.get(0, "format");
            if (!f || !f->is_string()) throw TemplateError("strftime_now() needs a format string");
            std::tm tm{};
            if (opts_.now) {
                tm = *opts_.now;
            } else {
                std::time_t t = std::time(nullptr);
                localtime_r(&t, &tm);
            }
            char buf[512];
            size_t n = std::strftime(buf, sizeof(buf), f->str().c_str(), &tm);
            return Value::string(std::string(buf, n));
        });
        globals_["range"] = Value::function([](CallArgs& a) -> Value {
            if (a.pos.empty() || a.pos.size() > 3) throw TemplateError("range() takes 1 to 3 arguments");
            for (const auto& v : a.pos)
                if (!v.is_int() && !v.is_bool())
                    throw TemplateError(fmt::format("range() arguments must be integers, got '{}'",
                                                    type_name(v)));
            int64_t start = 0, stop, step = 1;
            if (a.pos.size() == 1) {
                stop = a.pos[0].as_int();
            } else {
                start = a.pos[0].as_int();
                stop = a.pos[1].as_int();
                if (a.pos.size() == 3) step = a.pos[2].as_int();
            }
            if (step == 0) throw TemplateError("range() step must not be zero");
            List out;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                if (out.size() >= 100000) throw TemplateError("range too big (max 100000 items)");
                out.push_back(Value::integer(i));
            }
            return Value::list(std::move(out));
        });
        auto make_dict = [](bool ns) {
            return Value::function([ns](CallArgs& a) -> Value {
                Value d = ns ? Value::namespace_() : Value::dict();
                for (const auto& p : a.pos) {
                    if (!p.is_mapping())
                        throw TemplateError("positional argument must be a mapping");
                    for (const auto& [k, v] : p.map().entries) d.map().set(k, v);
                }
                for (const auto& [k, v] : a.kw) d.map().set(k, v);
                return d;
            });
        };
        globals_["namespace"] = make_dict(true);
        globals_["dict"] = make_dict(false);
    }

    Value lookup(const std::string& name) const {
        for (const Scope* s = scope_.get(); s; s = s->parent.get()) {
            auto it = s->vars.find(name);
            if (it != s->vars.end()) return it->second;
        }
        if (auto it = context_.find(name); it != context_.end()) return it->second;
        if (auto it = globals_.find(name); it != globals_.end()) return it->second;
        return Value();
    }

    // ---- statements ----

    Flow exec(const Body& body, std::string& out) {
        for (const auto& n : body) {
            Flow f = exec_node(*n, out);
            if (f != Flow::Normal) return f;
        }
        return Flow::Normal;
    }

    Flow exec_node(const Node& n, std::string& out) {
        try {
            return exec_node_inner(n, out);
        } catch (TemplateError& e) {
            if (e.line == 0) e.line = n.line;
            throw;
        }
    }

    Flow exec_node_inner(const Node& n, std::string& out) {
        switch (n.k) {
            case Node::K::Text: out += n.text; return Flow::Normal;
            case Node::K::Output: out += to_str(eval(*n.expr)); return Flow::Normal;
            case Node::K::If: {
                for (const auto& [cond, body] : n.branches)
                    if (truthy(eval(*cond))) return exec(body, out);
                return exec(n.else_body, out);
            }
            case Node::K::For: return exec_for(n, out);
            case Node::K::Set: {
                Value v = eval(*n.expr);
                if (!n.attr.empty()) {
                    Value ns = lookup(n.text);
                    if (!ns.is_namespace())
                        throw TemplateError(fmt::format(
                            "cannot assign attribute '{}' on '{}': it is not a namespace()", n.attr,
                            n.text));
                    ns.map().set(n.attr, std::move(v));
                } else {
                    assign(n.targets, std::move(v));
                }
                return Flow::Normal;
            }
            case Node::K::SetBlock: {
                std::string s;
                exec(n.body, s);
                Value v = Value::string(std::move(s));
                if (n.expr) v = eval_filter_chain(*n.expr, std::move(v));
                scope_->vars[n.text] = std::move(v);
                return Flow::Normal;
            }
            case Node::K::Macro: scope_->vars[n.text] = make_macro(n, scope_); return Flow::Normal;
            case Node::K::CallBlock: {
                Value caller = make_macro(n, scope_);
                const Expr& call = *n.expr;
                Value fn = eval(*call.a[0]);
                CallArgs args = eval_args(call);
                args.kw.emplace_back("caller", caller);
                out += to_str(call_value(fn, args));
                return Flow::Normal;
            }
            case Node::K::FilterBlock: {
                std::string s;
                exec(n.body, s);
                out += to_str(eval_filter_chain(*n.expr, Value::string(std::move(s))));
                return Flow::Normal;
            }
            case Node::K::Break: return Flow::Break;
            case Node::K::Continue: return Flow::Continue;
            case Node::K::Generation: return exec(n.body, out);
        }
        return Flow::Normal;
    }

    void assign(const std::vector<std::string>& targets, Value v) {
        if (targets.size() == 1) {
            scope_->vars[targets[0]] = std::move(v);
            return;
        }
        List xs = iterate(v);
        if (xs.size() != targets.size())
            throw TemplateError(fmt::format("cannot unpack {} values into {} names", xs.size(),
                                            targets.size()));
        for (size_t i = 0; i < xs.size(); ++i) scope_->vars[targets[i]] = xs[i];
    }

    Flow exec_for(const Node& n, std::string& out) {
        List items = iterate(eval(*n.expr));
        ScopeGuard guard(*this, scope_);
        if (n.cond) {
            List kept;
            for (auto& x : items) {
                assign(n.targets, x);
                if (truthy(eval(*n.cond))) kept.push_back(x);
            }
            items = std::move(kept);
        }
        const auto len = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < len; ++i) {
            const Value& x = items[static_cast<size_t>(i)];
            assign(n.targets, x);
            Value loop = Value::dict();
            Dict& d = loop.map();
            d.entries.reserve(12);
            d.entries.emplace_back("index", Value::integer(i + 1));
            d.entries.emplace_back("index0", Value::integer(i));
            d.entries.emplace_back("revindex", Value::integer(len - i));
            d.entries.emplace_back("revindex0", Value::integer(len - i - 1));
            d.entries.emplace_back("first", Value::boolean(i == 0));
            d.entries.emplace_back("last", Value::boolean(i == len - 1));
            d.entries.emplace_back("length", Value::integer(len));
            d.entries.emplace_back("depth", Value::integer(1));
            d.entries.emplace_back("depth0", Value::integer(0));
            d.entries.emplace_back("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value());
            d.entries.emplace_back("nextitem",
                                   i + 1 < len ? items[static_cast<size_t>(i + 1)] : Value());
            d.entries.emplace_back("cycle", Value::function([i](CallArgs& a) -> Value {
                                       if (a.pos.empty())
                                           throw TemplateError("loop.cycle() needs arguments");
                                       return a.pos[static_cast<size_t>(i) % a.pos.size()];
                                   }));
            scope_->vars["loop"] = std::move(loop);
            Flow f = exec(n.body, out);
            if (f == Flow::Break) break;
        }
        if (items.empty()) {
            scope_->vars.erase("loop");
            return exec(n.else_body, out);
        }
        return Flow::Normal;
    }

    Value make_macro(const Node& n, std::shared_ptr<Scope> closure) {
        const Node* node = &n;
        // Macros see the template's top level; call-block callers see where they were written.
        // Weak: the scope may hold this macro (no reference cycle).
        std::weak_ptr<Scope> weak = n.k == Node::K::Macro ? root_ : std::move(closure);
        return Value::function([this, node, weak](CallArgs& a) -> Value {
            std::shared_ptr<Scope> parent = weak.lock();
            if (!parent) throw TemplateError("macro called after its scope ended");
            if (++depth_ > 200) {
                --depth_;
                throw TemplateError("macro recursion too deep");
            }
            struct Depth {
                int& d;
                ~Depth() { --d; }
            } depth_guard{depth_};
            ScopeGuard guard(*this, parent);
            const auto& params = node->params;
            if (a.pos.size() > params.size())
                throw TemplateError(fmt::format("macro '{}' takes {} arguments, got {}", node->text,
                                                params.size(), a.pos.size()));
            for (size_t i = 0; i < params.size(); ++i) {
                const auto& [pname, def] = params[i];
                std::optional<Value> v = a.get(i, pname);
                if (v) {
                    scope_->vars[pname] = *v;
                } else if (def) {
                    scope_->vars[pname] = eval(*def);
                } else {
                    scope_->vars[pname] = Value();
                }
            }
            for (const auto& [k, v] : a.kw) {
                bool known = k == "caller";
                for (const auto& p : params) known = known || p.first == k;
                if (!known)
                    throw TemplateError(fmt::format("macro '{}' has no argument named '{}'",
                                                    node->text, k));
                if (k == "caller") scope_->vars[k] = v;
            }
            std::string out;
            exec(node->body, out);
            return Value::string(std::move(out));
        });
    }

    // ---- expressions ----

    Value eval(const Expr& e) {
        try {
            return eval_inner(e);
        } catch (TemplateError& err) {
            if (err.line == 0) err.line = e.line;
            throw;
        }
    }

    CallArgs eval_args(const Expr& e, size_t first = 1) {
        CallArgs args;
        for (size_t i = first; i < e.a.size(); ++i) args.pos.push_back(eval(*e.a[i]));
        for (const auto& [k, v] : e.kw) args.kw.emplace_back(k, eval(*v));
        return args;
    }

    Value call_value(const Value& fn, CallArgs& args) {
        if (!fn.is_function())
            throw TemplateError(fmt::format("'{}' object is not callable", type_name(fn)));
        return fn.fn()(args);
    }

    static std::string describe_undefined(const Expr& e) {
        if (e.k == Expr::K::Name) return fmt::format("'{}' is undefined", e.name);
        if (e.k == Expr::K::Attr) return fmt::format("'{}' is undefined", e.name);
        return "value is undefined";
    }

    Value eval_inner(const Expr& e) {
        switch (e.k) {
            case Expr::K::Literal: return e.lit;
            case Expr::K::Name: return lookup(e.name);
            case Expr::K::Attr: {
                Value obj = eval(*e.a[0]);
                if (obj.is_undefined())
                    throw TemplateError(fmt::format("{} (while reading attribute '{}')",
                                                    describe_undefined(*e.a[0]), e.name));
                return get_attr(obj, e.name);
            }
            case Expr::K::Item: {
                Value obj = eval(*e.a[0]);
                Value key = eval(*e.a[1]);
                if (obj.is_undefined())
                    throw TemplateError(fmt::format("{} (while reading item {})",
                                                    describe_undefined(*e.a[0]), repr(key)));
                return get_item(obj, key);
            }
            case Expr::K::Slice: {
                Value obj = eval(*e.a[0]);
                Value p[3];
                for (int i = 0; i < 3; ++i)
                    if (e.a[1 + i]) p[i] = eval(*e.a[1 + i]);
                for (auto& v : p)
                    if (!v.is_undefined() && !v.is_none() && !v.is_int() && !v.is_bool())
                        throw TemplateError("slice indices must be integers or none");
                if (obj.is_list()) {
                    const List& xs = obj.items();
                    List out;
                    for (size_t i : slice_indices(static_cast<int64_t>(xs.size()), p[0], p[1], p[2]))
                        out.push_back(xs[i]);
                    return Value::list(std::move(out));
                }
                if (obj.is_string()) {
                    std::u32string u = utf8_decode(obj.str());
                    std::u32string out;
                    for (size_t i : slice_indices(static_cast<int64_t>(u.size()), p[0], p[1], p[2]))
                        out += u[i];
                    return Value::string(utf8_encode(out));
                }
                if (obj.is_undefined())
                    throw TemplateError(describe_undefined(*e.a[0]) + " (while slicing)");
                throw TemplateError(fmt::format("'{}' object is not subscriptable", type_name(obj)));
            }
            case Expr::K::Call: {
                Value fn = eval(*e.a[0]);
                if (fn.is_undefined())
                    throw TemplateError(describe_undefined(*e.a[0]) + " and cannot be called");
                CallArgs args = eval_args(e);
                return call_value(fn, args);
            }
            case Expr::K::Filter: {
                Value v = eval(*e.a[0]);
                CallArgs args = eval_args(e);
                return apply_filter(e.name, std::move(v), args);
            }
            case Expr::K::Test: {
                Value v = eval(*e.a[0]);
                CallArgs args = eval_args(e);
                return Value::boolean(apply_test(e.name, v, args));
            }
            case Expr::K::Neg:
            case Expr::K::Pos: {
                Value v = eval(*e.a[0]);
                if (!v.is_number())
                    throw TemplateError(fmt::format("bad operand type for unary {}: '{}'",
                                                    e.k == Expr::K::Neg ? '-' : '+', type_name(v)));
                if (e.k == Expr::K::Pos) return v.is_bool() ? Value::integer(v.as_int()) : v;
                return v.is_float() ? Value::number(-v.as_double()) : Value::integer(-v.as_int());
            }
            case Expr::K::Not: return Value::boolean(!truthy(eval(*e.a[0])));
            case Expr::K::And: {
                Value l = eval(*e.a[0]);
                return truthy(l) ? eval(*e.a[1]) : l;
            }
            case Expr::K::Or: {
                Value l = eval(*e.a[0]);
                return truthy(l) ? l : eval(*e.a[1]);
            }
            case Expr::K::Bin: return binop(e.name, eval(*e.a[0]), eval(*e.a[1]));
            case Expr::K::Compare: {
                Value l = eval(*e.a[0]);
                for (size_t i = 0; i < e.ops.size(); ++i) {
                    Value r = eval(*e.a[i + 1]);
                    if (!compare_op(e.ops[i], l, r)) return Value::boolean(false);
                    l = std::move(r);
                }
                return Value::boolean(true);
            }
            case Expr::K::Cond: {
                if (truthy(eval(*e.a[1]))) return eval(*e.a[0]);
                return e.a[2] ? eval(*e.a[2]) : Value();
            }
            case Expr::K::List:
            case Expr::K::Tuple: {
                List out;
                for (const auto& x : e.a) out.push_back(eval(*x));
                return Value::list(std::move(out));
            }
            case Expr::K::Dict: {
                Value d = Value::dict();
                for (size_t i = 0; i + 1 < e.a.size(); i += 2) {
                    Value k = eval(*e.a[i]);
                    if (!k.is_string())
                        throw TemplateError(fmt::format("dict keys must be strings here, got '{}'",
                                                        type_name(k)));
                    d.map().set(k.str(), eval(*e.a[i + 1]));
                }
                return d;
            }
        }
        return Value();
    }

    Value eval_filter_chain(const Expr& chain, Value subject) {
        // The innermost filter of the chain has a null subject.
        if (chain.k != Expr::K::Filter) return subject;
        Value inner = chain.a[0] ? eval_filter_chain(*chain.a[0], std::move(subject)) : subject;
        CallArgs args = eval_args(chain);
        return apply_filter(chain.name, std::move(inner), args);
    }

    bool compare_op(const std::string& op, const Value& l, const Value& r) {
        if (op == "==") return equals(l, r);
        if (op == "!=") return !equals(l, r);
        if (op == "in") return contains(r, l);
        if (op == "notin") return !contains(r, l);
        int c = compare(l, r);
        if (op == "<") return c < 0;
        if (op == "<=") return c <= 0;
        if (op == ">") return c > 0;
        return c >= 0;  // >=
    }

    static bool contains(const Value& container, const Value& x) {
        switch (container.kind()) {
            case Value::Kind::Undefined: return false;
            case Value::Kind::String:
                if (!x.is_string())
                    throw TemplateError(fmt::format(
                        "'in <string>' requires string as left operand, not {}", type_name(x)));
                return container.str().find(x.str()) != std::string::npos;
            case Value::Kind::List:
                for (const auto& y : container.items())
                    if (equals(x, y)) return true;
                return false;
            case Value::Kind::Dict:
                return x.is_string() && container.map().find(x.str()) != nullptr;
            default:
                throw TemplateError(fmt::format("argument of type '{}' is not iterable",
                                                type_name(container)));
        }
    }

    static Value binop(const std::string& op, const Value& l, const Value& r) {
        if (op == "~") return Value::string(to_str(l) + to_str(r));
        if (l.is_undefined() || r.is_undefined())
            throw TemplateError(fmt::format("unsupported operand '{}' on an undefined value", op));
        auto type_err = [&]() -> TemplateError {
            return TemplateError(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'",
                                             op, type_name(l), type_name(r)));
        };
        bool nums = l.is_number() && r.is_number();
        bool ints = nums && !l.is_float() && !r.is_float();
        if (op == "+") {
            if (ints) return Value::integer(l.as_int() + r.as_int());
            if (nums) return Value::number(l.as_double() + r.as_double());
            if (l.is_string() && r.is_string()) return Value::string(l.str() + r.str());
            if (l.is_list() && r.is_list()) {
                List out = l.items();
                out.insert(out.end(), r.items().begin(), r.items().end());
                return Value::list(std::move(out));
            }
            throw type_err();
        }
        if (op == "-") {
            if (ints) return Value::integer(l.as_int() - r.as_int());
            if (nums) return Value::number(l.as_double() - r.as_double());
            throw type_err();
        }
        if (op == "*") {
            if (ints) return Value::integer(l.as_int() * r.as_int());
            if (nums) return Value::number(l.as_double() * r.as_double());
            const Value* seq = l.is_number() ? &r : &l;
            const Value* cnt = l.is_number() ? &l : &r;
            if (cnt->is_float() || !cnt->is_number()) throw type_err();
            int64_t times = std::max<int64_t>(0, cnt->as_int());
            if (seq->is_string()) {
                std::string out;
                for (int64_t i = 0; i < times; ++i) out += seq->str();
                return Value::string(std::move(out));
            }
            if (seq->is_list()) {
                List out;
                for (int64_t i = 0; i < times; ++i)
                    out.insert(out.end(), seq->items().begin(), seq->items().end());
                return Value::list(std::move(out));
            }
            throw type_err();
        }
        if (!nums) throw type_err();
        if (op == "/") {
            if (r.as_double() == 0) throw TemplateError("division by zero");
            return Value::number(l.as_double() / r.as_double());
        }
        if (op == "//") {
            if (r.as_double() == 0) throw TemplateError("integer division or modulo by zero");
            if (ints) return Value::integer(py_floordiv(l.as_int(), r.as_int()));
            return Value::number(std::floor(l.as_double() / r.as_double()));
        }
        if (op == "%") {
            if (r.as_double() == 0) throw TemplateError("integer division or modulo by zero");
            if (ints) return Value::integer(py_mod(l.as_int(), r.as_int()));
            double a = l.as_double(), b = r.as_double();
            double m = std::fmod(a, b);
            if (m != 0 && ((m < 0) != (b < 0))) m += b;
            return Value::number(m);
        }
        if (op == "**") {
            if (ints && r.as_int() >= 0) {
                int64_t res = 1, base = l.as_int();
                for (int64_t i = 0; i < r.as_int(); ++i) res *= base;
                return Value::integer(res);
            }
            return Value::number(std::pow(l.as_double(), r.as_double()));
        }
        throw type_err();
    }

    // ---- attribute / item access ----

    Value get_item(const Value& obj, const Value& key) {
        switch (obj.kind()) {
            case Value::Kind::Dict:
                if (key.is_string()) {
                    if (const Value* v = obj.map().find(key.str())) return *v;
                    if (!obj.is_namespace()) return method(obj, key.str());
                }
                return Value();
            case Value::Kind::List:
                if (key.is_int() || key.is_bool()) {
                    int64_t n = static_cast<int64_t>(obj.items().size());
                    int64_t i = key.as_int();
                    if (i < 0) i += n;
                    if (i < 0 || i >= n) return Value();
                    return obj.items()[static_cast<size_t>(i)];
                }
                if (key.is_string()) return method(obj, key.str());
                return Value();
            case Value::Kind::String:
                if (key.is_int() || key.is_bool()) {
                    std::u32string u = utf8_decode(obj.str());
                    int64_t n = static_cast<int64_t>(u.size());
                    int64_t i = key.as_int();
                    if (i < 0) i += n;
                    if (i < 0 || i >= n) return Value();
                    return Value::string(utf8_encode(std::u32string(1, u[static_cast<size_t>(i)])));
                }
                if (key.is_string()) return method(obj, key.str());
                return Value();
            default: return Value();
        }
    }

    Value get_attr(const Value& obj, const std::string& name) {
        if (obj.is_dict()) {
            if (!obj.is_namespace()) {
                Value m = method(obj, name);
                if (!m.is_undefined()) return m;
            }
            if (const Value* v = obj.map().find(name)) return *v;
            return Value();
        }
        return method(obj, name);
    }

    // Bound methods of str, dict and list (Python attribute lookup); undefined if none.
    Value method(const Value& obj, const std::string& name) {
        if (obj.is_string()) return string_method(obj, name);
        if (obj.is_mapping()) {
            if (name == "items")
                return Value::function([obj](CallArgs&) -> Value { return items_of(obj); });
            if (name == "keys") return Value::function([obj](CallArgs&) -> Value {
                List out;
                for (const auto& [k, v] : obj.map().entries) out.push_back(Value::string(k));
                return Value::list(std::move(out));
            });
            if (name == "values") return Value::function([obj](CallArgs&) -> Value {
                List out;
                for (const auto& [k, v] : obj.map().entries) out.push_back(v);
                return Value::list(std::move(out));
            });
            if (name == "get") return Value::function([obj](CallArgs& a) -> Value {
                auto k = a.get(0, "key");
                if (!k) throw TemplateError("get() needs a key");
                if (k->is_string())
                    if (const Value* v = obj.map().find(k->str())) return *v;
                return a.get_or(1, "default", Value::none());
            });
            static const std::set<std::string> mutating = {"pop", "update", "clear", "setdefault",
                                                           "popitem", "copy", "fromkeys"};
            if (mutating.count(name))
                return Value::function([name](CallArgs&) -> Value {
                    throw TemplateError(fmt::format(
                        "dict.{}() is not allowed in chat templates (immutable sandbox)", name));
                });
            return Value();
        }
        if (obj.is_list()) {
            if (name == "index") return Value::function([obj](CallArgs& a) -> Value {
                auto x = a.get(0, "value");
                if (!x) throw TemplateError("index() needs a value");
                const List& xs = obj.items();
                for (size_t i = 0; i < xs.size(); ++i)
                    if (equals(xs[i], *x)) return Value::integer(static_cast<int64_t>(i));
                throw TemplateError(fmt::format("{} is not in list", repr(*x)));
            });
            if (name == "count") return Value::function([obj](CallArgs& a) -> Value {
                auto x = a.get(0, "value");
                if (!x) throw TemplateError("count() needs a value");
                int64_t c = 0;
                for (const auto& y : obj.items()) c += equals(y, *x) ? 1 : 0;
                return Value::integer(c);
            });
            static const std::set<std::string> mutating = {"append", "extend", "insert", "pop",
                                                           "remove", "reverse", "sort", "clear"};
            if (mutating.count(name))
                return Value::function([name](CallArgs&) -> Value {
                    throw TemplateError(fmt::format(
                        "list.{}() is not allowed in chat templates (immutable sandbox)", name));
                });
        }
        return Value();
    }

    static const std::string& str_arg(const CallArgs& a, size_t i, const char* name,
                                      const char* method) {
        static const std::string empty;
        if (i >= a.pos.size()) {
            for (const auto& [k, v] : a.kw)
                if (k == name && v.is_string()) return v.str();
            throw TemplateError(fmt::format("str.{}() needs a string argument '{}'", method, name));
        }
        if (!a.pos[i].is_string())
            throw TemplateError(fmt::format("str.{}() argument must be a string, got '{}'", method,
                                            type_name(a.pos[i])));
        return a.pos[i].str();
    }

    Value string_method(const Value& obj, const std::string& name) {
        std::string s = obj.str();
        if (name == "strip" || name == "lstrip" || name == "rstrip") {
            bool l = name != "rstrip", r = name != "lstrip";
            return Value::function([s, l, r](CallArgs& a) -> Value {
                return Value::string(strip_chars(s, a.get_or(0, "chars", Value()), l, r));
            });
        }
        if (name == "upper") return Value::function([s](CallArgs&) { return Value::string(upper(s)); });
        if (name == "lower") return Value::function([s](CallArgs&) { return Value::string(lower(s)); });
        if (name == "title")
            return Value::function([s](CallArgs&) { return Value::string(py_title(s)); });
        if (name == "capitalize")
            return Value::function([s](CallArgs&) { return Value::string(capitalize(s)); });
        if (name == "startswith" || name == "endswith") {
            bool start = name == "startswith";
            return Value::function([s, start](CallArgs& a) -> Value {
                auto p = a.get(0, "prefix");
                if (!p) throw TemplateError("startswith()/endswith() needs an argument");
                List cands = p->is_list() ? p->items() : List{*p};
                for (const auto& c : cands) {
                    if (!c.is_string())
                        throw TemplateError("startswith()/endswith() argument must be a string");
                    const std::string& x = c.str();
                    if (x.size() > s.size()) continue;
                    if (start ? s.compare(0, x.size(), x) == 0
                              : s.compare(s.size() - x.size(), x.size(), x) == 0)
                        return Value::boolean(true);
                }
                return Value::boolean(false);
            });
        }
        if (name == "split") return Value::function([s](CallArgs& a) -> Value {
            Value sep = a.get_or(0, "sep", Value());
            if (!sep.is_undefined() && !sep.is_none() && !sep.is_string())
                throw TemplateError("split() separator must be a string or none");
            return Value::list(py_split(s, sep, a.get_or(1, "maxsplit", Value::integer(-1)).as_int()));
        });
        if (name == "replace") return Value::function([s](CallArgs& a) -> Value {
            const std::string& from = str_arg(a, 0, "old", "replace");
            const std::string& to = str_arg(a, 1, "new", "replace");
            return Value::string(
                replace_all(s, from, to, a.get_or(2, "count", Value::integer(-1)).as_int()));
        });
        if (name == "find") return Value::function([s](CallArgs& a) -> Value {
            const std::string& x = str_arg(a, 0, "sub", "find");
            size_t f = s.find(x);
            if (f == std::string::npos) return Value::integer(-1);
            return Value::integer(static_cast<int64_t>(utf8_decode(s.substr(0, f)).size()));
        });
        if (name == "count") return Value::function([s](CallArgs& a) -> Value {
            const std::string& x = str_arg(a, 0, "sub", "count");
            if (x.empty()) return Value::integer(static_cast<int64_t>(utf8_decode(s).size()) + 1);
            int64_t c = 0;
            for (size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++c;
            return Value::integer(c);
        });
        if (name == "join") return Value::function([s](CallArgs& a) -> Value {
            auto xs = a.get(0, "iterable");
            if (!xs) throw TemplateError("join() needs an iterable");
            std::string out;
            bool first = true;
            for (const auto& x : iterate(*xs)) {
                if (!x.is_string()) throw TemplateError("join() items must be strings");
                if (!first) out += s;
                first = false;
                out += x.str();
            }
            return Value::string(std::move(out));
        });
        if (name == "format") return Value::function([s](CallArgs& a) -> Value {
            // Positional "{}" / "{0}" and named "{name}" fields, no format specs.
            std::string out;
            size_t auto_idx = 0;
            for (size_t i = 0; i < s.size(); ++i) {
                if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
                    out += '{';
                    ++i;
                } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
                    out += '}';
                    ++i;
                } else if (s[i] == '{') {
                    size_t e = s.find('}', i);
                    if (e == std::string::npos) throw TemplateError("format(): unmatched '{'");
                    std::string field = s.substr(i + 1, e - i - 1);
                    std::optional<Value> v;
                    if (field.empty()) {
                        v = a.get(auto_idx++, "");
                    } else if (std::all_of(field.begin(), field.end(),
                                           [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
                        v = a.get(std::stoul(field), "");
                    } else {
                        v = a.get(SIZE_MAX, field);
                    }
                    if (!v) throw TemplateError(fmt::format("format(): no value for field '{}'", field));
                    out += to_str(*v);
                    i = e;
                } else {
                    out += s[i];
                }
            }
            return Value::string(std::move(out));
        });
        if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isupper" ||
            name == "islower") {
            return Value::function([s, name](CallArgs&) -> Value {
                if (s.empty()) return Value::boolean(false);
                bool ok = true, cased = false;
                for (char c : s) {
                    auto u = static_cast<unsigned char>(c);
                    if (name == "isdigit") ok = ok && std::isdigit(u);
                    if (name == "isalpha") ok = ok && std::isalpha(u);
                    if (name == "isspace") ok = ok && std::isspace(u);
                    if (name == "isupper") {
                        ok = ok && !std::islower(u);
                        cased = cased || std::isupper(u);
                    }
                    if (name == "islower") {
                        ok = ok && !std::isupper(u);
                        cased = cased || std::islower(u);
                    }
                }
                if (name == "isupper" || name == "islower") ok = ok && cased;
                return Value::boolean(ok);
            });
        }
        return Value();
    }

    // ---- filters ----

    Value attr_path(const Value& v, const std::string& path) {
        Value cur = v;
        size_t pos = 0;
        while (true) {
            size_t dot = path.find('.', pos);
            std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
            bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
                return std::isdigit(static_cast<unsigned char>(c));
            });
            if (cur.is_undefined()) return cur;
            cur = numeric ? get_item(cur, Value::integer(std::stoll(part))) : get_item(cur, Value::string(part));
            if (dot == std::string::npos) return cur;
            pos = dot + 1;
        }
    }

    // select/reject/selectattr/rejectattr
    Value select(const Value& seq, const CallArgs& a, bool use_attr, bool keep_if) {
        List out;
        size_t argi = 0;
        std::string attr;
        if (use_attr) {
            auto at = a.get(0, "attribute");
            if (!at || !at->is_string()) throw TemplateError("selectattr/rejectattr need an attribute name");
            attr = at->str();
            argi = 1;
        }
        std::string test;
        CallArgs test_args;
        if (argi < a.pos.size()) {
            if (!a.pos[argi].is_string()) throw TemplateError("the test name must be a string");
            test = a.pos[argi].str();
            if (!test_names().count(test)) throw TemplateError(fmt::format("no test named '{}'", test));
            test_args.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(argi) + 1, a.pos.end());
        }
        for (const auto& x : iterate(seq)) {
            Value subject = use_attr ? attr_path(x, attr) : x;
            bool ok = test.empty() ? truthy(subject) : apply_test(test, subject, test_args);
            if (ok == keep_if) out.push_back(x);
        }
        return Value::list(std::move(out));
    }

    Value apply_filter(const std::string& name, Value v, CallArgs& a) {
        if (name == "tojson") {
            std::optional<std::string> indent;
            Value ind = a.get_or(0, "indent", Value::none());
            if (ind.is_int()) {
                indent = std::string(static_cast<size_t>(std::max<int64_t>(0, ind.as_int())), ' ');
            } else if (ind.is_string()) {
                indent = ind.str();
            }
            std::optional<std::pair<std::string, std::string>> seps;
            Value sv = a.get_or(2, "separators", Value::none());
            if (sv.is_list() && sv.items().size() == 2 && sv.items()[0].is_string() &&
                sv.items()[1].is_string())
                seps = std::make_pair(sv.items()[0].str(), sv.items()[1].str());
            bool sort_keys = truthy(a.get_or(3, "sort_keys", Value::boolean(false)));
            return Value::string(to_json(v, indent, seps, sort_keys));
        }
        if (name == "trim") {
            return Value::string(strip_chars(to_str(v), a.get_or(0, "chars", Value()), true, true));
        }
        if (name == "length" || name == "count") return Value::integer(length(v));
        if (name == "upper") return Value::string(upper(to_str(v)));
        if (name == "lower") return Value::string(lower(to_str(v)));
        if (name == "capitalize") return Value::string(capitalize(to_str(v)));
        if (name == "title") {
            // Jinja's title: words split at whitespace, '-', and opening brackets.
            std::string s = to_str(v), out;
            bool word_start = true;
            for (char c : s) {
                bool sep = is_ws(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
                if (sep) {
                    out += c;
                    word_start = true;
                } else {
                    out += word_start ? upper(std::string(1, c)) : lower(std::string(1, c));
                    word_start = false;
                }
            }
            return Value::string(std::move(out));
        }
        if (name == "string") return Value::string(to_str(v));
        if (name == "safe") return v;
        if (name == "escape" || name == "e") {
            std::string out;
            for (char c : to_str(v)) {
                switch (c) {
                    case '&': out += "&amp;"; break;
                    case '<': out += "&lt;"; break;
                    case '>': out += "&gt;"; break;
                    case '"': out += "&#34;"; break;
                    case '\'': out += "&#39;"; break;
                    default: out += c;
                }
            }
            return Value::string(std::move(out));
        }
        if (name == "default" || name == "d") {
            Value def = a.get_or(0, "default_value", Value::string(""));
            bool boolean = truthy(a.get_or(1, "boolean", Value::boolean(false)));
            if (v.is_undefined() || (boolean && !truthy(v))) return def;
            return v;
        }
        if (name == "first" || name == "last") {
            List xs = iterate(v);
            if (xs.empty()) return Value();
            return name == "first" ? xs.front() : xs.back();
        }
        if (name == "items") return items_of(v);
        if (name == "list") return Value::list(iterate(v));
        if (name == "reverse") {
            if (v.is_string()) {
                std::u32string u = utf8_decode(v.str());
                std::reverse(u.begin(), u.end());
                return Value::string(utf8_encode(u));
            }
            List xs = iterate(v);
            std::reverse(xs.begin(), xs.end());
            return Value::list(std::move(xs));
        }
        if (name == "join") {
            std::string sep = to_str(a.get_or(0, "d", Value::string("")));
            Value attr = a.get_or(1, "attribute", Value::none());
            std::string out;
            bool first = true;
            for (const auto& x : iterate(v)) {
                if (!first) out += sep;
                first = false;
                out += to_str(attr.is_string() ? attr_path(x, attr.str()) : x);
            }
            return Value::string(std::move(out));
        }
        if (name == "map") {
            List out;
            if (auto attr = a.get(SIZE_MAX, "attribute")) {
                Value def = a.get_or(SIZE_MAX, "default", Value());
                for (const auto& x : iterate(v)) {
                    Value y = attr_path(x, to_str(*attr));
                    out.push_back(y.is_undefined() ? def : y);
                }
                return Value::list(std::move(out));
            }
            if (a.pos.empty() || !a.pos[0].is_string())
                throw TemplateError("map() needs a filter name or attribute=");
            std::string f = a.pos[0].str();
            if (!filter_names().count(f)) throw TemplateError(fmt::format("no filter named '{}'", f));
            CallArgs fa;
            fa.pos.assign(a.pos.begin() + 1, a.pos.end());
            fa.kw = a.kw;
            for (const auto& x : iterate(v)) out.push_back(apply_filter(f, x, fa));
            return Value::list(std::move(out));
        }
        if (name == "select") return select(v, a, false, true);
        if (name == "reject") return select(v, a, false, false);
        if (name == "selectattr") return select(v, a, true, true);
        if (name == "rejectattr") return select(v, a, true, false);
        if (name == "attr") {
            auto n = a.get(0, "name");
            if (!n || !n->is_string()) throw TemplateError("attr() needs a name");
            return get_attr(v, n->str());
        }
        if (name == "replace") {
            std::string s = to_str(v);
            auto from = a.get(0, "old"), to = a.get(1, "new");
            if (!from || !to) throw TemplateError("replace() needs old and new strings");
            Value count = a.get_or(2, "count", Value::none());
            return Value::string(replace_all(s, to_str(*from), to_str(*to),
                                             count.is_none() ? -1 : count.as_int()));
        }
        if (name == "int") {
            Value def = a.get_or(0, "default", Value::integer(0));
            if (v.is_int() || v.is_bool()) return Value::integer(v.as_int());
            if (v.is_float()) return Value::integer(static_cast<int64_t>(v.as_double()));
            if (v.is_string()) {
                std::string s = strip_chars(v.str(), Value(), true, true);
                try {
                    size_t used = 0;
                    int64_t i = std::stoll(s, &used, 10);
                    if (used == s.size()) return Value::integer(i);
                    double d = std::stod(s, &used);
                    if (used == s.size()) return Value::integer(static_cast<int64_t>(d));
                } catch (const std::exception&) {
                }
            }
            return def;
        }
        if (name == "float") {
            Value def = a.get_or(0, "default", Value::number(0.0));
            if (v.is_number()) return Value::number(v.as_double());
            if (v.is_string()) {
                std::string s = strip_chars(v.str(), Value(), true, true);
                try {
                    size_t used = 0;
                    double d = std::stod(s, &used);
                    if (used == s.size()) return Value::number(d);
                } catch (const std::exception&) {
                }
            }
            return def;
        }
        if (name == "abs") {
            if (v.is_float()) return Value::number(std::fabs(v.as_double()));
            if (v.is_number()) return Value::integer(std::llabs(v.as_int()));
            throw TemplateError(fmt::format("bad operand type for abs(): '{}'", type_name(v)));
        }
        if (name == "round") {
            if (!v.is_number()) throw TemplateError("round() needs a number");
            int64_t prec = a.get_or(0, "precision", Value::integer(0)).as_int();
            std::string method = to_str(a.get_or(1, "method", Value::string("common")));
            double scale = std::pow(10.0, static_cast<double>(prec));
            double x = v.as_double() * scale;
            if (method == "ceil") {
                x = std::ceil(x);
            } else if (method == "floor") {
                x = std::floor(x);
            } else {
                x = std::nearbyint(x);  // Python's round(): half to even
            }
            return Value::number(x / scale);
        }
        if (name == "indent") {
            Value w = a.get_or(0, "width", Value::integer(4));
            std::string ind = w.is_string() ? w.str() : std::string(static_cast<size_t>(w.as_int()), ' ');
            bool first = truthy(a.get_or(1, "first", Value::boolean(false)));
            bool blank = truthy(a.get_or(2, "blank", Value::boolean(false)));
            std::string s = to_str(v) + "\n";
            std::vector<std::string> lines;
            size_t pos = 0;
            while (pos < s.size()) {
                size_t nl = s.find('\n', pos);
                lines.push_back(s.substr(pos, nl - pos));
                pos = nl + 1;
            }
            std::string out = lines.empty() ? "" : lines[0];
            for (size_t i = 1; i < lines.size(); ++i) {
                out += "\n";
                if (blank || !lines[i].empty()) out += ind;
                out += lines[i];
            }
            if (first) out = ind + out;
            return Value::string(std::move(out));
        }
        if (name == "sort") {
            bool reverse = truthy(a.get_or(0, "reverse", Value::boolean(false)));
            bool cs = truthy(a.get_or(1, "case_sensitive", Value::boolean(false)));
            Value attr = a.get_or(2, "attribute", Value::none());
            List xs = iterate(v);
            std::stable_sort(xs.begin(), xs.end(), [&](const Value& x, const Value& y) {
                Value kx = attr.is_string() ? attr_path(x, attr.str()) : x;
                Value ky = attr.is_string() ? attr_path(y, attr.str()) : y;
                int c = compare(kx, ky, cs);
                return reverse ? c > 0 : c < 0;
            });
            return Value::list(std::move(xs));
        }
        if (name == "dictsort") {
            if (!v.is_mapping()) throw TemplateError("dictsort needs a mapping");
            bool cs = truthy(a.get_or(0, "case_sensitive", Value::boolean(false)));
            bool by_value = to_str(a.get_or(1, "by", Value::string("key"))) == "value";
            bool reverse = truthy(a.get_or(2, "reverse", Value::boolean(false)));
            List xs = items_of(v).items();
            std::stable_sort(xs.begin(), xs.end(), [&](const Value& x, const Value& y) {
                int c = compare(x.items()[by_value ? 1 : 0], y.items()[by_value ? 1 : 0], cs);
                return reverse ? c > 0 : c < 0;
            });
            return Value::list(std::move(xs));
        }
        if (name == "unique") {
            bool cs = truthy(a.get_or(0, "case_sensitive", Value::boolean(false)));
            Value attr = a.get_or(1, "attribute", Value::none());
            List out, keys;
            for (const auto& x : iterate(v)) {
                Value k = attr.is_string() ? attr_path(x, attr.str()) : x;
                if (!cs && k.is_string()) k = Value::string(lower(k.str()));
                bool seen = false;
                for (const auto& y : keys) seen = seen || equals(y, k);
                if (!seen) {
                    keys.push_back(k);
                    out.push_back(x);
                }
            }
            return Value::list(std::move(out));
        }
        if (name == "sum") {
            Value attr = a.get_or(0, "attribute", Value::none());
            Value total = a.get_or(1, "start", Value::integer(0));
            for (const auto& x : iterate(v))
                total = binop("+", total, attr.is_string() ? attr_path(x, attr.str()) : x);
            return total;
        }
        if (name == "min" || name == "max") {
            bool cs = truthy(a.get_or(0, "case_sensitive", Value::boolean(false)));
            Value attr = a.get_or(1, "attribute", Value::none());
            List xs = iterate(v);
            if (xs.empty()) return Value();
            Value best = xs[0];
            for (size_t i = 1; i < xs.size(); ++i) {
                Value kb = attr.is_string() ? attr_path(best, attr.str()) : best;
                Value kx = attr.is_string() ? attr_path(xs[i], attr.str()) : xs[i];
                int c = compare(kx, kb, cs);
                if (name == "min" ? c < 0 : c > 0) best = xs[i];
            }
            return best;
        }
        if (name == "wordcount") {
            return Value::integer(static_cast<int64_t>(py_split(to_str(v), Value(), -1).size()));
        }
        throw TemplateError(fmt::format("no filter named '{}'", name));
    }

    // ---- tests ----

    bool apply_test(const std::string& name, const Value& v, const CallArgs& a) {
        auto arg = [&]() -> Value {
            auto x = a.get(0, "other");
            if (!x) throw TemplateError(fmt::format("test '{}' needs an argument", name));
            return *x;
        };
        if (name == "defined") return !v.is_undefined();
        if (name == "undefined") return v.is_undefined();
        if (name == "none") return v.is_none();
        if (name == "string") return v.is_string();
        if (name == "mapping") return v.is_mapping();
        if (name == "number") return v.is_number();
        if (name == "integer") return v.is_int();
        if (name == "float") return v.is_float();
        if (name == "boolean") return v.is_bool();
        if (name == "true") return v.is_bool() && v.as_bool();
        if (name == "false") return v.is_bool() && !v.as_bool();
        if (name == "callable") return v.is_function();
        if (name == "iterable")
            return v.is_undefined() || v.is_string() || v.is_list() || v.is_mapping();
        if (name == "sequence")
            return v.is_undefined() || v.is_string() || v.is_list() || v.is_mapping();
        if (name == "escaped") return false;
        if (name == "lower") return v.is_string() && lower(v.str()) == v.str();
        if (name == "upper") return v.is_string() && upper(v.str()) == v.str();
        if (name == "odd" || name == "even") {
            if (!v.is_int() && !v.is_bool()) throw TemplateError("odd/even test needs an integer");
            return (py_mod(v.as_int(), 2) == 1) == (name == "odd");
        }
        if (name == "divisibleby") {
            Value d = arg();
            if (!d.is_number() || d.as_double() == 0) throw TemplateError("divisibleby needs a non-zero number");
            if (!v.is_number()) throw TemplateError("divisibleby needs a number");
            return std::fmod(v.as_double(), d.as_double()) == 0;
        }
        if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg());
        if (name == "ne" || name == "!=") return !equals(v, arg());
        if (name == "lt" || name == "lessthan" || name == "<") return compare(v, arg()) < 0;
        if (name == "le" || name == "<=") return compare(v, arg()) <= 0;
        if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, arg()) > 0;
        if (name == "ge" || name == ">=") return compare(v, arg()) >= 0;
        if (name == "in") {
            auto x = a.get(0, "seq");
            if (!x) throw TemplateError("test 'in' needs an argument");
            return contains(*x, v);
        }
        if (name == "sameas") {
            Value o = arg();
            if (v.kind() != o.kind()) return false;
            if (v.is_list()) return &v.items() == &o.items();
            if (v.is_dict()) return &v.map() == &o.map();
            return equals(v, o);
        }
        if (name == "filter") return v.is_string() && filter_names().count(v.str()) > 0;
        if (name == "test") return v.is_string() && test_names().count(v.str()) > 0;
        throw TemplateError(fmt::format("no test named '{}'", name));
    }
};

}  // namespace

Template::Template(std::string_view source) : prog_(std::make_unique<Program>()) {
    Lexer lexer(source);
    Parser parser(lexer.run());
    prog_->body = parser.parse_template();
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const std::vector<std::pair<std::string, Value>>& variables,
                             const RenderOptions& options) const {
    Renderer r(variables, options);
    std::string out;
    r.run(prog_->body, out);
    return out;
}

}  // namespace farsight::jinja
