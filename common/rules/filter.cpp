#include "common/rules/filter.h"

#include <arpa/inet.h>
#include <re2/re2.h>
#include <sys/socket.h>

#include <algorithm>
#include <bitset>
#include <cctype>
#include <charconv>
#include <cstring>

namespace sidetrace::rules {
namespace {

using Kind = FieldValue::Kind;

enum class Op : uint8_t {
  kEq, kNe, kLt, kLe, kGt, kGe, kContains, kIContains, kBContains, kStartsWith, kBStartsWith, kEndsWith,
  kGlob, kIGlob, kPmatch, kIn, kIntersects, kExists, kRegex
};

bool ParseOp(std::string_view s, Op* op) {
  static const std::pair<std::string_view, Op> kOps[] = {
      {"=", Op::kEq}, {"==", Op::kEq}, {"!=", Op::kNe}, {"<", Op::kLt}, {"<=", Op::kLe}, {">", Op::kGt},
      {">=", Op::kGe}, {"contains", Op::kContains}, {"icontains", Op::kIContains},
      {"bcontains", Op::kBContains}, {"startswith", Op::kStartsWith}, {"bstartswith", Op::kBStartsWith},
      {"endswith", Op::kEndsWith}, {"glob", Op::kGlob}, {"iglob", Op::kIGlob}, {"pmatch", Op::kPmatch},
      {"in", Op::kIn}, {"intersects", Op::kIntersects}, {"exists", Op::kExists}, {"regex", Op::kRegex}};
  for (const auto& [name, value] : kOps) {
    if (name == s) {
      *op = value;
      return true;
    }
  }
  return false;
}

bool IsNumericOp(Op op) { return op == Op::kLt || op == Op::kLe || op == Op::kGt || op == Op::kGe; }
bool IsSetOp(Op op) { return op == Op::kEq || op == Op::kNe || op == Op::kIn || op == Op::kIntersects; }

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool IContains(std::string_view hay, std::string_view lowered_needle) {
  if (lowered_needle.size() > hay.size()) return false;
  for (size_t i = 0; i + lowered_needle.size() <= hay.size(); ++i) {
    size_t j = 0;
    while (j < lowered_needle.size() && Lower(hay[i + j]) == lowered_needle[j]) ++j;
    if (j == lowered_needle.size()) return true;
  }
  return false;
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (s.empty()) return false;
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

bool ParseHex(std::string_view s, std::string* out) {
  if (s.size() % 2) return false;
  out->clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data() + i, s.data() + i + 2, v, 16);
    if (ec != std::errc() || p != s.data() + i + 2) return false;
    out->push_back(static_cast<char>(v));
  }
  return true;
}

struct Net {
  int family = 0;
  std::array<uint8_t, 16> ip{};
  int prefix = 0;

  bool Contains(const event::SocketAddress& a) const {
    if (a.family != family) return false;
    int full = prefix / 8, rest = prefix % 8;
    if (std::memcmp(a.ip.data(), ip.data(), full) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (a.ip[full] & mask) == (ip[full] & mask);
  }
};

bool ParseNet(std::string_view s, Net* net) {
  std::string addr(s.substr(0, s.find('/')));
  int max = 0;
  if (inet_pton(AF_INET, addr.c_str(), net->ip.data()) == 1) {
    net->family = AF_INET;
    max = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), net->ip.data()) == 1) {
    net->family = AF_INET6;
    max = 128;
  } else {
    return false;
  }
  net->prefix = max;
  if (size_t slash = s.find('/'); slash != std::string_view::npos) {
    int64_t p = 0;
    if (!ParseInt(s.substr(slash + 1), &p) || p < 0 || p > max) return false;
    net->prefix = static_cast<int>(p);
  }
  return true;
}

bool B64Decode(std::string_view in, std::string* out) {
  static const auto kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(a[i])] = static_cast<int8_t>(i);
    return t;
  }();
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = kTable[static_cast<uint8_t>(c)];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

// Transparent hashing so that string_view lookups allocate nothing.
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

