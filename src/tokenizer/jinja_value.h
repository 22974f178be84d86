#pragma once
// Value model of the Jinja2 interpreter used for chat templates (see chat_template.h).
// Values follow Python semantics as seen through Jinja: undefined, None, bool, int, float, str,
// list, dict (insertion-ordered, string keys), namespace and callables. Lists and dicts have
// reference semantics like Python objects.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace farsight::jinja {

// A template error (syntax or runtime). `line` is the 1-based template line, 0 while unknown;
// the interpreter fills it in from the innermost node being evaluated.
class TemplateError : public std::runtime_error {
public:
    TemplateError(const std::string& msg, int line = 0, bool raised = false)
        : std::runtime_error(msg), line(line), raised(raised) {}
    int line;
    bool raised;  // from the template's raise_exception()
};

class Value;
struct Dict;
struct CallArgs;
using List = std::vector<Value>;
using Function = std::function<Value(CallArgs&)>;

class Value {
public:
    enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Function };

    Value() = default;  // undefined
    static Value none() { return Value(Storage(std::in_place_index<1>, nullptr)); }
    static Value boolean(bool b) { return Value(Storage(std::in_place_index<2>, b)); }
    static Value integer(int64_t i) { return Value(Storage(std::in_place_index<3>, i)); }
    static Value number(double d) { return Value(Storage(std::in_place_index<4>, d)); }
    static Value string(std::string s) {
        return Value(Storage(std::in_place_index<5>, std::move(s)));
    }
    static Value list(List l = {}) {
        return Value(Storage(std::in_place_index<6>, std::make_shared<List>(std::move(l))));
    }
    static Value dict(std::shared_ptr<Dict> d);
    static Value dict();  // a new empty dict
    static Value namespace_();
    static Value function(Function f) {
        return Value(Storage(std::in_place_index<8>, std::make_shared<Function>(std::move(f))));
    }

    Kind kind() const { return static_cast<Kind>(v_.index()); }
    bool is_undefined() const { return kind() == Kind::Undefined; }
    bool is_none() const { return kind() == Kind::None; }
    bool is_bool() const { return kind() == Kind::Bool; }
    bool is_int() const { return kind() == Kind::Int; }
    bool is_float() const { return kind() == Kind::Float; }
    bool is_number() const { return is_int() || is_float() || is_bool(); }
    bool is_string() const { return kind() == Kind::String; }
    bool is_list() const { return kind() == Kind::List; }
    bool is_dict() const { return kind() == Kind::Dict; }
    bool is_function() const { return kind() == Kind::Function; }
    bool is_namespace() const;
    bool is_mapping() const { return is_dict() && !is_namespace(); }

    bool as_bool() const { return std::get<2>(v_); }
    int64_t as_int() const;  // int or bool
    double as_double() const;  // int, float or bool
    const std::string& str() const { return std::get<5>(v_); }
    List& items() const { return *std::get<6>(v_); }
    Dict& map() const { return *std::get<7>(v_); }
    const Function& fn() const { return *std::get<8>(v_); }

private:
    using Storage = std::variant<std::monostate, std::nullptr_t, bool, int64_t, double, std::string,
                                 std::shared_ptr<List>, std::shared_ptr<Dict>,
                                 std::shared_ptr<Function>>;
    explicit Value(Storage v) : v_(std::move(v)) {}
    Storage v_;
};

struct Dict {
    std::vector<std::pair<std::string, Value>> entries;
    bool is_namespace = false;

    const Value* find(std::string_view key) const;
    Value* find(std::string_view key);
    void set(std::string key, Value v);
};

struct CallArgs {
    std::vector<Value> pos;
    std::vector<std::pair<std::string, Value>> kw;

    // The argument at position `i` or keyword `name`, or nullopt.
    std::optional<Value> get(size_t i, std::string_view name) const;
    Value get_or(size_t i, std::string_view name, Value def) const {
        auto v = get(i, name);
        return v ? *v : def;
    }
};

// Python semantics.
bool truthy(const Value& v);
bool equals(const Value& a, const Value& b);
// Ordering for sort/min/max; throws TemplateError for incomparable types.
int compare(const Value& a, const Value& b, bool case_sensitive = true);
std::string to_str(const Value& v);  // str(v); undefined -> ""
std::string repr(const Value& v);    // repr(v)
std::string type_name(const Value& v);
std::string py_float_repr(double d);

// json.dumps(v, ensure_ascii=False, indent=indent, separators=..., sort_keys=sort_keys).
// `indent` nullopt means no newlines; default separators follow Python (", " / ": " without
// indent, "," / ": " with indent).
std::string to_json(const Value& v, std::optional<std::string> indent = std::nullopt,
                    std::optional<std::pair<std::string, std::string>> separators = std::nullopt,
                    bool sort_keys = false);

Value from_json(const nlohmann::ordered_json& j);

// UTF-8 helpers: strings are stored as UTF-8, indexed by code point like Python.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
bool is_py_space(char32_t c);

}  // namespace farsight::jinja
