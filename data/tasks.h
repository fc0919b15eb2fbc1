// Synthetic tasks (spec §7), generated on the fly from a seeded Rng.
// docs/tasks.md gives each layout, an example sequence and the chance levels.
//
// Every example is a token sequence with next-token style targets: targets[t]
// is what the model must output at position t (−100 where nothing is scored),
// and mask[t] = 1 on the context (everything before the query block), the mask
// that SKA's prefix mode fits its operator on.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/random.h"
#include "autograd/tensor.h"

namespace echo {

constexpr int32_t kIgnoreIndex = -100;

struct Example {
  std::vector<int32_t> tokens, targets, mask;
};

struct Batch {
  Tensor tokens;   // i32 [b,T]
  Tensor targets;  // i32 [b,T], −100 unscored
  Tensor mask;     // i32 [b,T], 1 = context
};

// "name:key=value,key=value". Values are kept as strings; each task reads
// the keys it knows and rejects the rest.
struct TaskSpec {
  std::string name;
  std::map<std::string, std::string> params;
  static TaskSpec parse(const std::string& text);
  std::string str() const;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual Example sample(Rng& rng) const = 0;
  virtual int64_t vocab_size() const = 0;  // tokens are < this
  virtual int64_t seq_len() const = 0;
  // Accuracy of uniform guessing over the answer alphabet.
  virtual double chance_uniform() const = 0;
  // Accuracy of a model that learned the answer format but no binding
  // (e.g. guessing among the context's values in MQAR); equals chance_uniform
  // where no such shortcut exists.
  virtual double chance_informed() const { return chance_uniform(); }
  const TaskSpec& spec() const { return spec_; }

 protected:
  TaskSpec spec_;
};

// Throws naming the task or key on a bad spec: integer values must lie within
// int32, and the sequence length within kMaxTaskSeqLen.
constexpr int64_t kMaxTaskSeqLen = int64_t(1) << 24;
std::unique_ptr<Task> make_task(const TaskSpec& spec);
inline std::unique_ptr<Task> make_task(const std::string& text) { return make_task(TaskSpec::parse(text)); }

// b examples; each from tasks[i % tasks.size()] so a mixture is balanced.
// Shorter examples are right-padded (token 0, target −100, mask 0).
Batch make_batch(const std::vector<const Task*>& tasks, int64_t b, Rng& rng);

// Positions scored in an example, in order (slot i = i-th scored position).
std::vector<int64_t> scored_positions(const Example& e);

}  // namespace echo
