// Token files (data/token_file.h) and `echo-lm data tokenize/check`.
#include "data/token_file.h"

#include "test_util.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

TEST(TokenFile, RoundTripsBothWidthsLittleEndian) {
  TempDir d;
  const std::vector<int32_t> ids = {0, 1, 255, 256, 4660, 65535};
  write_token_file(d.file("a.u16"), ids, TokenWidth::U16);
  const std::string bytes = read_text(d.file("a.u16"));
  ASSERT_EQ(bytes.size(), 12u);
  // 4660 = 0x1234 is stored low byte first.
  EXPECT_EQ((unsigned char)bytes[8], 0x34);
  EXPECT_EQ((unsigned char)bytes[9], 0x12);
  EXPECT_EQ(read_token_file(d.file("a.u16"), TokenWidth::U16, 65536), ids);

  const std::vector<int32_t> big = {0, 70000, 16777216, 2147483646};
  write_token_file(d.file("a.u32"), big, TokenWidth::U32);
  EXPECT_EQ(read_text(d.file("a.u32")).size(), 16u);
  EXPECT_EQ(read_token_file(d.file("a.u32"), TokenWidth::U32, 2147483647), big);
  // The same bytes read as uint16 are other ids: the width is the reader's to know.
  EXPECT_EQ(read_token_file(d.file("a.u32"), TokenWidth::U32, 2147483647).size(), 4u);
  EXPECT_EQ(read_token_file(d.file("a.u32"), TokenWidth::U16, 65536).size(), 8u);
  for (const auto& e : d.entries()) EXPECT_EQ(e.find(".tmp"), std::string::npos) << e;
}

TEST(TokenFile, BadFilesGiveClearErrors) {
  TempDir d;
  write_text(d.file("odd.bin"), std::string("\x01\x00\x02", 3));
  std::string e = error_of([&] { read_token_file(d.file("odd.bin"), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "odd.bin") && has(e, "size 3 bytes") && has(e, "multiple of 2")) << e;
  e = error_of([&] { read_token_file(d.file("odd.bin"), TokenWidth::U32, 256); });
  EXPECT_TRUE(has(e, "multiple of 4")) << e;

  write_token_file(d.file("ids.bin"), {3, 7, 300, 2}, TokenWidth::U16);
  e = error_of([&] { read_token_file(d.file("ids.bin"), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "ids.bin") && has(e, "token 300") && has(e, "index 2") && has(e, "vocab_size 256")) << e;
  EXPECT_EQ(read_token_file(d.file("ids.bin"), TokenWidth::U16, 301).size(), 4u);
  // The boundary: an id equal to vocab_size is out of range.
  e = error_of([&] { read_token_file(d.file("ids.bin"), TokenWidth::U16, 300); });
  EXPECT_TRUE(has(e, "token 300")) << e;

  e = error_of([&] { read_token_file(d.file("nosuch.bin"), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "nosuch.bin") && has(e, "no such file")) << e;
  e = error_of([&] { read_token_file(d.path(), TokenWidth::U16, 256); });
  EXPECT_TRUE(has(e, "not a regular file")) << e;
  e = error_of([&] { read_token_file(d.file("ids.bin"), TokenWidth::U16, 0); });
  EXPECT_TRUE(has(e, "vocab_size")) << e;
  e = error_of([&] { write_token_file(d.file("w.bin"), {65536}, TokenWidth::U16); });
  EXPECT_TRUE(has(e, "65536") && has(e, "uint16")) << e;
  e = error_of([&] { write_token_file(d.file("w.bin"), {-1}, TokenWidth::U32); });
  EXPECT_TRUE(has(e, "-1")) << e;
  EXPECT_FALSE(std::filesystem::exists(d.file("w.bin")));
  e = error_of([&] { parse_token_width("u8"); });
  EXPECT_TRUE(has(e, "u8")) << e;

  // An empty file is zero tokens, not an error.
  write_text(d.file("empty.bin"), "");
  EXPECT_TRUE(read_token_file(d.file("empty.bin"), TokenWidth::U32, 10).empty());
}

TEST(DataCli, TokenizeBytesWritesUint16Tokens) {
  TempDir d;
  const std::string text = std::string("héllo\n\0\xff", 9);
  write_text(d.file("in.txt"), text);
  RunResult r = run_echo({"data", "tokenize", "--bytes", d.file("in.txt"), "--out", d.file("out.bin")}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "wrote 9 uint16 tokens")) << r.out;
  const std::string out = read_text(d.file("out.bin"));
  ASSERT_EQ(out.size(), 2 * text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    EXPECT_EQ((unsigned char)out[2 * i], (unsigned char)text[i]) << i;
    EXPECT_EQ(out[2 * i + 1], '\0') << i;
  }
  EXPECT_EQ(read_token_file(d.file("out.bin"), TokenWidth::U16, kByteVocab), tokenize_bytes(text));

  r = run_echo({"data", "check", d.file("out.bin"), "--vocab", "256"}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "9 uint16 tokens, largest id 255")) << r.out;
  r = run_echo({"data", "check", d.file("out.bin"), "--vocab", "200"}, d);
  EXPECT_EQ(r.status, 1);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  // Bytes h C3 A9 l l o \n 00 FF: the first id ≥ 200 is the last one.
  EXPECT_TRUE(has(r.err, "token 255 at index 8")) << r.err;
  r = run_echo({"data", "tokenize", "--bytes", d.file("nosuch.txt"), "--out", d.file("x.bin")}, d);
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(has(r.err, "nosuch.txt")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("x.bin")));
}
