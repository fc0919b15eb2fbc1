// libFuzzer entry point; the target's body is echo::fuzz::token_file in fuzz_targets.h.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return echo::fuzz::token_file(data, size); }
