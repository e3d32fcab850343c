// Falco condition syntax parsed into an AST.
//
// Grammar (Falco's, from libsinsp filter/parser.h), lowest precedence first:
//   Expr     := AndExpr ('or' AndExpr)*
//   AndExpr  := NotExpr ('and' NotExpr)*
//   NotExpr  := 'not' NotExpr | Atom
//   Atom     := '(' Expr ')' | Check | MacroName
//   Check    := Field UnaryOp | Field BinaryOp Value | Field ListOp List
//   Field    := Transformer '(' Field ')' | name ('[' arg ']')?
//   Value    := "quoted" | 'quoted' | bare-word | val '(' Field ')'
//   List     := '(' [Value (',' Value)*] ')' | list-name
// Nesting (parentheses, 'not', transformers) is limited to kMaxConditionDepth
// so that hostile input cannot exhaust the stack.
//
// Every node carries the byte offset in the condition text where it starts;
// errors carry the offset of the offending token. Thread-safety: pure
// functions, no shared state.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sidetrace::rules {

inline constexpr int kMaxConditionDepth = 100;

// `tolower(basename(proc.name))` is {transformers: [tolower, basename], name:
// proc.name}; `proc.aname[2]` has arg "2".
struct AstField {
  std::vector<std::string> transformers;  // outermost first
  std::string name;
  std::string arg;
  bool has_arg = false;
  size_t pos = 0;
  // "tolower(proc.aname[2])" as written, for messages and output keys.
  std::string ToString() const;
};

struct AstValue {
  std::string text;
  bool quoted = false;
  bool is_field = false;  // val(field)
  AstField field;
  size_t pos = 0;
};

struct AstNode {
  enum class Kind { kAnd, kOr, kNot, kCheck, kMacro, kBool };
  Kind kind = Kind::kBool;
  size_t pos = 0;
  std::vector<std::shared_ptr<const AstNode>> children;  // and/or/not
  // kCheck
  AstField field;
  std::string op;
  std::vector<AstValue> values;
  bool list_value = false;     // right side was '(...)' or a list name
  std::string list_name;       // right side was a bare list name
  // kMacro
  std::string macro;
  // kBool
  bool bool_value = true;
};

struct ParseError {
  size_t pos = 0;
  std::string message;
};

// Parses `text`. On failure returns null and fills *error.
std::shared_ptr<const AstNode> ParseCondition(std::string_view text, ParseError* error);

// True for the operators the parser accepts (for diagnostics).
bool IsUnaryOperator(std::string_view op);
bool IsListOperator(std::string_view op);

}  // namespace sidetrace::rules
