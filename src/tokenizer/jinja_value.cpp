#include "tokenizer/jinja_value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace farsight::jinja {

Value Value::dict(std::shared_ptr<Dict> d) {
    return Value(Storage(std::in_place_index<7>, std::move(d)));
}
Value Value::dict() { return dict(std::make_shared<Dict>()); }
Value Value::namespace_() {
    auto d = std::make_shared<Dict>();
    d->is_namespace = true;
    return dict(std::move(d));
}

bool Value::is_namespace() const { return is_dict() && map().is_namespace; }

int64_t Value::as_int() const {
    if (is_bool()) return as_bool() ? 1 : 0;
    return std::get<3>(v_);
}

double Value::as_double() const {
    if (is_float()) return std::get<4>(v_);
    return static_cast<double>(as_int());
}

const Value* Dict::find(std::string_view key) const {
    for (const auto& [k, v] : entries)
        if (k == key) return &v;
    return nullptr;
}

Value* Dict::find(std::string_view key) {
    for (auto& [k, v] : entries)
        if (k == key) return &v;
    return nullptr;
}

void Dict::set(std::string key, Value v) {
    if (Value* slot = find(key)) {
        *slot = std::move(v);
    } else {
        entries.emplace_back(std::move(key), std::move(v));
    }
}

std::optional<Value> CallArgs::get(size_t i, std::string_view name) const {
    if (i < pos.size()) return pos[i];
    for (const auto& [k, v] : kw)
        if (k == name) return v;
    return std::nullopt;
}

// ---- UTF-8 ----

std::u32string utf8_decode(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        char32_t cp;
        size_t n;
        if (c < 0x80) {
            cp = c;
            n = 1;
        } else if ((c >> 5) == 0x6) {
            cp = c & 0x1f;
            n = 2;
        } else if ((c >> 4) == 0xe) {
            cp = c & 0x0f;
            n = 3;
        } else if ((c >> 3) == 0x1e) {
            cp = c & 0x07;
            n = 4;
        } else {
            out.push_back(0xfffd);  // invalid lead byte
            ++i;
            continue;
        }
        if (i + n > s.size()) {
            out.push_back(0xfffd);
            break;
        }
        for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
        out.push_back(cp);
        i += n;
    }
    return out;
}

std::string utf8_encode(std::u32string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char32_t c : s) {
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else if (c < 0x800) {
            out += static_cast<char>(0xc0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out += static_cast<char>(0xe0 | (c >> 12));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (c & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (c >> 18));
            out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (c & 0x3f));
        }
    }
    return out;
}

bool is_py_space(char32_t c) {
    // str.isspace(): ASCII whitespace, the information separators and Unicode spaces.
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// ---- Python semantics ----

bool truthy(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::Undefined:
        case Value::Kind::None: return false;
        case Value::Kind::Bool: return v.as_bool();
        case Value::Kind::Int: return v.as_int() != 0;
        case Value::Kind::Float: return v.as_double() != 0.0;
        case Value::Kind::String: return !v.str().empty();
        case Value::Kind::List: return !v.items().empty();
        case Value::Kind::Dict: return v.is_namespace() || !v.map().entries.empty();
        case Value::Kind::Function: return true;
    }
    return false;
}

bool equals(const Value& a, const Value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
        return a.as_int() == b.as_int();
    }
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case Value::Kind::Undefined:
        case Value::Kind::None: return true;
        case Value::Kind::String: return a.str() == b.str();
        case Value::Kind::List: {
            const auto &x = a.items(), &y = b.items();
            if (x.size() != y.size()) return false;
            for (size_t i = 0; i < x.size(); ++i)
                if (!equals(x[i], y[i])) return false;
            return true;
        }
        case Value::Kind::Dict: {
            if (a.is_namespace() || b.is_namespace()) return &a.map() == &b.map();
            const auto &x = a.map(), &y = b.map();
            if (x.entries.size() != y.entries.size()) return false;
            for (const auto& [k, v] : x.entries) {
                const Value* o = y.find(k);
                if (!o || !equals(v, *o)) return false;
            }
            return true;
        }
        case Value::Kind::Function: return &a.fn() == &b.fn();
        default: return false;
    }
}

