#include "data/token_file.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <algorithm>
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

TokenWidth default_raw_width(int64_t vocab_size) { return vocab_size <= 65536 ? TokenWidth::U16 : TokenWidth::U32; }

namespace {
inline uint64_t load_le(const uint8_t* p, size_t w) {
  return w == 2 ? (uint64_t(p[0]) | uint64_t(p[1]) << 8)
                : (uint64_t(p[0]) | uint64_t(p[1]) << 8 | uint64_t(p[2]) << 16 | uint64_t(p[3]) << 24);
}
inline int32_t load_i32(const uint8_t* p) { return static_cast<int32_t>(load_le(p, 4)); }
}  // namespace

std::unique_ptr<MappedTokenFile> MappedTokenFile::open(const std::string& path, TokenWidth raw_width,
                                                       int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > INT32_MAX)
    throw std::runtime_error(path + ": vocab_size must be in [1, 2^31-1], got " + std::to_string(vocab_size));
  std::unique_ptr<MappedTokenFile> f(new MappedTokenFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error(path + ": " + (errno == ENOENT ? std::string("no such file") : errno_text()));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": not a regular file");
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes == 0) {
    ::close(fd);
    throw std::runtime_error(path + ": empty file (no tokens)");
  }
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (m == MAP_FAILED) throw std::runtime_error(path + ": mmap failed: " + errno_text());
  f->map_ = static_cast<const uint8_t*>(m);
  f->map_bytes_ = bytes;
  ::madvise(m, bytes, MADV_RANDOM);  // windows at random positions: no read-ahead of whole files

  const int32_t magic = bytes >= 4 ? load_i32(f->map_) : 0;
  if (magic == kShardMagicU16 || magic == kShardMagicU32) {
    const bool u16 = magic == kShardMagicU16;
    const int32_t want_version = u16 ? kShardVersionU16 : kShardVersionU32;
    if (bytes < kShardHeaderBytes)
      throw std::runtime_error(path + ": llm.c shard header (magic " + std::to_string(magic) + ") is truncated: " +
                               std::to_string(bytes) + " bytes, the header alone is " +
                               std::to_string(kShardHeaderBytes));
    const int32_t version = load_i32(f->map_ + 4), count = load_i32(f->map_ + 8);
    if (version != want_version)
      throw std::runtime_error(path + ": bad llm.c shard header: magic " + std::to_string(magic) + " needs version " +
                               std::to_string(want_version) + ", got " + std::to_string(version));
    if (count < 0) throw std::runtime_error(path + ": bad llm.c shard header: token count " + std::to_string(count));
    f->width_ = u16 ? TokenWidth::U16 : TokenWidth::U32;
    const size_t w = static_cast<size_t>(f->width_);
    const size_t expect = kShardHeaderBytes + static_cast<size_t>(count) * w;
    if (bytes != expect)
      throw std::runtime_error(path + ": llm.c shard " + (bytes < expect ? "is truncated" : "has trailing bytes") +
                               ": the header says " + std::to_string(count) + " " + token_width_name(f->width_) +
                               " tokens (" + std::to_string(expect) + " bytes with the header), the file has " +
                               std::to_string(bytes) + " bytes");
    if (count == 0) throw std::runtime_error(path + ": llm.c shard holds no tokens");
    f->shard_ = true;
    f->tokens_ = f->map_ + kShardHeaderBytes;
    f->count_ = count;
  } else {
    f->width_ = raw_width;
    const size_t w = static_cast<size_t>(raw_width);
    if (bytes % w != 0)
      throw std::runtime_error(path + ": size " + std::to_string(bytes) + " bytes is not a multiple of " +
                               std::to_string(w) + " (raw " + width_label(raw_width) +
                               "); wrong width (--data-width) or a truncated file?");
    f->tokens_ = f->map_;
    f->count_ = static_cast<int64_t>(bytes / w);
  }
  // One pass over every id: a bad file fails here, not in the middle of training.
  const size_t w = static_cast<size_t>(f->width_);
  for (int64_t i = 0; i < f->count_; ++i) {
    const uint64_t id = load_le(f->tokens_ + static_cast<size_t>(i) * w, w);
    if (id >= static_cast<uint64_t>(vocab_size))
      throw std::runtime_error(path + ": token " + std::to_string(id) + " at index " + std::to_string(i) +
                               " is out of range for vocab_size " + std::to_string(vocab_size));
  }
  return f;
}

MappedTokenFile::~MappedTokenFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_bytes_);
}

std::string MappedTokenFile::describe() const {
  return path_ + ": " + (shard_ ? "llm.c shard" : "raw") + ", " + std::to_string(count_) + " " +
         token_width_name(width_) + " tokens";
}

int32_t MappedTokenFile::at(int64_t i) const {
  if (i < 0 || i >= count_)
    throw std::runtime_error(path_ + ": token index " + std::to_string(i) + " outside [0, " +
                             std::to_string(count_) + ")");
  return static_cast<int32_t>(load_le(tokens_ + static_cast<size_t>(i) * static_cast<size_t>(width_),
                                      static_cast<size_t>(width_)));
}

void MappedTokenFile::read(int64_t begin, int64_t n, int32_t* out) const {
  if (begin < 0 || n < 0 || begin + n > count_)
    throw std::runtime_error(path_ + ": tokens [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                             ") outside [0, " + std::to_string(count_) + ")");
  const size_t w = static_cast<size_t>(width_);
  const uint8_t* p = tokens_ + static_cast<size_t>(begin) * w;
  for (int64_t k = 0; k < n; ++k) out[k] = static_cast<int32_t>(load_le(p + static_cast<size_t>(k) * w, w));
}

std::vector<std::string> expand_token_glob(const std::string& pattern, const std::string& flag) {
  if (pattern.empty()) throw std::runtime_error(flag + ": empty path");
  if (pattern.find_first_of("*?[") == std::string::npos) return {pattern};
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || out.empty()) throw std::runtime_error(flag + " " + pattern + ": no file matches");
  if (rc != 0) throw std::runtime_error(flag + " " + pattern + ": glob failed");
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int32_t> tokenize_bytes(const std::string& bytes) {
  std::vector<int32_t> out(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) out[i] = static_cast<unsigned char>(bytes[i]);
  return out;
}

}  // namespace echo
