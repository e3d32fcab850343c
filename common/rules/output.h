// Rule outputs: "%field" templates compiled once and rendered per alert.
//
// Syntax as Falco: %field, %field[arg], %evt.arg.NAME, %transformer(field),
// "%%" for a literal '%'. A field with no value prints <NA> (so do empty
// container and user metadata). Thread-safety: OutputFormat is immutable.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "common/rules/filter.h"

namespace sidetrace::rules {

struct OutputFormat {
  struct Part {
    std::string literal;  // text before the field (or all of it)
    bool has_field = false;
    CompiledField field;
  };
  std::vector<Part> parts;
  bool uses_names = false;
};

// Compiles `text`. On an unknown field returns false with *why and the byte
// offset of the '%' in *offset; *unknown_field is true for that case (the
// rule is skipped rather than the load failed).
bool CompileOutput(std::string_view text, OutputFormat* out, std::string* why, size_t* offset, bool* unknown_field);

// Renders the message into *text (appended) and the field values into
// *fields (keyed by the field as written; null for <NA>).
void RenderOutput(const OutputFormat& format, EvalContext& ctx, std::string* text, nlohmann::json* fields);

// One field's value as JSON: numbers for integers, true/false, strings,
// null for <NA>.
nlohmann::json FieldJson(const CompiledField& f, EvalContext& ctx);

}  // namespace sidetrace::rules
