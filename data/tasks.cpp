#include "data/tasks.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace echo {

namespace {

// Shared token alphabet for the 128-token tasks (docs/tasks.md):
//   [0,32) keys / variables / tools, [32,64) values / result ids,
//   64 EQ or CALL marker, 65 ASK, [66,128) noise, 126/127 reserved markers in niah.
constexpr int32_t kKeyLo = 0, kKeyHi = 32, kValLo = 32, kValHi = 64;
constexpr int32_t kMarkEq = 64, kMarkAsk = 65, kNoiseLo = 66, kNoiseHi = 128;

// Reads typed parameters and rejects keys nobody read.
class Params {
 public:
  explicit Params(const TaskSpec& s) : spec_(s) {}
  int64_t integer(const std::string& key, int64_t def) {
    used_.insert(key);
    auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return def;
    try {
      size_t pos = 0;
      long long v = std::stoll(it->second, &pos);
      if (pos != it->second.size()) throw std::invalid_argument("");
      // Within int32, every length a task derives (e.g. calls·(3 + filler) + 2)
      // fits int64 without overflow.
      if (v < INT32_MIN || v > INT32_MAX) throw std::out_of_range("");
      return v;
    } catch (const std::out_of_range&) {
      fail(key, "'" + it->second + "' is out of range (at most 2147483647 in magnitude)");
    } catch (...) {
      fail(key, "expected an integer, got '" + it->second + "'");
    }
  }
  double real(const std::string& key, double def) {
    used_.insert(key);
    auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return def;
    try {
      size_t pos = 0;
      double v = std::stod(it->second, &pos);
      if (pos != it->second.size()) throw std::invalid_argument("");
      return v;
    } catch (...) {
      fail(key, "expected a number, got '" + it->second + "'");
    }
  }
  std::string text(const std::string& key, const std::string& def) {
    used_.insert(key);
    auto it = spec_.params.find(key);
    return it == spec_.params.end() ? def : it->second;
  }
  void finish() const {
    for (const auto& kv : spec_.params)
      if (!used_.count(kv.first)) {
        std::string known;
        for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
        throw std::runtime_error("task " + spec_.name + ": unknown key '" + kv.first + "' (known: " + known + ")");
      }
  }
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    throw std::runtime_error("task " + spec_.name + ": " + key + ": " + msg);
  }
  void require(bool cond, const std::string& key, const std::string& msg) const {
    if (!cond) fail(key, msg);
  }

 private:
  const TaskSpec& spec_;
  std::set<std::string> used_;
};

// k distinct integers from [lo, hi) in random order: a partial Fisher-Yates
// shuffle of the virtual array pool[i] = lo + i. Only the entries a swap moved
// are stored, so memory is O(k) however wide the range (a zoology spec may ask
// for V = 10⁹); the draws and the result are those of the shuffle on a real array.
std::vector<int32_t> distinct(Rng& rng, int32_t lo, int32_t hi, int64_t k) {
  const int64_t n = int64_t(hi) - lo;
  std::unordered_map<int64_t, int32_t> moved;
  auto pool = [&](int64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? static_cast<int32_t>(lo + i) : it->second;
  };
  std::vector<int32_t> out(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = rng.randint(i, n);
    out[i] = pool(j);
    moved[j] = pool(i);  // pool[i] is never read again: only the swap's other half is kept
  }
  return out;
}
template <typename V> void shuffle(Rng& rng, V& v) {
  for (int64_t i = (int64_t)v.size() - 1; i > 0; --i) std::swap(v[i], v[rng.randint(0, i + 1)]);
}

struct Builder {
  Example e;
  void push(int32_t token, int32_t target, int32_t mask) {
    e.tokens.push_back(token);
    e.targets.push_back(target);
    e.mask.push_back(mask);
  }
  void noise(Rng& rng, int64_t n, int32_t mask, int32_t lo = kNoiseLo, int32_t hi = kNoiseHi) {
    for (int64_t i = 0; i < n; ++i) push((int32_t)rng.randint(lo, hi), kIgnoreIndex, mask);
  }
};

