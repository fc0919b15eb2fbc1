// The machine's two roofline ceilings, measured once for docs/benchmarks.md:
//   compute: OpenBLAS sgemm C = A·B on n×n f32 matrices (2n³ FLOP per call),
//            the library our matmul-shaped work calls, at the given thread count;
//   memory:  STREAM-like kernels over arrays far larger than the caches, with
//            OpenMP's static schedule on the same threads:
//              read   s += a[i]           (4 bytes per element; simd: a vector sum)
//              copy   c[i] = a[i]         (8 bytes: read a, write c)
//              triad  a[i] = b[i] + s c[i] (12 bytes)
//            The bytes count only what the program asks for; the write-allocate
//            read of c that the hardware adds is not counted (as STREAM does).
// Every figure is the median (and best) of interleaved repetitions, because the
// machine is shared and other processes only ever add time.
//
// It is a standalone program (no engine code): CMake builds it as its own
// executable, echo-roofline, outside the `echo-lm bench` library:
//   make -C build echo-roofline
//   OMP_WAIT_POLICY=PASSIVE ./build/echo-roofline --threads 2 --reps 7
// (the numbers in docs/benchmarks.md came from the same source built by hand:
//   g++ -O3 -march=native -fopenmp bench/roofline.cpp -o build/roofline \
//       -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas)
// It prints one JSON line.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

double seconds(const std::function<void()>& fn) {
  auto a = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

struct Stat {
  double median = 0, best = 0;
};
Stat stat(std::vector<double> rates) {  // rates: higher is better
  std::sort(rates.begin(), rates.end());
  return {rates[rates.size() / 2], rates.back()};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 7;
  long gemm_n = 2048, stream_mb = 256;  // per array
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    long v = std::atol(argv[i + 1]);
    if (k == "--threads") threads = static_cast<int>(v);
    else if (k == "--reps") reps = static_cast<int>(v);
    else if (k == "--gemm-n") gemm_n = v;
    else if (k == "--stream-mb") stream_mb = v;
    else {
      std::fprintf(stderr, "roofline: unknown flag %s (--threads, --reps, --gemm-n, --stream-mb)\n", k.c_str());
      return 2;
    }
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  const long n = gemm_n;
  std::vector<float> A(n * n), B(n * n), C(n * n);
  for (long i = 0; i < n * n; ++i) {
    A[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f;
    B[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f;
  }
  auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f,
                C.data(), n);
  };

  const long m = stream_mb * (1L << 20) / 4;
  float* a = static_cast<float*>(std::aligned_alloc(64, m * 4));
  float* b = static_cast<float*>(std::aligned_alloc(64, m * 4));
  float* c = static_cast<float*>(std::aligned_alloc(64, m * 4));
#pragma omp parallel for schedule(static)
  for (long i = 0; i < m; ++i) a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.5f;  // first touch by the same threads
  volatile float sink = 0;
  auto read = [&] {
    float s = 0;
    const float* src = a;  // locals, not the lambda's captured references, inside the loop
    const long len = m;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
    for (long i = 0; i < len; ++i) s += src[i];
    sink = s;
  };
  auto copy = [&] {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; ++i) c[i] = a[i];
  };
  auto triad = [&] {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; ++i) a[i] = b[i] + 0.5f * c[i];
  };

  gemm(), read(), copy(), triad();  // warm-up: pages, threads, caches
  std::vector<double> g, r, cp, tr;
  for (int k = 0; k < reps; ++k) {  // interleaved, so a burst of load hits all alike
    g.push_back(2.0 * n * n * n / seconds(gemm) * 1e-9);
    // OpenBLAS's pthreads busy-wait (sched_yield) for a while after a call; on a
    // 2-core machine they would compete with the memory kernels. Let them sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    r.push_back(4.0 * m / seconds(read) * 1e-9);
    cp.push_back(8.0 * m / seconds(copy) * 1e-9);
    tr.push_back(12.0 * m / seconds(triad) * 1e-9);
  }
  const Stat sg = stat(g), sr = stat(r), sc = stat(cp), st = stat(tr);
  std::printf(
      "{\"bench\": \"roofline\", \"threads\": %d, \"reps\": %d, \"gemm_n\": %ld, \"stream_mb_per_array\": %ld, "
      "\"sgemm_gflops\": %.1f, \"sgemm_best_gflops\": %.1f, \"read_gb_per_s\": %.1f, \"read_best_gb_per_s\": %.1f, "
      "\"copy_gb_per_s\": %.1f, \"copy_best_gb_per_s\": %.1f, \"triad_gb_per_s\": %.1f, "
      "\"triad_best_gb_per_s\": %.1f}\n",
      threads, reps, n, stream_mb, sg.median, sg.best, sr.median, sr.best, sc.median, sc.best, st.median, st.best);
  std::free(a), std::free(b), std::free(c);
  return 0;
}
