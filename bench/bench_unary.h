// Pointwise silu, forward and forward+backward, on one flat tensor: a
// bandwidth probe for the device and a check of the `echo-lm bench` plumbing.
#pragma once
#include "bench/benchmark.h"

namespace echo::bench {
Benchmark benchmark_unary();
}
