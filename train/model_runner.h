// The model runner behind `echo-lm forward` (spec §6.1) and the sampling loop
// behind `echo-lm generate` (spec §4).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/random.h"
#include "models/lm.h"

namespace echo {

struct ForwardFileOptions {
  Device device = Device::CPU;
  DType dtype = DType::F32;
};

// CK.h5 + IN.h5 (tokens [b,T], optional targets [b,T], optional mask [b,T]) ->
// OUT.h5 with logits [b,T,V] and, when targets are given, loss [1] and
// grad/<path> for every parameter. Written atomically; returns what was written.
std::vector<std::string> run_forward_files(const std::string& checkpoint, const std::string& tokens_path,
                                           const std::string& out_path, const ForwardFileOptions& options);

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  double temperature = 0;  // 0 = greedy
  int64_t top_k = 0;       // 0 = all
  double top_p = 1.0;      // nucleus: the smallest most-likely set whose probability reaches top_p (1 = all)
  uint64_t seed = 1;
  // Called with each new token as soon as it is sampled (streaming output).
  std::function<void(int64_t)> on_token;
};

struct GenerateResult {
  std::vector<int64_t> tokens;     // prompt + generated
  int64_t prompt_length = 0;
  double prompt_tokens_per_s = 0;  // prompt consumption (streamed, one token at a time)
  double new_tokens_per_s = 0;
  std::vector<int64_t> layer_state_bytes;
  int64_t state_bytes = 0;
};

// Streams the prompt through the recurrent state token by token, then samples.
GenerateResult generate(LanguageModel& model, const std::vector<int64_t>& prompt, const GenerateOptions& options);

// Samples one token from logits [V] (host doubles): greedy at temperature 0,
// else softmax(logits / T) restricted to the top_k largest, then to the
// smallest prefix of them (most likely first) whose probability mass reaches
// top_p, renormalised. One uniform draw per call.
int64_t sample_token(const std::vector<double>& logits, double temperature, int64_t top_k, Rng& rng,
                     double top_p = 1.0);

}  // namespace echo