// Exact-match set for `in` over many strings: a length filter first (most
// values, paths especially, have a length no member has), then a hash
// lookup.
class StringSet {
 public:
  void Insert(const std::string& s) {
    if (s.size() < kLengths) lengths_.set(s.size());
    else long_ = true;
    set_.insert(s);
  }
  bool Contains(std::string_view s) const {
    if (s.size() < kLengths ? !lengths_.test(s.size()) : !long_) return false;
    return set_.find(s) != set_.end();
  }
  bool empty() const { return set_.empty(); }

 private:
  static constexpr size_t kLengths = 256;
  std::bitset<kLengths> lengths_;
  bool long_ = false;
  std::unordered_set<std::string, SvHash, std::equal_to<>> set_;
};

class ConstFilter : public Filter {
 public:
  explicit ConstFilter(bool v) : v_(v) {}
  bool Eval(EvalContext&) const override { return v_; }
  Tri May(EvalContext&) const override { return v_ ? Tri::kTrue : Tri::kFalse; }
  int Cost() const override { return 0; }
  bool value() const { return v_; }

 private:
  bool v_;
};

// and / or over children, cheapest first; nested nodes of the same kind
// (from macros) are flattened into one.
template <bool kIsAnd>
class BoolFilter : public Filter {
 public:
  explicit BoolFilter(std::vector<std::unique_ptr<Filter>> children) {
    for (auto& c : children) {
      if (auto* k = dynamic_cast<ConstFilter*>(c.get()); k && k->value() == kIsAnd && children.size() > 1) {
        continue;  // "x and true", "x or false"
      }
      if (auto* same = dynamic_cast<BoolFilter*>(c.get())) {
        for (auto& g : same->c_) c_.push_back(std::move(g));
      } else {
        c_.push_back(std::move(c));
      }
    }
    if (c_.empty()) c_.push_back(std::make_unique<ConstFilter>(kIsAnd));
    std::stable_sort(c_.begin(), c_.end(), [](const auto& a, const auto& b) { return a->Cost() < b->Cost(); });
    // Expected cost when each child decides half the time: c0 + c1/2 +
    // c2/4... A macro of several cheap checks (open_write) is then cheaper
    // than one string check, and runs first, where its memo serves every
    // rule that uses it.
    cost_ = 0;
    for (size_t i = 0; i < c_.size() && i < 16; ++i) cost_ += c_[i]->Cost() >> i;
    cost_ = std::max(cost_, 1);
  }
  bool Eval(EvalContext& ctx) const override {
    for (const auto& f : c_) {
      if (f->Eval(ctx) != kIsAnd) return !kIsAnd;
    }
    return kIsAnd;
  }
  // False and Unknown = False, True or Unknown = True.
  Tri May(EvalContext& ctx) const override {
    constexpr Tri kDecides = kIsAnd ? Tri::kFalse : Tri::kTrue;
    bool unknown = false;
    for (const auto& f : c_) {
      Tri v = f->May(ctx);
      if (v == kDecides) return v;
      unknown |= v == Tri::kUnknown;
    }
    return unknown ? Tri::kUnknown : kIsAnd ? Tri::kTrue : Tri::kFalse;
  }
  int Cost() const override { return cost_; }

 private:
  std::vector<std::unique_ptr<Filter>> c_;
  int cost_ = 0;
};
using AndFilter = BoolFilter<true>;
using OrFilter = BoolFilter<false>;

class NotFilter : public Filter {
 public:
  explicit NotFilter(std::unique_ptr<Filter> c) : c_(std::move(c)) {}
  bool Eval(EvalContext& ctx) const override { return !c_->Eval(ctx); }
  Tri May(EvalContext& ctx) const override {
    Tri v = c_->May(ctx);
    return v == Tri::kUnknown ? v : v == Tri::kTrue ? Tri::kFalse : Tri::kTrue;
  }
  // Negations are mostly exceptions that rarely hold: test them last.
  int Cost() const override { return c_->Cost() + 20; }

 private:
  std::unique_ptr<Filter> c_;
};