// ---- MQAR ------------------------------------------------------------------------
class Mqar : public Task {
 public:
  explicit Mqar(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    variant_ = p.text("variant", "default");
    M_ = p.integer("M", 8);
    p.require(M_ >= 1, "M", "must be ≥ 1");
    if (variant_ == "default") {
      gap_ = p.integer("gap", 64);
      reveal_ = p.integer("reveal", 0);
      p.require(M_ <= kKeyHi - kKeyLo, "M", "at most 32 keys exist in the default layout");
      p.require(gap_ >= 0, "gap", "must be ≥ 0");
      p.require(reveal_ == 0 || reveal_ == 1, "reveal", "must be 0 or 1");
      V_ = 128;
      T_ = 2 * M_ + gap_ + (reveal_ ? 2 * M_ : M_);
    } else if (variant_ == "zoology") {
      V_ = p.integer("V", 128);
      T_ = p.integer("T", 256);
      alpha_ = p.real("alpha", 0.01);
      p.require(V_ >= 8 && V_ % 2 == 0, "V", "must be even and ≥ 8");
      p.require(M_ < V_ / 2, "M", "needs M < V/2 distinct keys");
      p.require(T_ >= 4 * M_, "T", "must be ≥ 4·M (context and query pairs)");
      p.require(alpha_ > 0, "alpha", "must be > 0");
    } else {
      p.fail("variant", "expected default or zoology, got '" + variant_ + "'");
    }
    p.finish();
  }
  int64_t vocab_size() const override { return V_; }
  int64_t seq_len() const override { return T_; }
  double chance_uniform() const override {
    return variant_ == "zoology" ? 1.0 / double(V_ / 2) : 1.0 / (kValHi - kValLo);
  }
  double chance_informed() const override {
    if (variant_ == "default" && reveal_) {  // elimination: H_M / M
      double h = 0;
      for (int64_t i = 1; i <= M_; ++i) h += 1.0 / i;
      return h / M_;
    }
    // A uniform pick among the M context values (drawn with replacement from 32)
    // hits the answer with probability E[#copies of it]/M = (1 + (M−1)/32) / M.
    if (variant_ == "default") return (1.0 + double(M_ - 1) / (kValHi - kValLo)) / M_;
    return 1.0 / M_;
  }
  Example sample(Rng& rng) const override { return variant_ == "zoology" ? zoology(rng) : standard(rng); }

 private:
  Example standard(Rng& rng) const {
    Builder b;
    auto keys = distinct(rng, kKeyLo, kKeyHi, M_);
    std::vector<int32_t> vals(M_);
    for (auto& v : vals) v = (int32_t)rng.randint(kValLo, kValHi);
    for (int64_t i = 0; i < M_; ++i) {
      b.push(keys[i], kIgnoreIndex, 1);
      b.push(vals[i], kIgnoreIndex, 1);
    }
    b.noise(rng, gap_, 1);
    std::vector<int64_t> order(M_);
    std::iota(order.begin(), order.end(), 0);
    shuffle(rng, order);
    for (int64_t i : order) {
      b.push(keys[i], vals[i], 0);
      if (reveal_) b.push(vals[i], kIgnoreIndex, 0);
    }
    return b.e;
  }
  // Zoology's layout: pairs first, then random fill in which each key reappears
  // once, at a power-law distributed distance, followed by its value.
  Example zoology(Rng& rng) const {
    const int32_t half = (int32_t)(V_ / 2);
    auto keys = distinct(rng, 1, half, M_);
    std::vector<int32_t> vals(M_);
    for (auto& v : vals) v = (int32_t)rng.randint(half, V_);
    Builder b;
    for (int64_t i = 0; i < M_; ++i) {
      b.push(keys[i], kIgnoreIndex, 1);
      b.push(vals[i], kIgnoreIndex, 1);
    }
    const int64_t rest = T_ - 2 * M_, slots = rest / 2;
    // Slot s (0-based) is drawn with weight (s+1)^(alpha-1), without replacement.
    std::vector<double> w(slots);
    for (int64_t s = 0; s < slots; ++s) w[s] = std::pow(double(s + 1), alpha_ - 1.0);
    std::vector<int64_t> chosen;
    for (int64_t i = 0; i < M_; ++i) {
      double total = std::accumulate(w.begin(), w.end(), 0.0), u = rng.uniform() * total;
      int64_t s = 0;
      while (s + 1 < slots && u >= w[s]) u -= w[s++];
      chosen.push_back(s);
      w[s] = 0;
    }
    std::vector<int32_t> tok(rest), tgt(rest, kIgnoreIndex);
    for (auto& t : tok) t = (int32_t)rng.randint(0, V_);
    for (int64_t i = 0; i < M_; ++i) {
      tok[2 * chosen[i]] = keys[i];
      tgt[2 * chosen[i]] = vals[i];
      tok[2 * chosen[i] + 1] = vals[i];
    }
    for (int64_t t = 0; t < rest; ++t) b.push(tok[t], tgt[t], 0);
    return b.e;
  }
  std::string variant_;
  int64_t M_ = 8, gap_ = 64, reveal_ = 0, V_ = 128, T_ = 0;
  double alpha_ = 0.01;
};

