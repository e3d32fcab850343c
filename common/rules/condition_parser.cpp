#include "common/rules/condition_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace sidetrace::rules {
namespace {

constexpr std::array<std::string_view, 5> kTransformers = {"tolower", "toupper", "b64", "basename", "len"};
constexpr std::array<std::string_view, 7> kSymbolOps = {"==", "!=", "<=", ">=", "=", "<", ">"};
constexpr std::array<std::string_view, 11> kWordOps = {"contains", "icontains", "bcontains", "startswith",
                                                        "bstartswith", "endswith", "glob", "iglob",
                                                        "regex", "exists", "in"};
constexpr std::array<std::string_view, 2> kMoreListOps = {"intersects", "pmatch"};

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsTransformer(std::string_view s) {
  return std::find(kTransformers.begin(), kTransformers.end(), s) != kTransformers.end();
}

class Parser {
 public:
  explicit Parser(std::string_view text) : t_(text) {}

  std::shared_ptr<const AstNode> Parse(ParseError* error) {
    auto node = ParseOr(0);
    if (node && (SkipSpace(), i_ < t_.size())) {
      node = Fail(i_, fmt::format("unexpected '{}' after a complete expression", Snip(i_)));
    }
    if (!node) *error = error_;
    return node;
  }

 private:
  std::nullptr_t Fail(size_t pos, std::string message) {
    if (error_.message.empty()) error_ = ParseError{pos, std::move(message)};
    return nullptr;
  }
  // The token at pos, for messages.
  std::string Snip(size_t pos) const {
    size_t end = pos;
    if (end < t_.size() && (IsIdentChar(t_[end]) || t_[end] == '/')) {
      while (end < t_.size() && !IsSpace(t_[end]) && t_[end] != '(' && t_[end] != ')' && t_[end] != ',') ++end;
    } else {
      end = std::min(t_.size(), pos + 1);
    }
    return std::string(t_.substr(pos, end - pos));
  }
  void SkipSpace() {
    while (i_ < t_.size() && IsSpace(t_[i_])) ++i_;
  }
  // Consumes keyword `kw` when it is a whole word at the cursor.
  bool Keyword(std::string_view kw) {
    SkipSpace();
    if (t_.substr(i_, kw.size()) != kw) return false;
    size_t end = i_ + kw.size();
    if (end < t_.size() && IsIdentChar(t_[end])) return false;
    i_ = end;
    return true;
  }
  bool Peek(char c) {
    SkipSpace();
    return i_ < t_.size() && t_[i_] == c;
  }

  std::shared_ptr<const AstNode> ParseOr(int depth) {
    if (depth > kMaxConditionDepth) return Fail(i_, fmt::format("condition nested too deeply (limit {})", kMaxConditionDepth));
    size_t start = (SkipSpace(), i_);
    auto first = ParseAnd(depth);
    if (!first) return nullptr;
    if (!Keyword("or")) return first;
    auto node = std::make_shared<AstNode>();
    node->kind = AstNode::Kind::kOr;
    node->pos = start;
    node->children.push_back(first);
    do {
      auto next = ParseAnd(depth);
      if (!next) return nullptr;
      node->children.push_back(next);
    } while (Keyword("or"));
    return node;
  }

  std::shared_ptr<const AstNode> ParseAnd(int depth) {
    size_t start = (SkipSpace(), i_);
    auto first = ParseNot(depth);
    if (!first) return nullptr;
    if (!Keyword("and")) return first;
    auto node = std::make_shared<AstNode>();
    node->kind = AstNode::Kind::kAnd;
    node->pos = start;
    node->children.push_back(first);
    do {
      auto next = ParseNot(depth);
      if (!next) return nullptr;
      node->children.push_back(next);
    } while (Keyword("and"));
    return node;
  }

  std::shared_ptr<const AstNode> ParseNot(int depth) {
    if (depth > kMaxConditionDepth) return Fail(i_, fmt::format("condition nested too deeply (limit {})", kMaxConditionDepth));
    size_t start = (SkipSpace(), i_);
    if (Keyword("not")) {
      auto child = ParseNot(depth + 1);
      if (!child) return nullptr;
      auto node = std::make_shared<AstNode>();
      node->kind = AstNode::Kind::kNot;
      node->pos = start;
      node->children.push_back(child);
      return node;
    }
    return ParseAtom(depth);
  }