static std::string lower_ascii(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

int compare(const Value& a, const Value& b, bool case_sensitive) {
    if (a.is_number() && b.is_number()) {
        if (a.is_float() || b.is_float()) {
            double x = a.as_double(), y = b.as_double();
            return x < y ? -1 : (x > y ? 1 : 0);
        }
        int64_t x = a.as_int(), y = b.as_int();
        return x < y ? -1 : (x > y ? 1 : 0);
    }
    if (a.is_string() && b.is_string()) {
        // UTF-8 byte order equals code point order.
        int c = case_sensitive ? a.str().compare(b.str())
                               : lower_ascii(a.str()).compare(lower_ascii(b.str()));
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    if (a.is_list() && b.is_list()) {
        const auto &x = a.items(), &y = b.items();
        for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
            int c = compare(x[i], y[i], case_sensitive);
            if (c != 0) return c;
        }
        return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
    }
    throw TemplateError(fmt::format("'<' not supported between instances of '{}' and '{}'",
                                    type_name(a), type_name(b)));
}

std::string type_name(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::Undefined: return "Undefined";
        case Value::Kind::None: return "NoneType";
        case Value::Kind::Bool: return "bool";
        case Value::Kind::Int: return "int";
        case Value::Kind::Float: return "float";
        case Value::Kind::String: return "str";
        case Value::Kind::List: return "list";
        case Value::Kind::Dict: return v.is_namespace() ? "Namespace" : "dict";
        case Value::Kind::Function: return "function";
    }
    return "?";
}

std::string py_float_repr(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
    // Shortest round-trip digits, then Python's repr layout: fixed for 1e-4 <= |d| < 1e16.
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
    std::string sci(buf, res.ptr);
    bool neg = sci[0] == '-';
    if (neg) sci.erase(0, 1);
    size_t e = sci.find('e');
    std::string mant = sci.substr(0, e);
    int exp = std::stoi(sci.substr(e + 1));
    std::string digits;
    for (char c : mant)
        if (c != '.') digits += c;
    std::string out;
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
        } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
            out = digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
        } else {
            out = digits.substr(0, static_cast<size_t>(exp) + 1) + "." +
                  digits.substr(static_cast<size_t>(exp) + 1);
        }
    }
    if (out.empty()) {
        out = digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
    bool has_sq = s.find('\'') != std::string::npos;
    bool has_dq = s.find('"') != std::string::npos;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    std::string out(1, q);
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == q || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (u < 0x20 || u == 0x7f) {
            out += fmt::format("\\x{:02x}", u);
        } else {
            out += c;
        }
    }
    out += q;
    return out;
}

std::string repr(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::String: return repr_string(v.str());
        case Value::Kind::List: {
            std::string out = "[";
            bool first = true;
            for (const auto& x : v.items()) {
                if (!first) out += ", ";
                first = false;
                out += repr(x);
            }
            return out + "]";
        }
        case Value::Kind::Dict: {
            if (v.is_namespace()) return "<Namespace>";
            std::string out = "{";
            bool first = true;
            for (const auto& [k, x] : v.map().entries) {
                if (!first) out += ", ";
                first = false;
                out += repr_string(k) + ": " + repr(x);
            }
            return out + "}";
        }
        default: return to_str(v);
    }
}

std::string to_str(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::Undefined: return "";
        case Value::Kind::None: return "None";
        case Value::Kind::Bool: return v.as_bool() ? "True" : "False";
        case Value::Kind::Int: return std::to_string(v.as_int());
        case Value::Kind::Float: return py_float_repr(v.as_double());
        case Value::Kind::String: return v.str();
        case Value::Kind::Function: return "<function>";
        default: return repr(v);
    }
}

// ---- JSON ----