// ---- needle in a haystack -----------------------------------------------------------
// Context: noise with `needles` triples [NEEDLE k v] at random depths; then one
// [ASK k] per needle (random order), scored at k.
class Niah : public Task {
 public:
  static constexpr int32_t kNeedle = 64;
  explicit Niah(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    T_ = p.integer("T", 64);
    n_ = p.integer("needles", 1);
    p.require(n_ >= 1 && n_ <= 32, "needles", "must be in [1, 32]");
    p.require(T_ >= 5 * n_, "T", "too short for the needles and queries (≥ 5·needles)");
    p.finish();
  }
  int64_t vocab_size() const override { return 128; }
  int64_t seq_len() const override { return T_; }
  double chance_uniform() const override { return 1.0 / 32; }
  double chance_informed() const override { return 1.0 / n_; }
  Example sample(Rng& rng) const override {
    const int64_t ctx = T_ - 2 * n_, free_slots = ctx - 3 * n_;
    auto keys = distinct(rng, kKeyLo, kKeyHi, n_);
    std::vector<int32_t> vals(n_);
    for (auto& v : vals) v = (int32_t)rng.randint(kValLo, kValHi);
    // Needle i goes after depth[i] noise tokens (sorted depths in [0, free_slots]).
    std::vector<int64_t> depth(n_);
    for (auto& d : depth) d = rng.randint(0, free_slots + 1);
    std::sort(depth.begin(), depth.end());
    Builder b;
    int64_t placed = 0;
    for (int64_t i = 0; i < n_; ++i) {
      b.noise(rng, depth[i] - placed, 1);
      placed = depth[i];
      b.push(kNeedle, kIgnoreIndex, 1);
      b.push(keys[i], kIgnoreIndex, 1);
      b.push(vals[i], kIgnoreIndex, 1);
    }
    b.noise(rng, free_slots - placed, 1);
    std::vector<int64_t> order(n_);
    std::iota(order.begin(), order.end(), 0);
    shuffle(rng, order);
    for (int64_t i : order) {
      b.push(kMarkAsk, kIgnoreIndex, 0);
      b.push(keys[i], vals[i], 0);
    }
    return b.e;
  }

 private:
  int64_t T_, n_;
};

// ---- tool trace -------------------------------------------------------------------------
// [CALL tool result] × calls, each followed by `filler` noise tokens; then [ASK tool]
// re-asks one call, scored at the tool token (target = its result id).
class ToolTrace : public Task {
 public:
  explicit ToolTrace(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    calls_ = p.integer("calls", 8);
    filler_ = p.integer("filler", 4);
    p.require(calls_ >= 1 && calls_ <= 32, "calls", "must be in [1, 32]");
    p.require(filler_ >= 0, "filler", "must be ≥ 0");
    p.finish();
  }
  int64_t vocab_size() const override { return 128; }
  int64_t seq_len() const override { return calls_ * (3 + filler_) + 2; }
  double chance_uniform() const override { return 1.0 / 32; }
  double chance_informed() const override { return 1.0 / calls_; }
  Example sample(Rng& rng) const override {
    auto tools = distinct(rng, kKeyLo, kKeyHi, calls_);
    std::vector<int32_t> results(calls_);
    for (auto& r : results) r = (int32_t)rng.randint(kValLo, kValHi);
    Builder b;
    for (int64_t i = 0; i < calls_; ++i) {
      b.push(kMarkEq, kIgnoreIndex, 1);
      b.push(tools[i], kIgnoreIndex, 1);
      b.push(results[i], kIgnoreIndex, 1);
      b.noise(rng, filler_, 1);
    }
    int64_t q = rng.randint(0, calls_);
    b.push(kMarkAsk, kIgnoreIndex, 0);
    b.push(tools[q], results[q], 0);
    return b.e;
  }

 private:
  int64_t calls_, filler_;
};