  std::shared_ptr<const AstNode> ParseAtom(int depth) {
    SkipSpace();
    size_t start = i_;
    if (i_ >= t_.size()) return Fail(i_, "unexpected end of condition, expected a field, a macro or '('");
    if (t_[i_] == '(') {
      ++i_;
      auto inner = ParseOr(depth + 1);
      if (!inner) return nullptr;
      if (!Peek(')')) {
        if (i_ >= t_.size()) return Fail(start, "unbalanced parentheses: '(' is never closed");
        return Fail(i_, fmt::format("expected ')' or a boolean operator, found '{}'", Snip(i_)));
      }
      ++i_;
      return inner;
    }
    if (t_[i_] == ')') return Fail(i_, "unbalanced parentheses: unexpected ')'");
    if (!IsIdentStart(t_[i_])) {
      return Fail(i_, fmt::format("unexpected '{}', expected a field, a macro or '('", Snip(i_)));
    }
    AstField field;
    bool plain = false;
    if (!ParseField(depth, &field, &plain)) return nullptr;
    SkipSpace();
    std::string op = ParseOperator();
    if (op.empty()) {
      if (plain) {
        auto node = std::make_shared<AstNode>();
        node->kind = AstNode::Kind::kMacro;
        node->pos = start;
        node->macro = field.name;
        return node;
      }
      if (i_ >= t_.size()) return Fail(i_, fmt::format("expected an operator after '{}'", field.ToString()));
      return Fail(i_, fmt::format("unknown operator '{}' after '{}'", Snip(i_), field.ToString()));
    }
    auto node = std::make_shared<AstNode>();
    node->kind = AstNode::Kind::kCheck;
    node->pos = start;
    node->field = std::move(field);
    node->op = op;
    if (IsUnaryOperator(op)) return node;
    SkipSpace();
    if (IsListOperator(op)) {
      node->list_value = true;
      if (Peek('(')) {
        ++i_;
        SkipSpace();
        if (Peek(')')) {
          ++i_;
          return node;
        }
        while (true) {
          AstValue v;
          if (!ParseValue(depth, &v, true)) return nullptr;
          node->values.push_back(std::move(v));
          if (Peek(',')) {
            ++i_;
            continue;
          }
          if (Peek(')')) {
            ++i_;
            break;
          }
          if (i_ >= t_.size()) return Fail(i_, fmt::format("unbalanced parentheses: list after '{}' is never closed", op));
          return Fail(i_, fmt::format("expected ',' or ')' in list, found '{}'", Snip(i_)));
        }
        return node;
      }
      if (i_ < t_.size() && IsIdentStart(t_[i_])) {
        size_t s = i_;
        while (i_ < t_.size() && IsIdentChar(t_[i_])) ++i_;
        node->list_name = std::string(t_.substr(s, i_ - s));
        AstValue v;
        v.text = node->list_name;
        v.pos = s;
        node->values.push_back(std::move(v));
        return node;
      }
      return Fail(i_, fmt::format("expected a list after operator '{}'", op));
    }
    AstValue v;
    if (!ParseValue(depth, &v, false)) return nullptr;
    node->values.push_back(std::move(v));
    return node;
  }

