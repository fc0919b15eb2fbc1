// Faults during training runs: the checkpoint write fails (file-size limit,
// disk full, read-only file system). Each must end the run with a one-line error
// naming the file, leave the previous checkpoint intact and loadable, leave no
// temporary file behind, and let a later --resume continue. Tests run as root in
// CI, where permission bits stop nothing, so the failures are real ones: a
// RLIMIT_FSIZE (works everywhere), and a tiny tmpfs when mounting is allowed.
// (SIGINT → final checkpoint → resume is tests/train/test_trainer.cpp
// TrainCli.SigintWritesACheckpointAndTheRunResumes.)
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "reliability/reliability_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/train_util.h"

namespace fs = std::filesystem;
using namespace echo;
using namespace echo::testing;

namespace {


// Trains the tiny model for 4 steps into DIR/run; returns the run directory.
std::string first_run(const TempDir& d) {
  write_text(d.file("tiny.json"), tiny_model_config().to_json().dump());
  const std::string run = d.file("run");
  RunResult r = run_echo({"train", "--config", d.file("tiny.json"), "--task", "mqar:M=2,gap=5", "--steps", "8",
                          "--stop-after", "4", "--batch", "2", "--out", run, "--quiet"},
                         d);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_checkpoint_header(run + "/latest.h5").step, 4);
  return run;
}

// Runs echo-lm through sh with `prefix` (shell commands) before it.
RunResult run_echo_with(const std::string& prefix, const std::vector<std::string>& args, const TempDir& d) {
  std::string cmd = prefix + " exec " + shell_quote(echo_bin());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  const std::string out = d.file(".out"), err = d.file(".err");
  std::string full = "sh -c " + shell_quote(cmd) + " >" + shell_quote(out) + " 2>" + shell_quote(err) + " </dev/null";
  int raw = std::system(full.c_str());
  RunResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

// The run directory after a failed checkpoint: latest.h5 byte-identical to before,
// still step 4 and loadable, nothing temporary, no new step checkpoint.
void expect_previous_checkpoint_intact(const std::string& run, const std::string& latest_before) {
  EXPECT_EQ(read_text(run + "/latest.h5"), latest_before) << "latest.h5 changed";
  EXPECT_EQ(read_checkpoint_header(run + "/latest.h5").step, 4);
  EXPECT_NO_THROW(load_model(run + "/latest.h5"));
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string n = e.path().filename().string();
    EXPECT_FALSE(has(n, ".tmp")) << "temporary file left: " << n;
    EXPECT_NE(n, "ckpt_8.h5") << "a checkpoint that could not be written exists";
  }
}

void expect_one_line_failure(const RunResult& r, const std::string& names) {
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.status, 128) << "killed by a signal: " << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("echo-lm: ", 0), 0u) << r.err;
  EXPECT_TRUE(has(r.err, names)) << r.err;
}

// Unmounts on scope exit.
struct Mount {
  std::string dir;
  bool mounted = false;
  ~Mount() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

int64_t pages(int64_t bytes) { return (bytes + 4095) / 4096; }

}  // namespace

// A file-size limit below the checkpoint's size: every write past it fails
// with EFBIG (SIGXFSZ ignored), as on a full disk.
TEST(Faults, CheckpointWriteFailureKeepsThePreviousCheckpoint) {
  TempDir d;
  const std::string run = first_run(d);
  const std::string before = read_text(run + "/latest.h5");
  ASSERT_GT(before.size(), 16384u);
  // ulimit -f counts 512-byte blocks (dash) or 1 KiB (bash): either way below the size.
  const int64_t blocks = static_cast<int64_t>(before.size()) / 4 / 512;
  RunResult r = run_echo_with("trap '' XFSZ; ulimit -f " + std::to_string(blocks) + ";",
                              {"train", "--resume", "--out", run, "--steps", "8", "--quiet"}, d);
  SCOPED_TRACE(r.err);
  expect_one_line_failure(r, "ckpt_8.h5");
  expect_previous_checkpoint_intact(run, before);
  // With the limit gone, the run continues from step 4.
  RunResult again = run_echo({"train", "--resume", "--out", run, "--steps", "8", "--quiet"}, d);
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(read_checkpoint_header(run + "/latest.h5").step, 8);
}

// A real ENOSPC: the run directory on a tmpfs with room for the files it has
// plus half a checkpoint; then the same tmpfs read-only (EROFS, which stops root too).
TEST(Faults, DiskFullAndReadOnlyFileSystem) {
  TempDir d;
  const std::string base = first_run(d);
  const std::string before = read_text(base + "/latest.h5");
  Mount mnt{d.file("mnt")};
  fs::create_directories(mnt.dir);
  int64_t used = 0;
  for (const auto& e : fs::directory_iterator(base)) used += pages(static_cast<int64_t>(e.file_size()));
  const int64_t size = 4096 * (used + pages(static_cast<int64_t>(before.size()) / 2) + 1);
  const std::string opts = "size=" + std::to_string(size);
  if (::mount("none", mnt.dir.c_str(), "tmpfs", 0, opts.c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                 << "); Faults.CheckpointWriteFailureKeepsThePreviousCheckpoint covers the failure";
  mnt.mounted = true;
  const std::string run = mnt.dir + "/run";
  fs::copy(base, run);

  RunResult r = run_echo({"train", "--resume", "--out", run, "--steps", "8", "--quiet"}, d);
  {
    SCOPED_TRACE("disk full: " + r.err);
    expect_one_line_failure(r, "ckpt_8.h5");
    expect_previous_checkpoint_intact(run, before);
  }

  ASSERT_EQ(::mount("none", mnt.dir.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, opts.c_str()), 0) << std::strerror(errno);
  r = run_echo({"train", "--resume", "--out", run, "--steps", "8", "--quiet"}, d);
  {
    SCOPED_TRACE("read-only: " + r.err);
    expect_one_line_failure(r, run);
    expect_previous_checkpoint_intact(run, before);
  }
}
