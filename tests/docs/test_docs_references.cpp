// The repository stands alone: every "§N" or "§N.M" cited in the code, scripts
// and documents is a section of docs/spec.md, and every relative link in a
// markdown file points at a file or folder that exists. (A renamed section or a
// moved page fails here instead of leaving a reader with a dead reference.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

fs::path source_dir() {
  const char* d = std::getenv("ECHO_SOURCE_DIR");
  return d ? d : ".";
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Files of the repository that may cite the specification: sources, scripts,
// configs and documents (not build folders, results or fuzz corpora).
std::vector<fs::path> cited_files() {
  const std::set<std::string> exts{".cpp", ".h", ".cu", ".cuh", ".md", ".sh", ".py", ".txt", ".json"};
  std::vector<fs::path> out;
  const fs::path root = source_dir();
  for (const char* top : {"autograd", "ops", "cuda", "models", "train", "data", "bench", "scripts", "configs", "docs",
                          "tests"}) {
    if (!fs::exists(root / top)) continue;
    for (const auto& e : fs::recursive_directory_iterator(root / top)) {
      if (!e.is_regular_file() || !exts.count(e.path().extension().string())) continue;
      const std::string rel = fs::relative(e.path(), root).string();
      if (rel.rfind("tests/fuzz/", 0) == 0) continue;
      out.push_back(e.path());
    }
  }
  for (const char* f : {"README.md", "CMakeLists.txt"}) out.push_back(root / f);
  return out;
}

// "N" and "N.M" of the numbered headings of docs/spec.md ("## 6. Command line",
// "### 6.2 `echo-lm op`").
std::set<std::string> spec_sections() {
  std::set<std::string> out;
  const std::regex heading(R"(^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s)");
  std::istringstream in(read_file(source_dir() / "docs" / "spec.md"));
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, heading)) out.insert(m[1].str());
  return out;
}

TEST(DocsReferences, TheSpecificationHasItsSections) {
  const auto sections = spec_sections();
  for (const char* s : {"0", "1", "1.1", "1.4", "2.6", "3", "4", "5", "6.2", "6.5", "7"})
    EXPECT_TRUE(sections.count(s)) << "docs/spec.md has no section " << s << " (is ECHO_SOURCE_DIR right?)";
}

TEST(DocsReferences, EverySectionCitationResolves) {
  const auto sections = spec_sections();
  ASSERT_GT(sections.size(), 20u);
  // "§6.2", "§1.4." (end of a sentence), "§§" is not used.
  const std::regex citation(R"(§(\d+(?:\.\d+)*))");
  int checked = 0;
  for (const auto& file : cited_files()) {
    const std::string text = read_file(file);
    for (std::sregex_iterator it(text.begin(), text.end(), citation), end; it != end; ++it) {
      ++checked;
      const std::string s = (*it)[1].str();
      EXPECT_TRUE(sections.count(s)) << fs::relative(file, source_dir()).string() << " cites §" << s
                                     << ", which docs/spec.md does not have";
    }
  }
  EXPECT_GT(checked, 100) << "too few citations found: is ECHO_SOURCE_DIR right?";
}

TEST(DocsReferences, EveryRelativeLinkInTheDocumentsExists) {
  std::vector<fs::path> docs{source_dir() / "README.md"};
  for (const auto& e : fs::recursive_directory_iterator(source_dir() / "docs"))
    if (e.path().extension() == ".md") docs.push_back(e.path());
  for (const auto& e : fs::directory_iterator(source_dir() / "results"))
    if (e.is_directory() && fs::exists(e.path() / "table.md")) docs.push_back(e.path() / "table.md");
  // [text](target) and ![alt](target); targets with a scheme or only an anchor are skipped.
  const std::regex link(R"(\]\(([^)\s]+)\))");
  int checked = 0;
  for (const auto& doc : docs) {
    const std::string text = read_file(doc);
    for (std::sregex_iterator it(text.begin(), text.end(), link), end; it != end; ++it) {
      std::string target = (*it)[1].str();
      if (target.find("://") != std::string::npos || target[0] == '#' || target.rfind("mailto:", 0) == 0) continue;
      target = target.substr(0, target.find('#'));
      ++checked;
      EXPECT_TRUE(fs::exists(doc.parent_path() / target))
          << fs::relative(doc, source_dir()).string() << " links to " << target << ", which does not exist";
    }
  }
  EXPECT_GT(checked, 5) << "too few links found: is ECHO_SOURCE_DIR right?";
}

}  // namespace
