#include "common/rules/output.h"

#include <cctype>

#include "common/rules/condition_parser.h"

namespace sidetrace::rules {
namespace {

bool IsFieldChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; }

// Reads a field (with transformers) at text[*i]; advances *i.
bool ReadField(std::string_view text, size_t* i, int depth, std::vector<std::string>* transformers,
               std::string* name, std::string* arg, bool* has_arg) {
  if (depth > kMaxConditionDepth) return false;
  size_t start = *i;
  while (*i < text.size() && IsFieldChar(text[*i])) ++*i;
  // A sentence ending right after a field: "opened %fd.name." keeps the dot out.
  while (*i > start && text[*i - 1] == '.') --*i;
  std::string word(text.substr(start, *i - start));
  if (word.empty()) return false;
  if (*i < text.size() && text[*i] == '(' &&
      (word == "tolower" || word == "toupper" || word == "basename" || word == "b64" || word == "len")) {
    ++*i;
    if (!ReadField(text, i, depth + 1, transformers, name, arg, has_arg)) return false;
    if (*i >= text.size() || text[*i] != ')') return false;
    ++*i;
    transformers->insert(transformers->begin(), word);
    return true;
  }
  *name = word;
  if (*i < text.size() && text[*i] == '[') {
    size_t close = text.find(']', *i);
    if (close == std::string_view::npos) return false;
    *arg = std::string(text.substr(*i + 1, close - *i - 1));
    *has_arg = true;
    *i = close + 1;
  }
  return true;
}

}  // namespace

bool CompileOutput(std::string_view text, OutputFormat* out, std::string* why, size_t* offset, bool* unknown_field) {
  *unknown_field = false;
  out->parts.clear();
  OutputFormat::Part part;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c != '%') {
      part.literal.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '%') {
      part.literal.push_back('%');
      i += 2;
      continue;
    }
    size_t start = i++;
    std::vector<std::string> transformers;
    std::string name, arg;
    bool has_arg = false;
    if (!ReadField(text, &i, 0, &transformers, &name, &arg, &has_arg)) {
      *why = "malformed field reference after '%'";
      *offset = start;
      return false;
    }
    std::string written(text.substr(start + 1, i - start - 1));
    if (!CompileField(transformers, name, has_arg, arg, written, &part.field, why)) {
      *offset = start;
      *unknown_field = why->rfind("unknown field", 0) == 0;
      return false;
    }
    part.has_field = true;
    out->uses_names |= part.field.uses_names;
    out->parts.push_back(std::move(part));
    part = OutputFormat::Part();
  }
  if (!part.literal.empty()) out->parts.push_back(std::move(part));
  return true;
}

nlohmann::json FieldJson(const CompiledField& f, EvalContext& ctx) {
  FieldValue v;
  if (!GetValue(f, ctx, 0, 0, &v)) return nullptr;
  switch (v.kind) {
    case FieldValue::Kind::kInt: return v.num;
    case FieldValue::Kind::kBool: return v.num != 0;
    case FieldValue::Kind::kStr:
      if (v.str.empty() && (f.field.info->flags & kNaIfEmpty)) return nullptr;
      return std::string(v.str);
    default: {
      std::string s;
      AppendValueText(v, &s);
      return s;
    }
  }
}

void RenderOutput(const OutputFormat& format, EvalContext& ctx, std::string* text, nlohmann::json* fields) {
  for (const auto& part : format.parts) {
    text->append(part.literal);
    if (!part.has_field) continue;
    FieldValue v;
    if (!GetValue(part.field, ctx, 0, 0, &v) ||
        (v.kind == FieldValue::Kind::kStr && v.str.empty() && (part.field.field.info->flags & kNaIfEmpty))) {
      text->append("<NA>");
      if (fields) (*fields)[part.field.text] = nullptr;
      continue;
    }
    AppendValueText(v, text);
    if (fields) (*fields)[part.field.text] = FieldJson(part.field, ctx);
  }
}

}  // namespace sidetrace::rules