class MemoFilter : public Filter {
 public:
  MemoFilter(std::shared_ptr<const Filter> inner, size_t slot) : inner_(std::move(inner)), slot_(slot) {}
  bool Eval(EvalContext& ctx) const override {
    return Remembered(ctx.memo_epoch, ctx.memo_value, ctx.epoch, [&] { return uint8_t{inner_->Eval(ctx)}; });
  }
  Tri May(EvalContext& ctx) const override {
    return Remembered(ctx.may_epoch, ctx.may_value, ctx.epoch, [&] { return inner_->May(ctx); });
  }
  int Cost() const override { return inner_->Cost(); }

 private:
  // The macro's value for the current event (epoch), computed once.
  template <typename T, typename Compute>
  T Remembered(std::vector<uint64_t>& epochs, std::vector<T>& values, uint64_t epoch, Compute compute) const {
    if (epochs[slot_] != epoch) {
      values[slot_] = compute();
      epochs[slot_] = epoch;
    }
    return values[slot_];
  }

  std::shared_ptr<const Filter> inner_;
  size_t slot_;
};

// evt.type = / in / != : a bit test instead of a string compare.
class EventTypeFilter : public Filter {
 public:
  explicit EventTypeFilter(std::bitset<event::kEventTypeCount> types) : types_(types) {}
  bool Eval(EvalContext& ctx) const override {
    size_t t = static_cast<size_t>(ctx.x.event->type);
    return t < types_.size() && types_.test(t);
  }
  Tri May(EvalContext& ctx) const override { return Eval(ctx) ? Tri::kTrue : Tri::kFalse; }
  int Cost() const override { return 1; }

 private:
  std::bitset<event::kEventTypeCount> types_;
};

class CheckFilter : public Filter {
 public:
  CheckFilter(CompiledField lhs, Op op) : lhs_(std::move(lhs)), op_(op) {}

