// `echo-lm data`: token files (data/token_file.h).
//   data tokenize --bytes FILE --out OUT.bin   byte-level uint16 tokens (vocab 256)
//   data check FILE --vocab V [--width u16|u32] reads a token file and reports it
//   data unigram --train A --eval B [--vocab V]  the bits of a unigram baseline
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "data/token_file.h"
#include "train/cli.h"

namespace echo::cli {

namespace {

struct TokenizeArgs {
  std::string bytes, out;
};
struct UnigramArgs {
  std::string train, eval, width = "auto";
  int64_t vocab = kByteVocab;
};
struct CheckArgs {
  std::string file, width = "u16";
  int64_t vocab = 0;
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("--bytes " + path + ": cannot open the file");
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw std::runtime_error("--bytes " + path + ": read failed");
  return ss.str();
}

}  // namespace

void add_data_commands(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Token files: plain little-endian uint16/uint32 ids, no header.");
  data->require_subcommand(1);

  auto ta = std::make_shared<TokenizeArgs>();
  CLI::App* tok = data->add_subcommand("tokenize", "Byte-level tokenization: each byte of FILE becomes one uint16 "
                                                   "token equal to its value (vocab 256).");
  tok->add_option("--bytes", ta->bytes, "input file, read as raw bytes")->required();
  tok->add_option("--out", ta->out, "token file to write (uint16 little-endian, atomically)")->required();
  tok->callback([ta] {
    std::vector<int32_t> tokens = tokenize_bytes(read_bytes(ta->bytes));
    write_token_file(ta->out, tokens, TokenWidth::U16);
    std::cout << "wrote " << tokens.size() << " uint16 tokens (vocab " << kByteVocab << ") to " << ta->out << "\n";
  });

  auto ua = std::make_shared<UnigramArgs>();
  CLI::App* uni = data->add_subcommand(
      "unigram", "Baseline: bits per token (per byte for vocab 256) on --eval of a unigram model fitted on --train: "
                 "p(id) = (count(id) + 1) / (N + V), add-one smoothed so that unseen ids cost finite bits.");
  uni->add_option("--train", ua->train, "token file the frequencies are counted on")->required();
  uni->add_option("--eval", ua->eval, "token file scored (default: --train itself)");
  uni->add_option("--vocab", ua->vocab, "vocabulary size V")->capture_default_str();
  uni->add_option("--width", ua->width, "bytes per id of raw files: auto (u16 if V <= 65536), u16, u32")
      ->capture_default_str();
  uni->callback([ua] {
    const TokenWidth w = ua->width == "auto" ? default_raw_width(ua->vocab) : parse_token_width(ua->width);
    auto train = MappedTokenFile::open(ua->train, w, ua->vocab);
    std::vector<double> count(static_cast<size_t>(ua->vocab), 0.0);
    std::vector<int32_t> buf(1 << 16);
    for (int64_t i = 0; i < train->size(); i += static_cast<int64_t>(buf.size())) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(buf.size()), train->size() - i);
      train->read(i, n, buf.data());
      for (int64_t k = 0; k < n; ++k) count[static_cast<size_t>(buf[k])] += 1;
    }
    auto eval = MappedTokenFile::open(ua->eval.empty() ? ua->train : ua->eval, w, ua->vocab);
    const double denom = static_cast<double>(train->size() + ua->vocab);
    double bits = 0;
    for (int64_t i = 0; i < eval->size(); i += static_cast<int64_t>(buf.size())) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(buf.size()), eval->size() - i);
      eval->read(i, n, buf.data());
      for (int64_t k = 0; k < n; ++k) bits -= std::log2((count[static_cast<size_t>(buf[k])] + 1) / denom);
    }
    bits /= static_cast<double>(eval->size());
    std::cout << "unigram baseline: " << std::fixed << std::setprecision(4) << bits
              << (ua->vocab == kByteVocab ? " bits per byte" : " bits per token") << " on " << eval->size()
              << " tokens (fitted on " << train->size() << ")\n";
  });

  auto ca = std::make_shared<CheckArgs>();
  CLI::App* check = data->add_subcommand("check", "Read a token file and report its length and largest id; "
                                                  "errors name a bad size or the first id ≥ --vocab.");
  check->add_option("file", ca->file, "token file")->required();
  check->add_option("--vocab", ca->vocab, "vocabulary size: every id must be below it")->required();
  check->add_option("--width", ca->width, "bytes per id: u16 or u32")->capture_default_str();
  check->callback([ca] {
    std::vector<int32_t> tokens = read_token_file(ca->file, parse_token_width(ca->width), ca->vocab);
    int32_t max_id = -1;
    for (int32_t t : tokens) max_id = std::max(max_id, t);
    std::cout << ca->file << ": " << tokens.size() << " " << token_width_name(parse_token_width(ca->width))
              << " tokens, largest id " << max_id << " (vocab " << ca->vocab << ")\n";
  });
}

}  // namespace echo::cli
