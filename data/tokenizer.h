// Decoding token ids to bytes.
//  - byte level (vocab 256): id = byte value.
//  - llm.c tokenizer files (the table its GPT-2 trainer reads): a header of 256
//    little-endian uint32 (magic 20240328, version 1 or 2, vocab size, and for
//    version 2 the end-of-text id), then for each id in order one uint8 length
//    L ≥ 1 and L bytes. No encoder: prompts for such vocabularies are given as ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace echo {

constexpr uint32_t kTokenizerMagic = 20240328;

class TokenizerTable {
 public:
  // Reads and checks the whole file (errors name the file and the problem).
  static TokenizerTable load(const std::string& path);
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  int64_t eot() const { return eot_; }  // −1 when the file has none (version 1)
  // The bytes of one id (an error naming the id when outside the table).
  const std::string& piece(int64_t id) const;

 private:
  std::vector<std::string> pieces_;
  int64_t eot_ = -1;
  std::string path_;
};

// Writes an llm.c-format table (version 2) atomically-enough for tests.
void write_tokenizer_table(const std::string& path, const std::vector<std::string>& pieces, int64_t eot);

}  // namespace echo
