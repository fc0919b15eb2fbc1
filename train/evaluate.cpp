#include "train/evaluate.h"

#include <algorithm>
#include <cmath>

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

double TextEvalResult::perplexity() const { return std::exp(loss); }
double TextEvalResult::bits() const { return loss / std::log(2.0); }

nlohmann::json TextEvalResult::to_json() const {
  nlohmann::json j = {{"val_loss", loss}, {"val_perplexity", perplexity()}, {"val_tokens", tokens},
                      {"val_windows", windows}};
  j[byte_level ? "val_bpb" : "val_bits_per_token"] = bits();
  return j;
}

TextEvalResult evaluate_text(LanguageModel& model, const TextData& data, int64_t batch) {
  if (!data.has_validation()) throw std::runtime_error("evaluate: the data has no validation windows");
  NoGrad no_grad;
  TextEvalResult r;
  r.byte_level = model.config().vocab_size == kByteVocab;
  const int64_t n = data.val_windows(), T = data.seq_len();
  double total = 0;  // Σ per-token losses: the batch mean times its token count
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first);
    Batch b = data.val_batch(first, count);
    Tensor loss = model.loss(b.tokens, b.targets);
    total += loss.item() * static_cast<double>(count * T);
    r.tokens += count * T;
  }
  r.windows = n;
  r.loss = total / static_cast<double>(r.tokens);
  return r;
}

}  // namespace echo