  // Prepares the values; false with *why on a type mismatch.
  bool Init(const std::vector<std::string>& values, const CompiledField* rhs, std::string* why, int* bad) {
    for (size_t type = 0; type < event::kEventTypeCount; ++type) {
      auto t = static_cast<event::EventType>(type);
      after_result_[type] = IsResultField(lhs_.field, t) || (rhs && IsResultField(rhs->field, t));
    }
    FieldId id = lhs_.field.info->id;
    file_type_only_ = !rhs && (id == FieldId::kFdTypechar || id == FieldId::kFdType);
    reads_cwd_ = id == FieldId::kProcCwd || (rhs && rhs->field.info->id == FieldId::kProcCwd);
    *bad = -1;
    if (rhs) {
      rhs_ = std::make_unique<CompiledField>(*rhs);
      return true;
    }
    strs_ = values;
    if (op_ == Op::kIContains) {
      for (auto& s : strs_) std::transform(s.begin(), s.end(), s.begin(), Lower);
    }
    if (op_ == Op::kBContains || op_ == Op::kBStartsWith) {
      for (size_t i = 0; i < strs_.size(); ++i) {
        std::string bytes;
        if (!ParseHex(strs_[i], &bytes)) {
          *why = "'" + strs_[i] + "' is not a hex byte string for operator " + OpText();
          *bad = static_cast<int>(i);
          return false;
        }
        strs_[i] = bytes;
      }
    }
    if (op_ == Op::kRegex) {
      for (size_t i = 0; i < strs_.size(); ++i) {
        auto re = std::make_unique<re2::RE2>(strs_[i], re2::RE2::Quiet);
        if (!re->ok()) {
          *why = "invalid regular expression '" + strs_[i] + "': " + re->error();
          *bad = static_cast<int>(i);
          return false;
        }
        regexes_.push_back(std::move(re));
      }
    }
    if (op_ == Op::kPmatch) {
      // Longest prefixes are irrelevant: any match wins. Strip trailing '/'.
      for (auto& s : strs_) {
        while (s.size() > 1 && s.back() == '/') s.pop_back();
      }
    }
    const FieldType t = lhs_.type;
    if (t == FieldType::kInt && (IsSetOp(op_) || IsNumericOp(op_))) {
      for (size_t i = 0; i < strs_.size(); ++i) {
        int64_t n = 0;
        if (!ParseInt(strs_[i], &n)) {
          *why = "'" + strs_[i] + "' is not a number, as field '" + lhs_.text + "' needs";
          *bad = static_cast<int>(i);
          return false;
        }
        nums_.push_back(n);
      }
    } else if (t == FieldType::kBool && (IsSetOp(op_) || IsNumericOp(op_))) {
      if (IsNumericOp(op_)) {
        *why = "operator " + OpText() + " does not apply to boolean field '" + lhs_.text + "'";
        return false;
      }
      for (size_t i = 0; i < strs_.size(); ++i) {
        if (strs_[i] == "true") {
          nums_.push_back(1);
        } else if (strs_[i] == "false") {
          nums_.push_back(0);
        } else {
          *why = "'" + strs_[i] + "' is not true or false, as field '" + lhs_.text + "' needs";
          *bad = static_cast<int>(i);
          return false;
        }
      }
    } else if ((t == FieldType::kIp || t == FieldType::kIpNet) && (IsSetOp(op_) || IsNumericOp(op_))) {
      if (IsNumericOp(op_)) {
        *why = "operator " + OpText() + " does not apply to address field '" + lhs_.text + "'";
        return false;
      }
      for (size_t i = 0; i < strs_.size(); ++i) {
        Net n;
        if (!ParseNet(strs_[i], &n)) {
          *why = "'" + strs_[i] + "' is not an IP address or CIDR network, as field '" + lhs_.text + "' needs";
          *bad = static_cast<int>(i);
          return false;
        }
        nets_.push_back(n);
      }
    } else if (t == FieldType::kString && IsNumericOp(op_)) {
      *why = "operator " + OpText() + " needs a numeric field, '" + lhs_.text + "' is a string";
      return false;
    }
    if (t == FieldType::kString && (op_ == Op::kIn || op_ == Op::kIntersects) && strs_.size() > 4) {
      for (const auto& s : strs_) set_.Insert(s);
    }
    if (!IsSetOp(op_) && op_ != Op::kExists && strs_.size() != 1 && op_ != Op::kPmatch) {
      *why = "operator " + OpText() + " takes one value";
      return false;
    }
    // Cost: what extraction and comparison take, roughly in string compares.
    bool built = id == FieldId::kProcCmdline || id == FieldId::kProcArgs || id == FieldId::kProcPcmdline ||
                 id == FieldId::kProcExeline || id == FieldId::kProcEnv || id == FieldId::kThreadCapEffective ||
                 id == FieldId::kEvtArgs || id == FieldId::kEvtArg;
    cost_ = (t == FieldType::kString ? 4 : 2) + (built ? 8 : 0) + (lhs_.field.multi ? 8 : 0) +
            static_cast<int>(lhs_.transformers.size()) * 4 + (rhs_ ? 8 : 0);
    if (op_ == Op::kRegex) cost_ += 50;
    if (op_ == Op::kExists) cost_ += 8;  // almost always true: not selective
    if (op_ == Op::kGlob || op_ == Op::kIGlob || op_ == Op::kIContains) cost_ += 4;
    if (set_.empty() && t == FieldType::kString) cost_ += static_cast<int>(strs_.size());
    return true;
  }

  Tri May(EvalContext& ctx) const override {
    size_t type = static_cast<size_t>(ctx.x.event->type);
    if (type < event::kEventTypeCount && after_result_[type]) return Tri::kUnknown;
    if (ctx.only_file_type && !file_type_only_) return Tri::kUnknown;
    if (reads_cwd_ && ctx.x.event->proc_cwd_unknown) return Tri::kUnknown;
    return Eval(ctx) ? Tri::kTrue : Tri::kFalse;
  }

  int Cost() const override { return cost_; }

