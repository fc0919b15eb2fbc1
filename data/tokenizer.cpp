#include "data/tokenizer.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace echo {

namespace {
uint32_t le32(const unsigned char* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
void put32(std::string& s, uint32_t v) {
  for (int b = 0; b < 4; ++b) s.push_back(static_cast<char>((v >> (8 * b)) & 0xFF));
}
}  // namespace

TokenizerTable TokenizerTable::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("--tokenizer " + path + ": cannot open the file");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 256 * 4)
    throw std::runtime_error("--tokenizer " + path + ": " + std::to_string(bytes.size()) +
                             " bytes, shorter than the 1024-byte header");
  const uint32_t magic = le32(p), version = le32(p + 4), vocab = le32(p + 8);
  if (magic != kTokenizerMagic)
    throw std::runtime_error("--tokenizer " + path + ": bad magic " + std::to_string(magic) + " (an llm.c tokenizer has " +
                             std::to_string(kTokenizerMagic) + ")");
  if (version != 1 && version != 2)
    throw std::runtime_error("--tokenizer " + path + ": unknown version " + std::to_string(version) + " (1 or 2)");
  TokenizerTable t;
  t.path_ = path;
  t.eot_ = version == 2 ? static_cast<int64_t>(le32(p + 12)) : -1;
  size_t at = 256 * 4;
  for (uint32_t i = 0; i < vocab; ++i) {
    if (at >= bytes.size())
      throw std::runtime_error("--tokenizer " + path + ": truncated at token " + std::to_string(i) + " of " +
                               std::to_string(vocab));
    const size_t len = p[at++];
    if (len == 0) throw std::runtime_error("--tokenizer " + path + ": token " + std::to_string(i) + " has length 0");
    if (at + len > bytes.size())
      throw std::runtime_error("--tokenizer " + path + ": truncated inside token " + std::to_string(i));
    t.pieces_.emplace_back(bytes.data() + at, len);
    at += len;
  }
  return t;
}

const std::string& TokenizerTable::piece(int64_t id) const {
  if (id < 0 || id >= size())
    throw std::runtime_error("tokenizer " + path_ + ": id " + std::to_string(id) + " outside its table of " +
                             std::to_string(size()));
  return pieces_[static_cast<size_t>(id)];
}

void write_tokenizer_table(const std::string& path, const std::vector<std::string>& pieces, int64_t eot) {
  std::string out;
  put32(out, kTokenizerMagic);
  put32(out, 2);
  put32(out, static_cast<uint32_t>(pieces.size()));
  put32(out, static_cast<uint32_t>(eot));
  out.resize(256 * 4, '\0');
  for (const auto& s : pieces) {
    if (s.empty() || s.size() > 255) throw std::runtime_error(path + ": token pieces must be 1..255 bytes");
    out.push_back(static_cast<char>(s.size()));
    out += s;
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << out;
  if (!f) throw std::runtime_error(path + ": write failed");
}

}  // namespace echo
