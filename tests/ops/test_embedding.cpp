#include "ops/embedding.h"

#include <functional>

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
std::vector<int64_t> random_ids(int64_t n, int64_t V, Rng& rng) {
  std::vector<int64_t> v(n);
  for (auto& e : v) e = rng.randint(0, V);
  return v;
}
}  // namespace

TEST(Embedding, ForwardAndBackwardMatchNaiveLoops) {
  PoisonGuard poison;
  Rng rng(1);
  const int64_t V = 7, d = 5;
  for (DType id_type : {DType::I32, DType::I64}) {
    // 24 tokens over 7 ids: repeated ids are certain.
    auto idv = random_ids(24, V, rng);
    Tensor ids = Tensor::from_ints(idv, {2, 3, 4}, id_type);
    Tensor w = rnd({V, d}, rng);
    auto wv = w.to_vector();
    w.set_requires_grad(true);
    Tensor y = embedding(w, ids);
    EXPECT_EQ(y.shape(), (Shape{2, 3, 4, d}));
    std::vector<double> ref(24 * d);
    for (int64_t t = 0; t < 24; ++t)
      for (int64_t c = 0; c < d; ++c) ref[t * d + c] = wv[idv[t] * d + c];
    EXPECT_EQ(y.to_vector(), ref);
    Tensor dy = rnd({2, 3, 4, d}, rng);
    y.backward(dy);
    auto dyv = dy.to_vector();
    std::vector<double> dw(V * d, 0.0);
    for (int64_t t = 0; t < 24; ++t)
      for (int64_t c = 0; c < d; ++c) dw[idv[t] * d + c] += dyv[t * d + c];
    EXPECT_LT(max_rel_diff(w.grad().to_vector(), dw), 1e-15);
    // f32
    Tensor w32 = w.detach().to(DType::F32);
    std::vector<double> ref32(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) ref32[i] = static_cast<float>(ref[i]);
    EXPECT_EQ(embedding(w32, ids).to_vector(), ref32);
  }
}

TEST(Embedding, GradcheckF64) {
  Rng rng(2);
  Tensor ids = Tensor::from_ints({3, 1, 3, 0, 5, 3, 1, 1}, {2, 4}, DType::I32);
  expect_gradcheck([ids](const std::vector<Tensor>& in) { return std::vector<Tensor>{embedding(in[0], ids)}; },
                   {rnd({6, 4}, rng)}, {true}, {"embedding.weight"});
  Tensor ids64 = Tensor::from_ints({2, 2, 0}, {3}, DType::I64);
  expect_gradcheck([ids64](const std::vector<Tensor>& in) { return std::vector<Tensor>{embedding(in[0], ids64)}; },
                   {rnd({3, 5}, rng)}, {true}, {"embedding(i64 ids).weight"});
}

TEST(Embedding, BadArgumentsAreClearErrors) {
  Tensor w = Tensor::zeros({10, 4});
  expect_throw_containing([&] { embedding(w, Tensor::from_ints({1, 10, 2}, {3})); },
                          "embedding: id 10 at position 1 is out of range for a vocabulary of V=10");
  expect_throw_containing([&] { embedding(w, Tensor::from_ints({-1}, {1}, DType::I64)); },
                          "embedding: id -1 at position 0 is out of range for a vocabulary of V=10");
  expect_throw_containing([&] { embedding(w, Tensor::zeros({3})); }, "embedding: ids must be i32 or i64, got f32[3] cpu");
  expect_throw_containing([&] { embedding(Tensor::zeros({10}), Tensor::from_ints({1}, {1})); },
                          "embedding: weight must have rank 2");
}

TEST(Embedding, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  const int64_t V = 300, d = 96;
  for (DType id_type : {DType::I32, DType::I64})
    for (bool ids_on_gpu : {false, true}) {
      // 4096 tokens over 300 ids: every row is hit many times.
      Tensor ids = Tensor::from_ints(random_ids(4096, V, rng), {8, 512}, id_type);
      Tensor w = rnd({V, d}, rng, DType::F32);
      Tensor wc = w.to(Device::CUDA).set_requires_grad(true);
      w.set_requires_grad(true);
      Tensor y = embedding(w, ids), yc = embedding(wc, ids_on_gpu ? ids.to(Device::CUDA) : ids);
      EXPECT_EQ(yc.to(Device::CPU).to_vector(), y.to_vector());
      Tensor seed = rnd(y.shape(), rng, DType::F32);
      y.backward(seed);
      yc.backward(seed.to(Device::CUDA));
      EXPECT_LT(max_rel_diff(wc.grad().to(Device::CPU), w.grad()), 1e-5);
    }
  Tensor wc = Tensor::zeros({V, d}, DType::F32, Device::CUDA);
  expect_throw_containing([&] { embedding(wc, Tensor::from_ints({0, V}, {2}, DType::I32, Device::CUDA)); },
                          "embedding: id 300 at position 1 is out of range for a vocabulary of V=300");
}
