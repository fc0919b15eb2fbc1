// Next-token training data from token files (data/token_file.h): windows of
// seq_len + 1 consecutive tokens, split into tokens [0, T) and targets [1, T].
//
// Training windows start at positions drawn uniformly from the training part
// with the caller's Rng, so the loader's whole position is that Rng's state
// (which the trainer checkpoints: a resumed run draws the same windows). A
// window never crosses the end of a file or the boundary of the validation part.
//
// Validation: the files of `val_data`, or else the last `val_fraction` of the
// training tokens (counted over the files in sorted order) which training never
// touches. Its windows are fixed: consecutive non-overlapping windows (stride
// T) from the start of the validation part, thinned evenly to at most
// `max_val_windows`, the same at every evaluation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/random.h"
#include "data/tasks.h"
#include "data/token_file.h"

namespace echo {

struct TextDataOptions {
  std::string data;          // FILE or GLOB; empty for an evaluation-only set (val_data alone)
  std::string val_data;      // FILE or GLOB, or empty: the held-out tail
  double val_fraction = 0.01;
  int64_t seq_len = 256;
  int64_t vocab_size = 256;
  std::string raw_width = "auto";  // "auto" (default_raw_width), "u16" or "u32"
  int64_t max_val_windows = 256;
};

class TextData {
 public:
  // Opens, maps and checks every file; throws naming the flag, file or problem.
  explicit TextData(const TextDataOptions& options);

  int64_t seq_len() const { return seq_len_; }
  int64_t train_tokens() const;
  int64_t val_tokens() const;
  bool has_validation() const { return !val_starts_.empty(); }
  int64_t val_windows() const { return static_cast<int64_t>(val_starts_.size()); }
  std::string describe() const;  // one line per file and the split

  // b training windows drawn with `rng`: tokens and targets i32 [b,T], no mask.
  Batch train_batch(int64_t b, Rng& rng) const;
  // Validation windows [first, first + count).
  Batch val_batch(int64_t first, int64_t count) const;

  struct Segment {
    int file;
    int64_t begin, end;  // token indices [begin, end) of files_[file]
  };
  const std::vector<Segment>& train_segments() const { return train_; }
  const std::vector<Segment>& val_segments() const { return val_; }

 private:
  void window(int file, int64_t start, int32_t* tokens, int32_t* targets) const;
  int64_t seq_len_;
  std::vector<std::unique_ptr<MappedTokenFile>> files_;
  std::vector<Segment> train_, val_;
  std::vector<int64_t> train_cum_;  // cumulative window-start counts of train_
  std::vector<std::pair<int, int64_t>> val_starts_;
};

}  // namespace echo
