// Keeps echo_bench a non-empty library even before any op benchmark exists.
#include "bench/bench_common.h"