// ---- system prompt ---------------------------------------------------------------------------
// [var EQ value] × vars, a long noise gap, then [ASK var] for one variable.
class SysPrompt : public Task {
 public:
  explicit SysPrompt(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    vars_ = p.integer("vars", 4);
    gap_ = p.integer("gap", 64);
    p.require(vars_ >= 1 && vars_ <= 32, "vars", "must be in [1, 32]");
    p.require(gap_ >= 0, "gap", "must be ≥ 0");
    p.finish();
  }
  int64_t vocab_size() const override { return 128; }
  int64_t seq_len() const override { return 3 * vars_ + gap_ + 2; }
  double chance_uniform() const override { return 1.0 / 32; }
  double chance_informed() const override { return 1.0 / vars_; }
  Example sample(Rng& rng) const override {
    auto vars = distinct(rng, kKeyLo, kKeyHi, vars_);
    std::vector<int32_t> vals(vars_);
    for (auto& v : vals) v = (int32_t)rng.randint(kValLo, kValHi);
    Builder b;
    for (int64_t i = 0; i < vars_; ++i) {
      b.push(vars[i], kIgnoreIndex, 1);
      b.push(kMarkEq, kIgnoreIndex, 1);
      b.push(vals[i], kIgnoreIndex, 1);
    }
    b.noise(rng, gap_, 1);
    int64_t q = rng.randint(0, vars_);
    b.push(kMarkAsk, kIgnoreIndex, 0);
    b.push(vars[q], vals[q], 0);
    return b.e;
  }

 private:
  int64_t vars_, gap_;
};

// ---- multi-hop ---------------------------------------------------------------------------------
// `chains` chains of assignments a0 = x; a1 = a0; …; a_h = a_{h−1}, each written as
// [lhs EQ rhs]; the chains' statements interleave at random (each chain in order).
// The query [ASK a_h] of one chain is scored with its root value x.
class MultiHop : public Task {
 public:
  explicit MultiHop(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    hops_ = p.integer("hops", 2);
    chains_ = p.integer("chains", 2);
    p.require(hops_ >= 1, "hops", "must be ≥ 1");
    p.require(chains_ >= 1, "chains", "must be ≥ 1");
    p.require((hops_ + 1) * chains_ <= 32, "hops", "(hops+1)·chains must be ≤ 32 variables");
    p.finish();
  }
  int64_t vocab_size() const override { return 128; }
  int64_t seq_len() const override { return 3 * (hops_ + 1) * chains_ + 2; }
  double chance_uniform() const override { return 1.0 / 32; }
  double chance_informed() const override { return 1.0 / chains_; }
  Example sample(Rng& rng) const override {
    auto vars = distinct(rng, kKeyLo, kKeyHi, (hops_ + 1) * chains_);
    std::vector<int32_t> roots(chains_);
    for (auto& r : roots) r = (int32_t)rng.randint(kValLo, kValHi);
    // Interleave: a shuffled list with hops+1 copies of each chain id; the i-th
    // occurrence of chain c emits that chain's i-th statement.
    std::vector<int64_t> schedule;
    for (int64_t c = 0; c < chains_; ++c)
      for (int64_t i = 0; i <= hops_; ++i) schedule.push_back(c);
    shuffle(rng, schedule);
    std::vector<int64_t> next(chains_, 0);
    Builder b;
    for (int64_t c : schedule) {
      int64_t i = next[c]++;
      int32_t lhs = vars[c * (hops_ + 1) + i];
      int32_t rhs = i == 0 ? roots[c] : vars[c * (hops_ + 1) + i - 1];
      b.push(lhs, kIgnoreIndex, 1);
      b.push(kMarkEq, kIgnoreIndex, 1);
      b.push(rhs, kIgnoreIndex, 1);
    }
    int64_t q = rng.randint(0, chains_);
    b.push(kMarkAsk, kIgnoreIndex, 0);
    b.push(vars[q * (hops_ + 1) + hops_], roots[q], 0);
    return b.e;
  }

 private:
  int64_t hops_, chains_;
};

