// Compiled conditions: an evaluation tree of and/or/not nodes over field
// checks whose values were parsed, typed and indexed at compile time.
//
// Evaluation reads fields straight from the Event; text that has to be built
// (proc.cmdline, transformers) goes into the EvalContext's scratch strings,
// which keep their capacity, so evaluation allocates nothing in steady state.
// Thread-safety: filters are immutable; each thread uses its own EvalContext.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/rules/fields.h"

namespace sidetrace::rules {

// Three-valued truth for Engine::MayMatch (Kleene's logic): a check on a
// field known only after the syscall ran is kUnknown.
enum class Tri : uint8_t { kFalse = 0, kTrue = 1, kUnknown = 2 };

struct EvalContext {
  ExtractContext x;
  std::string scratch[6];  // [0..2] left side, [3..5] right side (val())
  // Macro results of the current event: valid where memo_epoch == epoch.
  // Rules share macros (open_read, spawned_process...), so each is
  // evaluated once per event.
  uint64_t epoch = 0;
  std::vector<uint64_t> memo_epoch;
  std::vector<uint8_t> memo_value;
  // The same for MayMatch, whose macro results are three-valued.
  std::vector<uint64_t> may_epoch;
  std::vector<Tri> may_value;
  // Set while the engine asks, at load time, whether a rule can match an
  // open of a directory at all: May() then knows only evt.type and
  // fd.typechar/fd.type (x.typechar), every other check is kUnknown.
  bool only_file_type = false;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual bool Eval(EvalContext& ctx) const = 0;
  // Eval before the syscall's result is known: kUnknown where the outcome
  // depends on it (WhenKnown in fields.h).
  virtual Tri May(EvalContext& ctx) const = 0;
  // Rough evaluation cost, used to test cheap conditions first: and/or are
  // commutative here because checks have no side effects.
  virtual int Cost() const = 0;
};

enum class Transformer : uint8_t { kToLower, kToUpper, kBasename, kLen, kB64 };

// A field with its transformers, innermost first.
struct CompiledField {
  BoundField field;
  std::vector<Transformer> transformers;
  FieldType type = FieldType::kString;  // after transformers
  std::string text;                     // as written
  bool uses_names = false;              // fd.*.name: needs the resolver table
};

// Fills *out from the field as written; *why on failure.
bool CompileField(const std::vector<std::string>& transformers, std::string_view name, bool has_arg,
                  std::string_view arg, const std::string& text, CompiledField* out, std::string* why);

// Extracts value k of `f` with transformers applied, using scratch side 0 or 1.
bool GetValue(const CompiledField& f, EvalContext& ctx, int k, int side, FieldValue* out);

std::unique_ptr<Filter> MakeAnd(std::vector<std::unique_ptr<Filter>> children);
std::unique_ptr<Filter> MakeOr(std::vector<std::unique_ptr<Filter>> children);
std::unique_ptr<Filter> MakeNot(std::unique_ptr<Filter> child);
std::unique_ptr<Filter> MakeConst(bool value);
// A macro shared by several rules, its result remembered per event in
// EvalContext slot `slot`.
std::unique_ptr<Filter> MakeMemo(std::shared_ptr<const Filter> macro, size_t slot);

// Compiles `field op values` (or `field op val(rhs)`). Values are the list
// after list-name expansion. On a type mismatch returns null and fills *why
// (and *bad_value with the index of the offending value, or -1).
std::unique_ptr<Filter> MakeCheck(CompiledField lhs, std::string_view op, const std::vector<std::string>& values,
                                  const CompiledField* rhs, std::string* why, int* bad_value);

// Glob match with *, ? and [...] classes (fnmatch without flags).
bool GlobMatch(std::string_view pattern, std::string_view text, bool icase);

}  // namespace sidetrace::rules