  bool Eval(EvalContext& ctx) const override {
    const bool multi = lhs_.field.multi;
    bool any = false;
    for (int k = 0;; ++k) {
      FieldValue v;
      bool got = lhs_.transformers.empty() ? ExtractField(lhs_.field, ctx.x, k, &ctx.scratch[0], &v)
                                           : GetValue(lhs_, ctx, k, 0, &v);
      if (!got) break;
      if (op_ == Op::kExists) return true;
      bool r = rhs_ ? CompareField(v, ctx) : Compare(v, ctx);
      if (!multi) return r;
      if (op_ == Op::kNe) {
        if (!r) return false;
        any = true;
      } else if (r) {
        return true;
      }
    }
    return any;
  }

 private:
  std::string OpText() const {
    static const char* kNames[] = {"=", "!=", "<", "<=", ">", ">=", "contains", "icontains", "bcontains",
                                   "startswith", "bstartswith", "endswith", "glob", "iglob", "pmatch", "in",
                                   "intersects", "exists", "regex"};
    return kNames[static_cast<int>(op_)];
  }

  bool Compare(const FieldValue& v, EvalContext& ctx) const {
    switch (v.kind) {
      case Kind::kInt:
      case Kind::kBool:
        if (!nums_.empty() || strs_.empty()) return CompareNum(v.num);
        break;
      case Kind::kAddr:
        if (!nets_.empty() || strs_.empty()) {
          bool in = false;
          for (const auto& n : nets_) {
            if (n.Contains(*v.addr)) {
              in = true;
              break;
            }
          }
          return op_ == Op::kNe ? !in : in;
        }
        break;
      default: break;
    }
    std::string_view s = v.str;
    if (v.kind != Kind::kStr) {
      std::string& buf = ctx.scratch[2];
      buf.clear();
      AppendValueText(v, &buf);
      s = buf;
    }
    return CompareStr(s);
  }

  bool CompareNum(int64_t n) const {
    switch (op_) {
      case Op::kEq: case Op::kIn: case Op::kIntersects:
        return std::find(nums_.begin(), nums_.end(), n) != nums_.end();
      case Op::kNe: return std::find(nums_.begin(), nums_.end(), n) == nums_.end();
      case Op::kLt: return n < nums_[0];
      case Op::kLe: return n <= nums_[0];
      case Op::kGt: return n > nums_[0];
      case Op::kGe: return n >= nums_[0];
      default: return false;
    }
  }

