// Replays every fuzz target's seed corpus (tests/fuzz/corpus/<target>/) and every
// input that once crashed it (tests/fuzz/regressions/<target>/) through the same
// target body the fuzzer runs (tests/fuzz/fuzz_targets.h). In the sanitizer stage
// of scripts/test.sh this is the fuzzers' findings rechecked under ASan/UBSan on
// every CI run. docs/reliability.md lists the crashes and their fixes.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/fuzz_targets.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace echo;

namespace {

fs::path fuzz_dir() {
  if (const char* src = std::getenv("ECHO_SOURCE_DIR"); src && *src) return fs::path(src) / "tests" / "fuzz";
  return fs::path(__FILE__).parent_path().parent_path() / "fuzz";
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

using TargetFn = int (*)(const uint8_t*, size_t);
const std::map<std::string, TargetFn>& targets() {
  static const std::map<std::string, TargetFn> t = {{"checkpoint", &fuzz::checkpoint},
                                                    {"config", &fuzz::config},
                                                    {"op_runner", &fuzz::op_runner},
                                                    {"task_spec", &fuzz::task_spec},
                                                    {"token_file", &fuzz::token_file}};
  return t;
}

class FuzzReplay : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(FuzzReplay, CorpusAndPastCrashesRunCleanly) {
  const std::string name = GetParam();
  const TargetFn fn = targets().at(name);
  const auto corpus = files_in(fuzz_dir() / "corpus" / name);
  EXPECT_GE(corpus.size(), 3u) << "seed corpus missing in " << (fuzz_dir() / "corpus" / name);
  auto inputs = corpus;
  for (const auto& p : files_in(fuzz_dir() / "regressions" / name)) inputs.push_back(p);
  for (const auto& p : inputs) {
    SCOPED_TRACE(p.string());
    const std::vector<uint8_t> data = bytes_of(p);
    // A crash or sanitizer report ends the process: ctest shows this test failed.
    EXPECT_EQ(fn(data.data(), data.size()), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay,
                         ::testing::Values("checkpoint", "config", "op_runner", "task_spec", "token_file"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(FuzzReplay, EveryTargetHasAnEntryPoint) {
  for (const auto& [name, fn] : targets())
    EXPECT_TRUE(fs::exists(fuzz_dir() / ("fuzz_" + name + ".cpp"))) << name;
}
