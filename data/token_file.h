// Token files. Two layouts:
//  - raw: a flat array of token ids, each an unsigned little-endian integer of
//    2 bytes (uint16) or 4 bytes (uint32), no header (nanoGPT's train.bin). The
//    width is not stored in the file, so the reader is told it.
//  - llm.c shards: a header of 256 little-endian int32 (magic, version, token
//    count, the rest unused), then the tokens. Magic 20240520 with version 1:
//    uint16 tokens (GPT-2); magic 20240801 with version 7: uint32 tokens
//    (LLaMA-3). A file whose first int32 is one of these magics is read as a
//    shard and its header is checked (version, and a size that matches the
//    count exactly); any other file is raw.
// The vocabulary size is checked on every id so that a file meant for another
// tokenizer fails at load time with the offending position rather than later as
// an embedding index error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace echo {

enum class TokenWidth { U16 = 2, U32 = 4 };

// "u16" / "u32" (also "uint16" / "uint32"); throws naming the text otherwise.
TokenWidth parse_token_width(const std::string& text);
const char* token_width_name(TokenWidth width);  // "uint16" / "uint32"

// Decodes `size` bytes of ids. `label` prefixes every error (usually the path).
// Errors: a size that is not a multiple of the width; an id ≥ vocab_size (names
// the index and the id); vocab_size outside [1, 2^31 − 1].
std::vector<int32_t> decode_tokens(const uint8_t* data, size_t size, TokenWidth width, int64_t vocab_size,
                                   const std::string& label);

// Reads a whole token file ("PATH: no such file", plus the errors above).
std::vector<int32_t> read_token_file(const std::string& path, TokenWidth width, int64_t vocab_size);

// Writes ids atomically (temporary file + rename); every id must fit the width.
void write_token_file(const std::string& path, const std::vector<int32_t>& tokens, TokenWidth width);

// ---- memory-mapped token files (training data) ---------------------------------

constexpr int32_t kShardMagicU16 = 20240520, kShardVersionU16 = 1;
constexpr int32_t kShardMagicU32 = 20240801, kShardVersionU32 = 7;
constexpr size_t kShardHeaderBytes = 256 * 4;

// The width of raw files when none is given: uint16 when every id of the
// vocabulary fits (vocab_size ≤ 65536), else uint32.
TokenWidth default_raw_width(int64_t vocab_size);

// A token file mapped read-only into memory (never read whole): the pages a
// window touches are loaded on demand. open() detects the layout, checks the
// header and the size, and scans every id once against vocab_size (the error
// names the file, the id and its index).
class MappedTokenFile {
 public:
  static std::unique_ptr<MappedTokenFile> open(const std::string& path, TokenWidth raw_width, int64_t vocab_size);
  ~MappedTokenFile();
  MappedTokenFile(const MappedTokenFile&) = delete;
  MappedTokenFile& operator=(const MappedTokenFile&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }    // tokens
  TokenWidth width() const { return width_; }
  bool is_shard() const { return shard_; }
  std::string describe() const;              // "PATH: llm.c shard, 1000 uint16 tokens"
  int32_t at(int64_t i) const;
  // out[k] = token (begin + k) for k < n; [begin, begin + n) must lie in the file.
  void read(int64_t begin, int64_t n, int32_t* out) const;

 private:
  MappedTokenFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint8_t* tokens_ = nullptr;
  int64_t count_ = 0;
  TokenWidth width_ = TokenWidth::U16;
  bool shard_ = false;
};

// FILE or GLOB (with * ? [...]) -> the matching paths in sorted order; a plain
// path is returned as is (open() reports a missing file). A glob that matches
// nothing is an error naming it; `flag` prefixes the message.
std::vector<std::string> expand_token_glob(const std::string& pattern, const std::string& flag);

// Byte-level tokenization: token = byte value, so the vocabulary is 256.
constexpr int64_t kByteVocab = 256;
std::vector<int32_t> tokenize_bytes(const std::string& bytes);

}  // namespace echo