static void json_string(std::string& out, const std::string& s) {
    out += '"';
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (u < 0x20) {
                    out += fmt::format("\\u{:04x}", u);
                } else {
                    out += c;
                }
        }
    }
    out += '"';
}

namespace {
struct JsonWriter {
    std::optional<std::string> indent;
    std::string item_sep, key_sep;
    bool sort_keys;
    std::string out;

    void newline(int level) {
        out += '\n';
        for (int i = 0; i < level; ++i) out += *indent;
    }

    void write(const Value& v, int level) {
        switch (v.kind()) {
            case Value::Kind::None: out += "null"; return;
            case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
            case Value::Kind::Int: out += std::to_string(v.as_int()); return;
            case Value::Kind::Float: {
                double d = v.as_double();
                if (std::isnan(d)) {
                    out += "NaN";
                } else if (std::isinf(d)) {
                    out += d < 0 ? "-Infinity" : "Infinity";
                } else {
                    out += py_float_repr(d);
                }
                return;
            }
            case Value::Kind::String: json_string(out, v.str()); return;
            case Value::Kind::List: {
                const auto& xs = v.items();
                if (xs.empty()) {
                    out += "[]";
                    return;
                }
                out += '[';
                for (size_t i = 0; i < xs.size(); ++i) {
                    if (i) out += item_sep;
                    if (indent) newline(level + 1);
                    write(xs[i], level + 1);
                }
                if (indent) newline(level);
                out += ']';
                return;
            }
            case Value::Kind::Dict: {
                if (v.is_namespace())
                    throw TemplateError("Object of type Namespace is not JSON serializable");
                std::vector<const std::pair<std::string, Value>*> es;
                for (const auto& e : v.map().entries) es.push_back(&e);
                if (sort_keys)
                    std::stable_sort(es.begin(), es.end(),
                                     [](auto* a, auto* b) { return a->first < b->first; });
                if (es.empty()) {
                    out += "{}";
                    return;
                }
                out += '{';
                for (size_t i = 0; i < es.size(); ++i) {
                    if (i) out += item_sep;
                    if (indent) newline(level + 1);
                    json_string(out, es[i]->first);
                    out += key_sep;
                    write(es[i]->second, level + 1);
                }
                if (indent) newline(level);
                out += '}';
                return;
            }
            default:
                throw TemplateError(
                    fmt::format("Object of type {} is not JSON serializable", type_name(v)));
        }
    }
};
}  // namespace

std::string to_json(const Value& v, std::optional<std::string> indent,
                    std::optional<std::pair<std::string, std::string>> separators,
                    bool sort_keys) {
    JsonWriter w;
    w.indent = std::move(indent);
    if (separators) {
        w.item_sep = separators->first;
        w.key_sep = separators->second;
    } else {
        w.item_sep = w.indent ? "," : ", ";
        w.key_sep = ": ";
    }
    w.sort_keys = sort_keys;
    w.write(v, 0);
    return std::move(w.out);
}

Value from_json(const nlohmann::ordered_json& j) {
    switch (j.type()) {
        case nlohmann::ordered_json::value_t::null: return Value::none();
        case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
        case nlohmann::ordered_json::value_t::number_integer:
            return Value::integer(j.get<int64_t>());
        case nlohmann::ordered_json::value_t::number_unsigned:
            return Value::integer(static_cast<int64_t>(j.get<uint64_t>()));
        case nlohmann::ordered_json::value_t::number_float: return Value::number(j.get<double>());
        case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
        case nlohmann::ordered_json::value_t::array: {
            List l;
            l.reserve(j.size());
            for (const auto& x : j) l.push_back(from_json(x));
            return Value::list(std::move(l));
        }
        case nlohmann::ordered_json::value_t::object: {
            Value d = Value::dict();
            for (const auto& [k, x] : j.items()) d.map().entries.emplace_back(k, from_json(x));
            return d;
        }
        default: return Value();  // discarded / binary: treat as undefined
    }
}

}  // namespace farsight::jinja