  bool CompareStr(std::string_view s) const {
    switch (op_) {
      case Op::kEq: return s == strs_[0];
      case Op::kNe: return s != strs_[0];
      case Op::kIn:
      case Op::kIntersects:
        if (!set_.empty()) return set_.Contains(s);
        return std::find(strs_.begin(), strs_.end(), s) != strs_.end();
      case Op::kLt: return s < strs_[0];
      case Op::kLe: return s <= strs_[0];
      case Op::kGt: return s > strs_[0];
      case Op::kGe: return s >= strs_[0];
      case Op::kContains: case Op::kBContains: return s.find(strs_[0]) != std::string_view::npos;
      case Op::kIContains: return IContains(s, strs_[0]);
      case Op::kStartsWith: case Op::kBStartsWith: return s.substr(0, strs_[0].size()) == strs_[0];
      case Op::kEndsWith:
        return s.size() >= strs_[0].size() && s.substr(s.size() - strs_[0].size()) == strs_[0];
      case Op::kGlob: return GlobMatch(strs_[0], s, false);
      case Op::kIGlob: return GlobMatch(strs_[0], s, true);
      case Op::kPmatch:
        // Falco: the value is one of the paths or lies below one of them.
        for (const auto& p : strs_) {
          if (s.substr(0, p.size()) == p && (s.size() == p.size() || s[p.size()] == '/' || p == "/")) return true;
        }
        return false;
      case Op::kRegex:
        return re2::RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *regexes_[0]);
      case Op::kExists: return true;
    }
    return false;
  }

  bool CompareField(const FieldValue& v, EvalContext& ctx) const {
    FieldValue r;
    if (!GetValue(*rhs_, ctx, 0, 1, &r)) return false;
    if ((v.kind == Kind::kInt || v.kind == Kind::kBool) && (r.kind == Kind::kInt || r.kind == Kind::kBool)) {
      switch (op_) {
        case Op::kEq: case Op::kIn: return v.num == r.num;
        case Op::kNe: return v.num != r.num;
        case Op::kLt: return v.num < r.num;
        case Op::kLe: return v.num <= r.num;
        case Op::kGt: return v.num > r.num;
        case Op::kGe: return v.num >= r.num;
        default: break;
      }
    }
    std::string_view a = v.str, b = r.str;
    if (v.kind != Kind::kStr) {
      ctx.scratch[2].clear();
      AppendValueText(v, &ctx.scratch[2]);
      a = ctx.scratch[2];
    }
    if (r.kind != Kind::kStr) {
      ctx.scratch[5].clear();
      AppendValueText(r, &ctx.scratch[5]);
      b = ctx.scratch[5];
    }
    switch (op_) {
      case Op::kEq: case Op::kIn: return a == b;
      case Op::kNe: return a != b;
      case Op::kLt: return a < b;
      case Op::kLe: return a <= b;
      case Op::kGt: return a > b;
      case Op::kGe: return a >= b;
      case Op::kContains: return a.find(b) != std::string_view::npos;
      case Op::kStartsWith: return a.substr(0, b.size()) == b;
      case Op::kEndsWith: return a.size() >= b.size() && a.substr(a.size() - b.size()) == b;
      case Op::kGlob: return GlobMatch(b, a, false);
      default: return false;
    }
  }

  CompiledField lhs_;
  Op op_;
  std::unique_ptr<CompiledField> rhs_;
  std::vector<std::string> strs_;
  std::vector<int64_t> nums_;
  std::vector<Net> nets_;
  // RE2, as Falco: linear time and no recursion, whatever the input.
  std::vector<std::unique_ptr<re2::RE2>> regexes_;
  StringSet set_;
  int cost_ = 0;
  // Event types where this check waits for the syscall's result.
  std::bitset<event::kEventTypeCount> after_result_;
  bool file_type_only_ = false;  // on fd.typechar / fd.type: see only_file_type
  bool reads_cwd_ = false;       // on proc.cwd: see Event::proc_cwd_unknown
};

}  // namespace

bool CompileField(const std::vector<std::string>& transformers, std::string_view name, bool has_arg,
                  std::string_view arg, const std::string& text, CompiledField* out, std::string* why) {
  if (!BindField(name, has_arg, arg, &out->field, why)) return false;
  out->text = text;
  out->type = out->field.type;
  FieldId id = out->field.info->id;
  out->uses_names = id == FieldId::kFdSipName || id == FieldId::kFdCipName || id == FieldId::kFdRipName;
  for (auto it = transformers.rbegin(); it != transformers.rend(); ++it) {
    const std::string& t = *it;
    if (t == "tolower") out->transformers.push_back(Transformer::kToLower);
    else if (t == "toupper") out->transformers.push_back(Transformer::kToUpper);
    else if (t == "basename") out->transformers.push_back(Transformer::kBasename);
    else if (t == "b64") out->transformers.push_back(Transformer::kB64);
    else if (t == "len") out->transformers.push_back(Transformer::kLen);
    else {
      *why = "unknown transformer '" + t + "'";
      return false;
    }
    out->type = t == "len" ? FieldType::kInt : FieldType::kString;
  }
  return true;
}

bool GetValue(const CompiledField& f, EvalContext& ctx, int k, int side, FieldValue* out) {
  std::string* bufs = &ctx.scratch[side * 3];
  if (!ExtractField(f.field, ctx.x, k, &bufs[0], out)) return false;
  int next = 1;
  for (Transformer t : f.transformers) {
    if (out->kind != Kind::kStr) {
      std::string& b = bufs[next];
      b.clear();
      AppendValueText(*out, &b);
      out->kind = Kind::kStr;
      out->str = b;
      next = 3 - next;
    }
    std::string& b = bufs[next];
    switch (t) {
      case Transformer::kToLower:
      case Transformer::kToUpper:
        b.assign(out->str);
        for (char& c : b) {
          c = static_cast<char>(t == Transformer::kToLower ? std::tolower(static_cast<unsigned char>(c))
                                                            : std::toupper(static_cast<unsigned char>(c)));
        }
        out->str = b;
        next = 3 - next;
        break;
      case Transformer::kBasename: {
        size_t slash = LastSlash(out->str);
        if (slash != std::string_view::npos) out->str = out->str.substr(slash + 1);
        break;
      }
      case Transformer::kB64: {
        std::string_view in = out->str;
        if (!B64Decode(in, &b)) return false;
        out->str = b;
        next = 3 - next;
        break;
      }
      case Transformer::kLen:
        out->kind = Kind::kInt;
        out->num = static_cast<int64_t>(out->str.size());
        break;
    }
  }
  return true;
}

