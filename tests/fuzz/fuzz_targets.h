// The fuzz targets' bodies, shared by the libFuzzer entry points
// (tests/fuzz/fuzz_<target>.cpp, built by scripts/fuzz.sh) and by the ordinary
// test that replays the seed corpora and every crash found so far
// (tests/reliability/test_fuzz_regressions.cpp, run in CI and under ASan/UBSan).
//
// Contract of every target: any input either parses or is refused with a
// std::runtime_error (or another std::exception); nothing else is acceptable — no
// crash, no sanitizer report, no allocation beyond what the input justifies.
// Where a target accepts an input it also checks a property of the result
// (round trip, ranges) and aborts when it fails, so the fuzzer reports it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "data/tasks.h"
#include "data/token_file.h"
#include "models/config.h"
#include "models/lm.h"
#include "ops/runner.h"
#include "train/checkpoint.h"
#include "train/op_runner.h"

namespace echo::fuzz {

// Aborts with a message: the fuzzer (and the regression test, via a death) sees it.
[[noreturn]] inline void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
  std::abort();
}

// A per-process scratch file: the targets whose readers take a path write the
// input there first. Under $TMPDIR (or /tmp); removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& suffix) {
    const char* base = std::getenv("TMPDIR");
    path_ = std::string(base && *base ? base : "/tmp") + "/echo_fuzz_" + std::to_string(::getpid()) + "_" + suffix;
  }
  ~ScratchFile() { ::unlink(path_.c_str()); }
  const std::string& write(const uint8_t* data, size_t size) {
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) violated("cannot create scratch file " + path_);
    if (size > 0 && std::fwrite(data, 1, size, f) != size) violated("cannot write scratch file " + path_);
    std::fclose(f);
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The HDF5 preflight (h5::File::preflight) turns a crash or hang inside libhdf5
// into an error ("PATH: libhdf5 crashed (SIGSEGV) while parsing this file ...").
// With $ECHO_FUZZ_PREFLIGHT_LOG set, each such error appends one line (the
// message without the path) to that file, so that scripts/fuzz.sh can count
// what the preflight caught; fuzzing jobs run in separate processes, hence a file.
inline void note_preflight(const std::exception& e, const std::string& path) {
  static const char* log = std::getenv("ECHO_FUZZ_PREFLIGHT_LOG");
  if (!log || !*log) return;
  const std::string what = e.what();
  if (what.compare(0, path.size() + 10, path + ": libhdf5 ") != 0) return;
  const std::string line = what.substr(path.size() + 2) + "\n";
  const int fd = ::open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (::write(fd, line.data(), line.size()) < 0) {
  }
  ::close(fd);
}

// ---- checkpoint: an HDF5 file given to read_checkpoint_header, then load_model ----
inline int checkpoint(const uint8_t* data, size_t size) {
  static ScratchFile file("ckpt.h5");
  const std::string& path = file.write(data, size);
  CheckpointContents header;
  try {
    header = read_checkpoint_header(path);
  } catch (const std::exception& e) {
    note_preflight(e, path);
    return 0;
  }
  try {
    std::unique_ptr<LanguageModel> model = load_model(path);
    // What loaded is the model the file's config describes, every value finite.
    if (model->config().to_json() != parse_config(header.config).to_json())
      violated("load_model built a model whose config differs from the file's");
    for (const auto& p : model->params().all())
      for (double v : p.tensor.to_vector())
        if (!std::isfinite(v)) violated("load_model accepted a non-finite value in " + p.name);
  } catch (const std::exception& e) {
    note_preflight(e, path);
  }
  return 0;
}

// ---- config: JSON text given to parse_config_text --------------------------------
inline int config(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ModelConfig c;
  try {
    c = parse_config_text(text);
  } catch (const std::exception&) {
    return 0;
  }
  // An accepted config survives the round trip through its JSON unchanged.
  nlohmann::json j = c.to_json();
  ModelConfig again;
  try {
    again = parse_config(j);
  } catch (const std::exception& e) {
    violated(std::string("an accepted config does not re-parse: ") + e.what() + " in " + j.dump());
  }
  if (again.to_json() != j) violated("config round trip changed " + j.dump());
  return 0;
}

// ---- op runner: first byte picks the op, the rest is IN.h5 for run_op_files -------
inline int op_runner(const uint8_t* data, size_t size) {
  static ScratchFile in("op_in.h5"), out("op_out.h5");
  const auto& ops = runner_ops();
  if (size < 1 || ops.empty()) return 0;
  const RunnerOp& op = ops[data[0] % ops.size()];
  const std::string& in_path = in.write(data + 1, size - 1);
  try {
    run_op_files(op, in_path, out.path());
  } catch (const std::exception& e) {
    note_preflight(e, in_path);
  }
  return 0;
}

// ---- task specs: text given to make_task, then one example sampled ----------------
inline int task_spec(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<Task> task;
  try {
    task = make_task(text);
  } catch (const std::exception&) {
    return 0;
  }
  const int64_t T = task->seq_len(), V = task->vocab_size();
  if (T < 1 || V < 1) violated("task " + text + " accepted with seq_len " + std::to_string(T) + ", vocab " +
                               std::to_string(V));
  if (T > 4096) return 0;  // valid but long: sampling is the task tests' business, not the parser's
  Rng rng(1);
  Example e;
  try {
    e = task->sample(rng);
  } catch (const std::exception& ex) {
    violated("task " + text + " was accepted but sampling failed: " + ex.what());
  }
  if ((int64_t)e.tokens.size() != T || e.targets.size() != e.tokens.size() || e.mask.size() != e.tokens.size())
    violated("task " + text + ": example length differs from seq_len");
  bool scored = false;
  for (size_t t = 0; t < e.tokens.size(); ++t) {
    if (e.tokens[t] < 0 || e.tokens[t] >= V) violated("task " + text + ": token out of range");
    if (e.targets[t] != kIgnoreIndex && (e.targets[t] < 0 || e.targets[t] >= V))
      violated("task " + text + ": target out of range");
    scored = scored || e.targets[t] != kIgnoreIndex;
  }
  if (!scored) violated("task " + text + ": an example with nothing scored");
  return 0;
}

// ---- token files: byte 0 picks the width, bytes 1-2 the vocab, the rest is the file --
inline int token_file(const uint8_t* data, size_t size) {
  static ScratchFile file("tokens.bin");
  if (size < 3) return 0;
  const TokenWidth width = (data[0] & 1) ? TokenWidth::U32 : TokenWidth::U16;
  const int64_t vocab = int64_t(data[1]) | int64_t(data[2]) << 8;  // 0 is refused: a case too
  const std::string& path = file.write(data + 3, size - 3);
  std::vector<int32_t> tokens;
  try {
    tokens = read_token_file(path, width, vocab);
  } catch (const std::exception&) {
    return 0;
  }
  const size_t w = static_cast<size_t>(width);
  if (tokens.size() * w != size - 3) violated("token count does not match the file size");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) violated("token out of range accepted");
    uint64_t raw = 0;
    for (size_t b = 0; b < w; ++b) raw |= uint64_t(data[3 + i * w + b]) << (8 * b);
    if (raw != uint64_t(tokens[i])) violated("token decoded wrongly");
  }
  return 0;
}

}  // namespace echo::fuzz
