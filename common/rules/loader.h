// Internal: reading and collecting rules files (Falco's rule_loader_reader
// and rule_loader_collector). The compiler lives in engine.cpp.
//
// The reader validates each YAML item against its schema (known keys, value
// types) and the collector applies it to the Collection in order: new items
// are added, redefinitions replace the earlier item in place, `append: true`
// and `override:` merge into it. Every piece of text remembers where it came
// from so that compile errors point at the file, line and column.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/rules/rules.h"

namespace sidetrace::rules {

// A place in one source.
struct Pos {
  int source = -1;  // index into Collection::sources
  size_t offset = 0;
  int line = 0;  // 0-based, as yaml-cpp marks
  int column = 0;
};

// Text assembled from one or more YAML scalars (a condition plus appends).
struct PlacedText {
  struct Segment {
    size_t start;  // offset in text
    Pos pos;       // the scalar's mark
  };
  std::string text;
  std::vector<Segment> segments;
  void Assign(const std::string& s, Pos pos) {
    text = s;
    segments = {{0, pos}};
  }
  void Append(const std::string& s, Pos pos) {
    if (!text.empty()) text.push_back(' ');
    segments.push_back({text.size(), pos});
    text += s;
  }
};

struct ListDef {
  std::string name;
  std::vector<std::string> items;
  Pos pos;
};

struct MacroDef {
  std::string name;
  PlacedText condition;
  Pos pos;
};

struct ExceptionDef {
  std::string name;
  std::vector<std::string> fields;
  bool fields_is_list = false;
  std::vector<std::string> comps;
  YAML::Node values;  // sequence; appended values are pushed into it
  Pos pos;
};

struct RuleDef {
  std::string name;
  std::string desc;
  PlacedText condition;
  PlacedText output;
  Priority priority = Priority::kDebug;
  bool has_priority = false;
  bool enabled = true;
  std::vector<std::string> tags;
  std::string source = "syscall";
  std::vector<ExceptionDef> exceptions;
  bool warn_evttypes = true;
  bool skip_if_unknown_filter = false;
  Pos pos;
};

struct Collection {
  std::vector<RuleSource> sources;  // text of every source, for snippets
  std::vector<ListDef> lists;
  std::vector<MacroDef> macros;
  std::vector<RuleDef> rules;
  std::map<std::string, size_t> list_index, macro_index, rule_index;
};

// Message helpers shared with the compiler.
LoadMessage MakeMessage(const Collection& c, const Pos& pos, std::string code, std::string message,
                        std::string item);
// The position of byte `offset` of a placed text in its source file.
Pos MapOffset(const Collection& c, const PlacedText& t, size_t offset);

// Reads and collects one source (already appended to c->sources at index
// `source`). Errors and warnings go to *report.
void CollectSource(Collection* c, int source, LoadReport* report);

}  // namespace sidetrace::rules
