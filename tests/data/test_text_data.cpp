// Token files (raw uint16/uint32 and llm.c shards, memory-mapped, globs) and the
// text loader: windows drawn by seed, the held-out tail, fixed validation windows.
#include <fstream>

#include "data/text_data.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

// An llm.c shard: 256 int32 header (magic, version, count), then the ids.
void write_shard(const std::string& path, int32_t magic, int32_t version, const std::vector<int32_t>& ids,
                 int64_t drop_bytes = 0, int32_t count_override = -1) {
  std::string bytes(1024, '\0');
  auto put = [&](size_t at, uint32_t v) {
    for (int b = 0; b < 4; ++b) bytes[at + b] = static_cast<char>((v >> (8 * b)) & 0xFF);
  };
  put(0, static_cast<uint32_t>(magic));
  put(4, static_cast<uint32_t>(version));
  put(8, static_cast<uint32_t>(count_override >= 0 ? count_override : static_cast<int32_t>(ids.size())));
  const int w = magic == kShardMagicU16 ? 2 : 4;
  for (int32_t id : ids)
    for (int b = 0; b < w; ++b) bytes.push_back(static_cast<char>((uint32_t(id) >> (8 * b)) & 0xFF));
  bytes.resize(bytes.size() - static_cast<size_t>(drop_bytes));
  std::ofstream(path, std::ios::binary) << bytes;
}

std::vector<int32_t> all_tokens(const MappedTokenFile& f) {
  std::vector<int32_t> out(static_cast<size_t>(f.size()));
  f.read(0, f.size(), out.data());
  return out;
}

std::vector<int32_t> iota_ids(int64_t n, int32_t mod, int32_t offset = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = offset + static_cast<int32_t>(i % mod);
  return v;
}

}  // namespace

TEST(TokenFiles, RawUint16AndUint32AreMappedAndReadBack) {
  TempDir d;
  std::vector<int32_t> ids = {0, 1, 65535, 300, 7};
  write_token_file(d.file("a.bin"), ids, TokenWidth::U16);
  auto f = MappedTokenFile::open(d.file("a.bin"), TokenWidth::U16, 65536);
  EXPECT_FALSE(f->is_shard());
  EXPECT_EQ(all_tokens(*f), ids);
  EXPECT_EQ(f->at(2), 65535);
  std::vector<int32_t> big = {0, 70000, 1 << 30, 5};
  write_token_file(d.file("b.bin"), big, TokenWidth::U32);
  auto g = MappedTokenFile::open(d.file("b.bin"), TokenWidth::U32, (int64_t(1) << 31) - 1);
  EXPECT_EQ(all_tokens(*g), big);
  // The width rule of raw files.
  EXPECT_EQ(default_raw_width(65536), TokenWidth::U16);
  EXPECT_EQ(default_raw_width(65537), TokenWidth::U32);
  // A uint32 file read as uint16 with an odd byte count is named.
  std::ofstream(d.file("odd.bin"), std::ios::binary) << std::string("abc");
  EXPECT_TRUE(has(error_of([&] { MappedTokenFile::open(d.file("odd.bin"), TokenWidth::U16, 65536); }),
                  "not a multiple of 2"));
}

TEST(TokenFiles, LlmcShardsAreDetectedByTheirHeader) {
  TempDir d;
  std::vector<int32_t> ids = {1, 2, 50256, 3};
  write_shard(d.file("gpt2.bin"), kShardMagicU16, kShardVersionU16, ids);
  auto f = MappedTokenFile::open(d.file("gpt2.bin"), TokenWidth::U32 /* ignored for shards */, 50257);
  EXPECT_TRUE(f->is_shard());
  EXPECT_EQ(f->width(), TokenWidth::U16);
  EXPECT_EQ(all_tokens(*f), ids);
  std::vector<int32_t> llama = {128000, 5, 128255, 9};
  write_shard(d.file("llama.bin"), kShardMagicU32, kShardVersionU32, llama);
  auto g = MappedTokenFile::open(d.file("llama.bin"), TokenWidth::U16, 128256);
  EXPECT_TRUE(g->is_shard());
  EXPECT_EQ(g->width(), TokenWidth::U32);
  EXPECT_EQ(all_tokens(*g), llama);
}