// ---- common word ---------------------------------------------------------------------------------
// A list of `len` words drawn from `words` distinct words in [0,64), one of which
// occurs strictly most often; then [ASK] scored with that word.
class CommonWord : public Task {
 public:
  explicit CommonWord(const TaskSpec& s) {
    spec_ = s;
    Params p(s);
    len_ = p.integer("len", 32);
    words_ = p.integer("words", 8);
    p.require(words_ >= 2 && words_ <= 64, "words", "must be in [2, 64]");
    p.require(len_ >= words_ + 2, "len", "must be ≥ words + 2");
    p.finish();
  }
  int64_t vocab_size() const override { return 128; }
  int64_t seq_len() const override { return len_ + 1; }
  double chance_uniform() const override { return 1.0 / 64; }
  double chance_informed() const override { return 1.0 / words_; }
  Example sample(Rng& rng) const override {
    auto words = distinct(rng, 0, 64, words_);
    std::vector<int32_t> list;
    for (int64_t i = 0; i < words_; ++i) list.push_back(words[i]);  // every word at least once
    while ((int64_t)list.size() < len_) list.push_back(words[rng.randint(0, words_)]);
    // Make words[0] the strict winner: move occurrences from the strongest rival.
    auto count = [&](int32_t w) { return (int64_t)std::count(list.begin(), list.end(), w); };
    for (;;) {
      int64_t best_rival = 0;
      int32_t rival = -1;
      for (int64_t i = 1; i < words_; ++i)
        if (count(words[i]) > best_rival) { best_rival = count(words[i]); rival = words[i]; }
      if (count(words[0]) > best_rival) break;
      *std::find(list.begin(), list.end(), rival) = words[0];
    }
    shuffle(rng, list);
    Builder b;
    for (int32_t w : list) b.push(w, kIgnoreIndex, 1);
    b.push(kMarkAsk, words[0], 0);
    return b.e;
  }

 private:
  int64_t len_, words_;
};

}  // namespace

TaskSpec TaskSpec::parse(const std::string& text) {
  TaskSpec s;
  auto colon = text.find(':');
  s.name = text.substr(0, colon);
  if (s.name.empty()) throw std::runtime_error("task spec '" + text + "': missing task name");
  if (colon == std::string::npos) return s;
  std::stringstream rest(text.substr(colon + 1));
  std::string item;
  while (std::getline(rest, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::runtime_error("task spec '" + text + "': expected key=value, got '" + item + "'");
    std::string key = item.substr(0, eq);
    if (s.params.count(key)) throw std::runtime_error("task spec '" + text + "': key '" + key + "' given twice");
    s.params[key] = item.substr(eq + 1);
  }
  return s;
}

std::string TaskSpec::str() const {
  std::string out = name;
  char sep = ':';
  for (const auto& kv : params) {
    out += sep + kv.first + "=" + kv.second;
    sep = ',';
  }
  return out;
}

static std::unique_ptr<Task> make_task_unchecked(const TaskSpec& s) {
  if (s.name == "mqar") return std::make_unique<Mqar>(s);
  if (s.name == "niah") return std::make_unique<Niah>(s);
  if (s.name == "tooltrace") return std::make_unique<ToolTrace>(s);
  if (s.name == "sysprompt") return std::make_unique<SysPrompt>(s);
  if (s.name == "multihop") return std::make_unique<MultiHop>(s);
  if (s.name == "commonword") return std::make_unique<CommonWord>(s);
  throw std::runtime_error("unknown task '" + s.name +
                           "' (known: mqar, niah, tooltrace, sysprompt, multihop, commonword)");
}

std::unique_ptr<Task> make_task(const TaskSpec& s) {
  auto task = make_task_unchecked(s);
  // A spec is a short string; every sample allocates seq_len tokens three times over.
  if (task->seq_len() > kMaxTaskSeqLen)
    throw std::runtime_error("task " + s.str() + ": sequence length " + std::to_string(task->seq_len()) +
                             " exceeds the limit " + std::to_string(kMaxTaskSeqLen));
  return task;
}

Batch make_batch(const std::vector<const Task*>& tasks, int64_t b, Rng& rng) {
  if (tasks.empty()) throw std::runtime_error("make_batch: no task given");
  std::vector<Example> ex;
  size_t T = 0;
  for (int64_t i = 0; i < b; ++i) {
    ex.push_back(tasks[i % tasks.size()]->sample(rng));
    T = std::max(T, ex.back().tokens.size());
  }
  std::vector<int64_t> tok(b * T, 0), tgt(b * T, kIgnoreIndex), msk(b * T, 0);
  for (int64_t i = 0; i < b; ++i)
    for (size_t t = 0; t < ex[i].tokens.size(); ++t) {
      tok[i * T + t] = ex[i].tokens[t];
      tgt[i * T + t] = ex[i].targets[t];
      msk[i * T + t] = ex[i].mask[t];
    }
  Shape s{b, (int64_t)T};
  return {Tensor::from_ints(tok, s), Tensor::from_ints(tgt, s), Tensor::from_ints(msk, s)};
}

std::vector<int64_t> scored_positions(const Example& e) {
  std::vector<int64_t> pos;
  for (size_t t = 0; t < e.targets.size(); ++t)
    if (e.targets[t] != kIgnoreIndex) pos.push_back((int64_t)t);
  return pos;
}

}  // namespace echo
