// Plain token files: a flat array of token ids, each an unsigned little-endian
// integer of 2 bytes (uint16) or 4 bytes (uint32), no header. The width is not
// stored in the file, so the reader is told it; the vocabulary size is checked
// on every id so that a file meant for another tokenizer fails at load time with
// the offending position rather than later as an embedding index error.
#pragma once

#include <cstddef>
#include <cstdint>
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

// Byte-level tokenization: token = byte value, so the vocabulary is 256.
constexpr int64_t kByteVocab = 256;
std::vector<int32_t> tokenize_bytes(const std::string& bytes);

}  // namespace echo
