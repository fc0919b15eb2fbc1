// Deterministic sums over rows for the CPU reference kernels: the gradient of a
// parameter that is broadcast over rows (a norm's weight, a broadcast operand, a
// convolution's taps) is Σ_rows of a per-row term.
//
// Rows are cut into fixed chunks of kRowsPerChunk = 64. Each chunk sums its rows
// in row order into its own partial (the chunks run in parallel), then the
// partials are added in chunk order. The partition depends on the shape only, so
// the result is bitwise the same for any thread count and needs no atomics, and
// the rounding error grows with the chunk length plus the chunk count rather
// than with the row count. The CUDA twins (cuda/block_reduce.cuh) use the very
// same split.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "autograd/parallel.h"

namespace echo {

constexpr int64_t kRowsPerChunk = 64;

inline int64_t row_chunks(int64_t rows) { return (rows + kRowsPerChunk - 1) / kRowsPerChunk; }

// partial[c, k] (row_chunks(rows) × cols, zero-initialised): add_row(r, p) adds
// row r's terms into p[0..cols) and is called for the rows of chunk c in order.
template <typename T, typename AddRow>
std::vector<T> chunk_partials(int64_t rows, int64_t cols, AddRow add_row) {
  const int64_t chunks = row_chunks(rows);
  std::vector<T> partial(static_cast<size_t>(chunks * cols), T(0));
  parallel_for(chunks, [&](int64_t c) {
    T* p = partial.data() + c * cols;
    const int64_t end = std::min(rows, (c + 1) * kRowsPerChunk);
    for (int64_t r = c * kRowsPerChunk; r < end; ++r) add_row(r, p);
  });
  return partial;
}

// Σ_c partial[c, k], chunks in order.
template <typename T> T sum_chunks(const std::vector<T>& partial, int64_t cols, int64_t k) {
  const int64_t chunks = cols ? static_cast<int64_t>(partial.size()) / cols : 0;
  T s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * cols + k];
  return s;
}

// out[j] += Σ_r term(r, j) for j < cols: the common case of one term per (row, column).
template <typename T, typename Term>
void add_column_sums(int64_t rows, int64_t cols, Term term, T* out) {
  const std::vector<T> partial = chunk_partials<T>(rows, cols, [&](int64_t r, T* p) {
    for (int64_t j = 0; j < cols; ++j) p[j] += term(r, j);
  });
  parallel_for(cols, [&](int64_t j) { out[j] += sum_chunks(partial, cols, j); });
}

}  // namespace echo
