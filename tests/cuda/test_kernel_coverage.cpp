// Every __global__ kernel in the sources is accounted for: listed in
// docs/cuda.md with the tests that run it, and, on the emulated device, launched
// by the test suite (the emulator records each kernel a test process launches
// in $ECHO_EMU_COVERAGE_DIR/launched.txt; ctest runs this check after all other
// tests). A new kernel without a test fails here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string source_dir() {
  const char* d = std::getenv("ECHO_SOURCE_DIR");
  return d ? d : ".";
}

// "file:kernel" for every __global__ function under cuda/ (with its subfolders)
// and autograd/.
std::set<std::string> kernels_in_sources() {
  std::set<std::string> out;
  const std::regex global(R"(__global__\s+void\s+(\w+)\s*\()");
  for (const char* folder : {"cuda", "autograd"})
    for (const auto& e : std::filesystem::recursive_directory_iterator(std::filesystem::path(source_dir()) / folder)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cu" && ext != ".cuh") continue;
      const std::string text = read_file(e.path());
      for (std::sregex_iterator it(text.begin(), text.end(), global), end; it != end; ++it)
        out.insert(e.path().filename().string() + ":" + (*it)[1].str());
    }
  return out;
}

TEST(KernelCoverage, SourcesHoldTheKernels) {
  const auto kernels = kernels_in_sources();
  EXPECT_GT(kernels.size(), 60u) << "the grep found too few kernels: is ECHO_SOURCE_DIR right?";
  EXPECT_TRUE(kernels.count("ssd_scan.cu:chunk_state_kernel"));
}

TEST(KernelCoverage, EveryKernelIsListedInDocsCudaMd) {
  const std::string doc = read_file(std::filesystem::path(source_dir()) / "docs" / "cuda.md");
  ASSERT_FALSE(doc.empty()) << "docs/cuda.md is missing";
  for (const auto& k : kernels_in_sources())
    EXPECT_NE(doc.find("`" + k + "`"), std::string::npos) << k << " is not listed in docs/cuda.md";
}

TEST(KernelCoverage, EveryKernelRanOnTheEmulatedDevice) {
  const char* dir = std::getenv("ECHO_EMU_COVERAGE_DIR");
  if (!dir || !std::getenv("ECHO_EMU_COVERAGE_CHECK"))
    GTEST_SKIP() << "compares after the whole suite on the emulated device: ECHO_EMU_COVERAGE_CHECK=1 ctest";
  std::set<std::string> launched;
  std::ifstream f(std::string(dir) + "/launched.txt");
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) launched.insert(line);
  ASSERT_FALSE(launched.empty()) << dir << "/launched.txt is empty: no test launched a kernel";
  for (const auto& k : kernels_in_sources())
    EXPECT_TRUE(launched.count(k)) << k << " was not launched by any test on the emulated device";
}

}  // namespace
