#include "data/text_data.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace echo {

namespace {

TokenWidth resolve_width(const std::string& text, int64_t vocab) {
  if (text == "auto") return default_raw_width(vocab);
  return parse_token_width(text);
}

int64_t starts_in(const TextData::Segment& s, int64_t T) { return std::max<int64_t>(0, s.end - s.begin - T); }

}  // namespace

TextData::TextData(const TextDataOptions& o) : seq_len_(o.seq_len) {
  if (o.seq_len < 1) throw std::runtime_error("--seq-len must be >= 1, got " + std::to_string(o.seq_len));
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw std::runtime_error("--val-fraction must be in [0, 1), got " + std::to_string(o.val_fraction));
  const TokenWidth width = resolve_width(o.raw_width, o.vocab_size);
  const int64_t T = o.seq_len;
  if (o.data.empty() && o.val_data.empty()) throw std::runtime_error("--data FILE|GLOB is required");
  // Training files, in sorted order (none for an evaluation-only set).
  if (!o.data.empty())
    for (const auto& path : expand_token_glob(o.data, "--data"))
    files_.push_back(MappedTokenFile::open(path, width, o.vocab_size));
  int64_t total = 0;
  for (const auto& f : files_) total += f->size();
  int64_t n_val = 0;
  if (o.val_data.empty() && o.val_fraction > 0)
    n_val = std::min<int64_t>(total, static_cast<int64_t>(std::ceil(o.val_fraction * static_cast<double>(total))));
  // The held-out tail: the last n_val tokens of the concatenated training files.
  int64_t before = 0;
  for (size_t i = 0; i < files_.size(); ++i) {
    const int64_t n = files_[i]->size(), split = std::clamp(total - n_val - before, int64_t(0), n);
    if (split > 0) train_.push_back({static_cast<int>(i), 0, split});
    if (split < n) val_.push_back({static_cast<int>(i), split, n});
    before += n;
  }
  if (!o.val_data.empty()) {
    for (const auto& path : expand_token_glob(o.val_data, "--val-data")) {
      files_.push_back(MappedTokenFile::open(path, width, o.vocab_size));
      val_.push_back({static_cast<int>(files_.size() - 1), 0, files_.back()->size()});
    }
  }
  int64_t cum = 0;
  for (const auto& s : train_) train_cum_.push_back(cum += starts_in(s, T));
  if (cum == 0 && !o.data.empty())
    throw std::runtime_error("--data " + o.data + ": the training part (" + std::to_string(train_tokens()) +
                             " tokens) has no window of seq_len+1 = " + std::to_string(T + 1) +
                             " tokens inside one file; lower --seq-len or give more data");
  std::vector<std::pair<int, int64_t>> all;
  for (const auto& s : val_)
    for (int64_t p = s.begin; p + T + 1 <= s.end; p += T) all.push_back({s.file, p});
  if (all.empty() && (!o.val_data.empty() || o.val_fraction > 0))
    throw std::runtime_error(std::string(o.val_data.empty() ? "--val-fraction" : "--val-data") +
                             ": the validation part holds " + std::to_string(val_tokens()) +
                             " tokens, no window of seq_len+1 = " + std::to_string(T + 1) +
                             " inside one file; lower --seq-len, raise --val-fraction or give more data");
  const int64_t n_all = static_cast<int64_t>(all.size()), keep = std::min<int64_t>(n_all, o.max_val_windows);
  if (keep < 1 && n_all > 0) throw std::runtime_error("the number of validation windows must be >= 1");
  // Evenly thinned: window ⌊k·n/keep⌋ for k < keep (all of them when keep = n).
  for (int64_t k = 0; k < keep; ++k) val_starts_.push_back(all[static_cast<size_t>(k * n_all / keep)]);
}

int64_t TextData::train_tokens() const {
  int64_t n = 0;
  for (const auto& s : train_) n += s.end - s.begin;
  return n;
}

int64_t TextData::val_tokens() const {
  int64_t n = 0;
  for (const auto& s : val_) n += s.end - s.begin;
  return n;
}

std::string TextData::describe() const {
  std::ostringstream o;
  for (const auto& f : files_) o << f->describe() << "\n";
  o << "training tokens " << train_tokens() << ", validation tokens " << val_tokens() << " (" << val_windows()
    << " fixed windows of " << seq_len_ << ")";
  return o.str();
}

void TextData::window(int file, int64_t start, int32_t* tokens, int32_t* targets) const {
  std::vector<int32_t> w(static_cast<size_t>(seq_len_ + 1));
  files_[static_cast<size_t>(file)]->read(start, seq_len_ + 1, w.data());
  std::copy(w.begin(), w.end() - 1, tokens);
  std::copy(w.begin() + 1, w.end(), targets);
}

Batch TextData::train_batch(int64_t b, Rng& rng) const {
  if (train_cum_.empty() || train_cum_.back() == 0) throw std::runtime_error("text data: no training part");
  const int64_t T = seq_len_;
  std::vector<int64_t> tokens(static_cast<size_t>(b * T)), targets(static_cast<size_t>(b * T));
  std::vector<int32_t> tk(static_cast<size_t>(T)), tg(static_cast<size_t>(T));
  for (int64_t i = 0; i < b; ++i) {
    // One uniform draw over all window starts of the training part.
    const int64_t u = rng.randint(0, train_cum_.back());
    const size_t s = static_cast<size_t>(std::upper_bound(train_cum_.begin(), train_cum_.end(), u) - train_cum_.begin());
    const int64_t offset = u - (s == 0 ? 0 : train_cum_[s - 1]);
    window(train_[s].file, train_[s].begin + offset, tk.data(), tg.data());
    std::copy(tk.begin(), tk.end(), tokens.begin() + i * T);
    std::copy(tg.begin(), tg.end(), targets.begin() + i * T);
  }
  return {Tensor::from_ints(tokens, {b, T}, DType::I32), Tensor::from_ints(targets, {b, T}, DType::I32), Tensor()};
}

Batch TextData::val_batch(int64_t first, int64_t count) const {
  if (first < 0 || count < 1 || first + count > val_windows())
    throw std::runtime_error("validation windows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                             ") outside [0, " + std::to_string(val_windows()) + ")");
  const int64_t T = seq_len_;
  std::vector<int64_t> tokens(static_cast<size_t>(count * T)), targets(static_cast<size_t>(count * T));
  std::vector<int32_t> tk(static_cast<size_t>(T)), tg(static_cast<size_t>(T));
  for (int64_t i = 0; i < count; ++i) {
    const auto& [file, start] = val_starts_[static_cast<size_t>(first + i)];
    window(file, start, tk.data(), tg.data());
    std::copy(tk.begin(), tk.end(), tokens.begin() + i * T);
    std::copy(tg.begin(), tg.end(), targets.begin() + i * T);
  }
  return {Tensor::from_ints(tokens, {count, T}, DType::I32), Tensor::from_ints(targets, {count, T}, DType::I32),
          Tensor()};
}

}  // namespace echo