std::unique_ptr<Filter> MakeAnd(std::vector<std::unique_ptr<Filter>> c) {
  if (c.size() == 1) return std::move(c[0]);
  return std::make_unique<AndFilter>(std::move(c));
}
std::unique_ptr<Filter> MakeOr(std::vector<std::unique_ptr<Filter>> c) {
  if (c.size() == 1) return std::move(c[0]);
  return std::make_unique<OrFilter>(std::move(c));
}
std::unique_ptr<Filter> MakeNot(std::unique_ptr<Filter> c) { return std::make_unique<NotFilter>(std::move(c)); }
std::unique_ptr<Filter> MakeMemo(std::shared_ptr<const Filter> macro, size_t slot) {
  return std::make_unique<MemoFilter>(std::move(macro), slot);
}
std::unique_ptr<Filter> MakeConst(bool v) { return std::make_unique<ConstFilter>(v); }

std::unique_ptr<Filter> MakeCheck(CompiledField lhs, std::string_view op_text, const std::vector<std::string>& values,
                                  const CompiledField* rhs, std::string* why, int* bad_value) {
  Op op;
  *bad_value = -1;
  if (!ParseOp(op_text, &op)) {
    *why = "unknown operator '" + std::string(op_text) + "'";
    return nullptr;
  }
  if (lhs.field.info->id == FieldId::kEvtType && lhs.transformers.empty() && !rhs &&
      (op == Op::kEq || op == Op::kIn || op == Op::kNe)) {
    std::bitset<event::kEventTypeCount> types;
    for (const auto& v : values) {
      if (auto t = event::EventTypeFromName(v)) types.set(static_cast<size_t>(*t));
    }
    if (op == Op::kNe) types.flip();
    return std::make_unique<EventTypeFilter>(types);
  }
  // Events are evaluated on exit: evt.dir is always "<".
  if (lhs.field.info->id == FieldId::kEvtDir && lhs.transformers.empty() && !rhs && values.size() == 1 &&
      (op == Op::kEq || op == Op::kNe)) {
    return MakeConst((values[0] == "<") == (op == Op::kEq));
  }
  auto f = std::make_unique<CheckFilter>(std::move(lhs), op);
  if (!f->Init(values, rhs, why, bad_value)) return nullptr;
  return f;
}

bool GlobMatch(std::string_view p, std::string_view s, bool icase) {
  auto eq = [icase](char a, char b) { return icase ? Lower(a) == Lower(b) : a == b; };
  size_t pi = 0, si = 0, star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = pi++;
      star_s = si;
      continue;
    }
    if (pi < p.size() && p[pi] == '[') {
      size_t close = p.find(']', pi + 2);
      if (close != std::string_view::npos) {
        bool negate = p[pi + 1] == '!' || p[pi + 1] == '^';
        bool hit = false;
        for (size_t i = pi + 1 + negate; i < close; ++i) {
          if (i + 2 < close && p[i + 1] == '-') {
            if (s[si] >= p[i] && s[si] <= p[i + 2]) hit = true;
            i += 2;
          } else if (eq(p[i], s[si])) {
            hit = true;
          }
        }
        if (hit != negate) {
          pi = close + 1;
          ++si;
          continue;
        }
      }
    } else if (pi < p.size() && (p[pi] == '?' || eq(p[pi], s[si]))) {
      ++pi;
      ++si;
      continue;
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p + 1;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

}  // namespace sidetrace::rules
