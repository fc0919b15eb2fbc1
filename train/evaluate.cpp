#include "train/evaluate.h"

#include <algorithm>

#include "autograd/tape.h"

namespace echo {

nlohmann::json EvalResult::to_json() const {
  return {{"task", task}, {"examples", examples}, {"scored", scored}, {"accuracy", accuracy},
          {"per_slot", per_slot}, {"chance_uniform", chance_uniform}, {"chance_informed", chance_informed}};
}

EvalResult evaluate(LanguageModel& model, const Task& task, int64_t examples, uint64_t seed, int64_t batch) {
  NoGrad no_grad;
  Rng rng(seed);
  EvalResult r;
  r.task = task.spec().str();
  r.chance_uniform = task.chance_uniform();
  r.chance_informed = task.chance_informed();
  std::vector<int64_t> slot_right, slot_total;
  int64_t right = 0;
  const Task* tasks[] = {&task};
  for (int64_t done = 0; done < examples; done += batch) {
    const int64_t b = std::min(batch, examples - done);
    Batch data = make_batch({tasks[0]}, b, rng);
    Tensor logits = model.forward(data.tokens.to(model.device()), data.mask.to(model.device()));
    const int64_t T = data.tokens.size(1), V = logits.size(2);
    auto lg = logits.to(Device::CPU).to(DType::F64).to_vector();
    auto tg = data.targets.to_int_vector();
    for (int64_t i = 0; i < b; ++i) {
      int64_t slot = 0;
      for (int64_t t = 0; t < T; ++t) {
        int64_t target = tg[i * T + t];
        if (target == kIgnoreIndex) continue;
        const double* row = lg.data() + (i * T + t) * V;
        int64_t best = std::max_element(row, row + V) - row;
        if ((int64_t)slot_total.size() <= slot) {
          slot_total.push_back(0);
          slot_right.push_back(0);
        }
        slot_total[slot]++;
        if (best == target) {
          slot_right[slot]++;
          right++;
        }
        r.scored++;
        slot++;
      }
    }
    r.examples += b;
  }
  r.accuracy = r.scored ? double(right) / r.scored : 0.0;
  for (size_t s = 0; s < slot_total.size(); ++s) r.per_slot.push_back(double(slot_right[s]) / slot_total[s]);
  return r;
}

}  // namespace echo
