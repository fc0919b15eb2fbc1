#include "data/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

namespace echo {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string width_label(TokenWidth w) {
  return std::string(token_width_name(w)) + " tokens, " + std::to_string(static_cast<int>(w)) + " bytes each";
}

// Writes all of `size` bytes, retrying short writes and EINTR.
void write_all(int fd, const uint8_t* data, size_t size, const std::string& label) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(label + ": write failed: " + errno_text());
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

TokenWidth parse_token_width(const std::string& text) {
  if (text == "u16" || text == "uint16") return TokenWidth::U16;
  if (text == "u32" || text == "uint32") return TokenWidth::U32;
  throw std::runtime_error("token width must be u16 or u32, got '" + text + "'");
}

const char* token_width_name(TokenWidth width) { return width == TokenWidth::U16 ? "uint16" : "uint32"; }

std::vector<int32_t> decode_tokens(const uint8_t* data, size_t size, TokenWidth width, int64_t vocab_size,
                                   const std::string& label) {
  if (vocab_size < 1 || vocab_size > INT32_MAX)
    throw std::runtime_error(label + ": vocab_size must be in [1, 2^31-1], got " + std::to_string(vocab_size));
  const size_t w = static_cast<size_t>(width);
  if (size % w != 0)
    throw std::runtime_error(label + ": size " + std::to_string(size) + " bytes is not a multiple of " +
                             std::to_string(w) + " (" + width_label(width) + "); wrong width or a truncated file?");
  const size_t n = size / w;
  std::vector<int32_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = data + i * w;
    // Little-endian by construction, whatever the host's byte order.
    uint64_t id = w == 2 ? (uint64_t(p[0]) | uint64_t(p[1]) << 8)
                         : (uint64_t(p[0]) | uint64_t(p[1]) << 8 | uint64_t(p[2]) << 16 | uint64_t(p[3]) << 24);
    if (id >= static_cast<uint64_t>(vocab_size))
      throw std::runtime_error(label + ": token " + std::to_string(id) + " at index " + std::to_string(i) +
                               " is out of range for vocab_size " + std::to_string(vocab_size));
    out[i] = static_cast<int32_t>(id);
  }
  return out;
}

std::vector<int32_t> read_token_file(const std::string& path, TokenWidth width, int64_t vocab_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error(path + ": " + (errno == ENOENT ? std::string("no such file") : errno_text()));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": not a regular file");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string e = errno_text();
      ::close(fd);
      throw std::runtime_error(path + ": read failed: " + e);
    }
    if (n == 0) break;  // shrank while we read: decode what is there
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return decode_tokens(bytes.data(), got, width, vocab_size, path);
}

void write_token_file(const std::string& path, const std::vector<int32_t>& tokens, TokenWidth width) {
  const size_t w = static_cast<size_t>(width);
  const int64_t limit = width == TokenWidth::U16 ? 65536 : (int64_t(1) << 32);
  std::vector<uint8_t> bytes(tokens.size() * w);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t id = tokens[i];
    if (id < 0 || id >= limit)
      throw std::runtime_error(path + ": token " + std::to_string(id) + " at index " + std::to_string(i) +
                               " does not fit " + token_width_name(width));
    for (size_t b = 0; b < w; ++b) bytes[i * w + b] = static_cast<uint8_t>(uint64_t(id) >> (8 * b));
  }
  // Temporary file in the same directory, then rename: a reader never sees half a file.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw std::runtime_error(path + ": cannot create " + tmp + ": " + errno_text());
  try {
    write_all(fd, bytes.data(), bytes.size(), path);
    if (::fsync(fd) != 0) throw std::runtime_error(path + ": fsync failed: " + errno_text());
    if (::close(fd) != 0) {
      fd = -1;
      throw std::runtime_error(path + ": close failed: " + errno_text());
    }
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(path + ": cannot move the new file into place: " + errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

std::vector<int32_t> tokenize_bytes(const std::string& bytes) {
  std::vector<int32_t> out(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) out[i] = static_cast<unsigned char>(bytes[i]);
  return out;
}

}  // namespace echo