TEST(TokenFiles, TruncatedShardsBadHeadersAndOutOfVocabIdsAreClearErrors) {
  TempDir d;
  write_shard(d.file("short.bin"), kShardMagicU16, kShardVersionU16, {1, 2, 3, 4}, 3);
  std::string e = error_of([&] { MappedTokenFile::open(d.file("short.bin"), TokenWidth::U16, 100); });
  EXPECT_TRUE(has(e, "short.bin") && has(e, "truncated") && has(e, "4 uint16 tokens")) << e;
  write_shard(d.file("long.bin"), kShardMagicU16, kShardVersionU16, {1, 2, 3, 4}, 0, 2);
  e = error_of([&] { MappedTokenFile::open(d.file("long.bin"), TokenWidth::U16, 100); });
  EXPECT_TRUE(has(e, "trailing bytes")) << e;
  write_shard(d.file("ver.bin"), kShardMagicU32, 1, {1, 2});
  e = error_of([&] { MappedTokenFile::open(d.file("ver.bin"), TokenWidth::U16, 100); });
  EXPECT_TRUE(has(e, "ver.bin") && has(e, "bad llm.c shard header") && has(e, "version 7")) << e;
  // A file that starts with the GPT-2 shard magic but is shorter than the header.
  std::ofstream(d.file("hdr.bin"), std::ios::binary) << std::string("\x88\xD8\x34\x01", 4) << std::string(100, 'x');
  e = error_of([&] { MappedTokenFile::open(d.file("hdr.bin"), TokenWidth::U16, 100); });
  EXPECT_TRUE(has(e, "header") && has(e, "truncated")) << e;
  write_shard(d.file("vocab.bin"), kShardMagicU16, kShardVersionU16, {1, 2, 300, 4});
  e = error_of([&] { MappedTokenFile::open(d.file("vocab.bin"), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "token 300 at index 2") && has(e, "vocab_size 256")) << e;
  e = error_of([&] { MappedTokenFile::open(d.file("missing.bin"), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "missing.bin: no such file")) << e;
  e = error_of([&] { expand_token_glob(d.file("nothing_*.bin"), "--data"); });
  EXPECT_TRUE(has(e, "--data") && has(e, "no file matches")) << e;
}

TEST(TextData, ShardGlobsAreReadInSortedOrderAndWindowsStayInsideOneFile) {
  TempDir d;
  // Shard k holds ids 10k .. 10k+9: a window that mixed two shards would show it.
  for (int k : {2, 0, 1}) write_shard(d.file("s_" + std::to_string(k) + ".bin"), kShardMagicU16, 1, iota_ids(10, 10, 10 * k));
  TextData data({d.file("s_*.bin"), "", 0.0, 4, 64, "auto", 8});
  EXPECT_EQ(data.train_tokens(), 30);
  ASSERT_EQ(data.train_segments().size(), 3u);
  Rng rng(1);
  for (int it = 0; it < 50; ++it) {
    Batch b = data.train_batch(4, rng);
    auto tk = b.tokens.to_int_vector(), tg = b.targets.to_int_vector();
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t shard = tk[r * 4] / 10;
      for (int64_t t = 0; t < 4; ++t) {
        EXPECT_EQ(tk[r * 4 + t] / 10, shard);
        EXPECT_EQ(tg[r * 4 + t], tk[r * 4 + t] + 1);  // the targets are the next tokens
      }
    }
  }
  EXPECT_FALSE(data.has_validation());
}

TEST(TextData, WindowsAreDeterministicBySeedAndNeverTouchTheHeldOutTail) {
  TempDir d;
  // 1000 tokens; the last 10% (val_fraction 0.1) are ids ≥ 100, the rest < 100.
  std::vector<int32_t> ids = iota_ids(900, 100);
  for (int32_t v : iota_ids(100, 100, 100)) ids.push_back(v);
  write_token_file(d.file("t.bin"), ids, TokenWidth::U16);
  TextDataOptions o{d.file("t.bin"), "", 0.1, 8, 256, "auto", 5};
  TextData data(o);
  EXPECT_EQ(data.train_tokens(), 900);
  EXPECT_EQ(data.val_tokens(), 100);
  EXPECT_EQ(data.val_windows(), 5);  // 12 windows of 8 fit (stride 8, 9 tokens each), thinned to 5
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int it = 0; it < 200; ++it) {
    Batch x = data.train_batch(3, a), y = data.train_batch(3, b), z = data.train_batch(3, c);
    EXPECT_EQ(x.tokens.to_int_vector(), y.tokens.to_int_vector());
    differs = differs || x.tokens.to_int_vector() != z.tokens.to_int_vector();
    for (int64_t v : x.tokens.to_int_vector()) ASSERT_LT(v, 100);
    for (int64_t v : x.targets.to_int_vector()) ASSERT_LT(v, 100);
  }
  EXPECT_TRUE(differs) << "another seed draws other windows";
  // The validation windows lie in the tail and are the same every time.
  Batch v1 = data.val_batch(0, 5), v2 = data.val_batch(0, 5);
  EXPECT_EQ(v1.tokens.to_int_vector(), v2.tokens.to_int_vector());
  for (int64_t v : v1.tokens.to_int_vector()) EXPECT_GE(v, 100);
  // Too short a validation part is named.
  o.seq_len = 200;
  std::string e = error_of([&] { TextData bad(o); });
  EXPECT_TRUE(has(e, "--val-fraction") && has(e, "validation part holds 100 tokens")) << e;
}

TEST(Tokenizer, LlmcTableDecodesIdsAndRejectsBadFiles) {
  TempDir d;
  write_tokenizer_table(d.file("tok.bin"), {"Hello", ",", " world", "<|eot|>"}, 3);
  TokenizerTable t = TokenizerTable::load(d.file("tok.bin"));
  EXPECT_EQ(t.size(), 4);
  EXPECT_EQ(t.eot(), 3);
  EXPECT_EQ(t.piece(0) + t.piece(1) + t.piece(2), "Hello, world");
  EXPECT_TRUE(has(error_of([&] { t.piece(4); }), "id 4"));
  std::ofstream(d.file("bad.bin"), std::ios::binary) << std::string(1024, '\x01');
  EXPECT_TRUE(has(error_of([&] { TokenizerTable::load(d.file("bad.bin")); }), "bad magic"));
}