  // Reads `name`, `name[arg]` or `transformer(field)`. *plain is true for a
  // bare identifier without dots, brackets or transformers (a macro name).
  bool ParseField(int depth, AstField* field, bool* plain) {
    if (depth > kMaxConditionDepth) {
      Fail(i_, fmt::format("condition nested too deeply (limit {})", kMaxConditionDepth));
      return false;
    }
    size_t start = i_;
    while (i_ < t_.size() && IsIdentChar(t_[i_])) ++i_;
    std::string name(t_.substr(start, i_ - start));
    if (IsTransformer(name) && i_ < t_.size() && t_[i_] == '(') {
      ++i_;
      SkipSpace();
      if (i_ >= t_.size() || !IsIdentStart(t_[i_])) {
        Fail(i_, fmt::format("expected a field inside {}()", name));
        return false;
      }
      bool inner_plain = false;
      if (!ParseField(depth + 1, field, &inner_plain)) return false;
      if (!Peek(')')) {
        Fail(i_, fmt::format("expected ')' to close {}(", name));
        return false;
      }
      ++i_;
      field->transformers.insert(field->transformers.begin(), name);
      field->pos = start;
      *plain = false;
      return true;
    }
    field->name = std::move(name);
    field->pos = start;
    *plain = field->name.find('.') == std::string::npos;
    if (i_ < t_.size() && t_[i_] == '[') {
      size_t close = t_.find(']', i_);
      if (close == std::string_view::npos) {
        Fail(i_, fmt::format("expected ']' after the argument of '{}'", field->name));
        return false;
      }
      field->arg = std::string(t_.substr(i_ + 1, close - i_ - 1));
      field->has_arg = true;
      i_ = close + 1;
      *plain = false;
    }
    return true;
  }

  std::string ParseOperator() {
    for (auto op : kSymbolOps) {
      if (t_.substr(i_, op.size()) == op) {
        i_ += op.size();
        return std::string(op);
      }
    }
    for (auto op : kWordOps) {
      if (Keyword(op)) return std::string(op);
    }
    for (auto op : kMoreListOps) {
      if (Keyword(op)) return std::string(op);
    }
    return "";
  }

  bool ParseValue(int depth, AstValue* v, bool in_list) {
    SkipSpace();
    v->pos = i_;
    if (i_ >= t_.size()) {
      Fail(i_, "expected a value, found the end of the condition");
      return false;
    }
    char c = t_[i_];
    if (c == '"' || c == '\'') {
      ++i_;
      std::string out;
      while (i_ < t_.size() && t_[i_] != c) {
        if (t_[i_] == '\\' && i_ + 1 < t_.size()) {
          char n = t_[i_ + 1];
          if (n == c || n == '\\') {
            out.push_back(n);
            i_ += 2;
            continue;
          }
        }
        out.push_back(t_[i_++]);
      }
      if (i_ >= t_.size()) {
        Fail(v->pos, "unterminated quoted string");
        return false;
      }
      ++i_;
      v->text = std::move(out);
      v->quoted = true;
      return true;
    }
    if (t_.substr(i_, 4) == "val(") {
      i_ += 4;
      SkipSpace();
      bool plain = false;
      if (i_ >= t_.size() || !IsIdentStart(t_[i_]) || !ParseField(depth + 1, &v->field, &plain)) {
        Fail(i_, "expected a field inside val()");
        return false;
      }
      if (!Peek(')')) {
        Fail(i_, "expected ')' to close val(");
        return false;
      }
      ++i_;
      v->is_field = true;
      return true;
    }
    if (c == '(' || c == ')' || c == ',') {
      Fail(i_, fmt::format("expected a value, found '{}'", c));
      return false;
    }
    size_t start = i_;
    while (i_ < t_.size() && !IsSpace(t_[i_]) && t_[i_] != ',' && t_[i_] != ')' &&
           (in_list || t_[i_] != '(')) {
      ++i_;
    }
    v->text = std::string(t_.substr(start, i_ - start));
    return true;
  }

  std::string_view t_;
  size_t i_ = 0;
  ParseError error_;
};

}  // namespace

std::string AstField::ToString() const {
  std::string s = name;
  if (has_arg) s += "[" + arg + "]";
  for (auto it = transformers.rbegin(); it != transformers.rend(); ++it) s = *it + "(" + s + ")";
  return s;
}

bool IsUnaryOperator(std::string_view op) { return op == "exists"; }
bool IsListOperator(std::string_view op) { return op == "in" || op == "intersects" || op == "pmatch"; }

std::shared_ptr<const AstNode> ParseCondition(std::string_view text, ParseError* error) {
  return Parser(text).Parse(error);
}

}  // namespace sidetrace::rules
