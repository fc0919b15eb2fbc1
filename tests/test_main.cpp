#include <gtest/gtest.h>

#include <cstdlib>

int main(int argc, char** argv) {
  // The environment every test expects (from CMake; a variable the caller set
  // wins): the echo-lm binary, the source tree, and on the emulated CUDA device
  // the folder where each process records the kernels it launched.
#ifdef ECHO_TEST_BIN
  setenv("ECHO_BIN", ECHO_TEST_BIN, 0);
#endif
#ifdef ECHO_TEST_SOURCE_DIR
  setenv("ECHO_SOURCE_DIR", ECHO_TEST_SOURCE_DIR, 0);
#endif
#ifdef ECHO_TEST_COVERAGE_DIR
  setenv("ECHO_EMU_COVERAGE_DIR", ECHO_TEST_COVERAGE_DIR, 0);
#endif
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
