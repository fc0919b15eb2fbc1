#include "ops/causal_attention.h"

#include "ops/reference/causal_attention.h"

#include "autograd/parallel.h"
#include "ops/runner.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// The naive float64 references of ops/reference/causal_attention.h, with the
// shapes spelled out as the tests give them.
std::vector<double> ref_rope(const std::vector<double>& x, int64_t B, int64_t T, int64_t H, int64_t dh, double base,
                             int64_t offset, double sign = 1.0) {
  return reference::rope(x, {B, T, H, dh}, base, offset, sign);
}
std::vector<double> ref_attention(const std::vector<double>& q, const std::vector<double>& k,
                                  const std::vector<double>& v, int64_t B, int64_t T, int64_t H, int64_t dh,
                                  double base) {
  return reference::causal_attention(q, k, v, {B, T, H, dh}, base);
}
using RefGrads = reference::AttentionGrads;
RefGrads ref_attention_grad(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                            const std::vector<double>& dy, int64_t B, int64_t T, int64_t H, int64_t dh, double base) {
  return reference::causal_attention_backward(q, k, v, dy, {B, T, H, dh}, base);
}
GradcheckFn attn_fn(double base) {
  return [base](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{causal_attention(in[0], in[1], in[2], base)};
  };
}
}  // namespace

TEST(Rope, MatchesNaiveLoopWithOffsetAndPreservesNorms) {
  PoisonGuard poison;
  Rng rng(1);
  const int64_t B = 2, T = 5, H = 3, dh = 8;
  Tensor x = rnd({B, T, H, dh}, rng);
  for (int64_t off : {0, 7, 1000}) {
    auto ref = ref_rope(x.to_vector(), B, T, H, dh, 10000.0, off);
    EXPECT_LT(max_rel_diff(rope(x, 10000.0, off).to_vector(), ref), 1e-13) << off;
    EXPECT_LT(max_rel_diff(rope(x.to(DType::F32), 10000.0, off).to_vector(), ref), 1e-6) << off;
  }
  auto ref = ref_rope(x.to_vector(), B, T, H, dh, 500.0, 3);
  EXPECT_LT(max_rel_diff(rope(x, 500.0, 3).to_vector(), ref), 1e-13);
  // Position 0 is the identity; pairs (j, j+dh/2) keep their norm.
  auto y = rope(x, 10000.0, 11).to_vector(), xv = x.to_vector(), y0 = rope(x, 10000.0, 0).to_vector();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < dh; ++d) EXPECT_EQ(y0[h * dh + d], xv[h * dh + d]);
  for (size_t r = 0; r < xv.size() / dh; ++r)
    for (int64_t j = 0; j < dh / 2; ++j)
      EXPECT_NEAR(std::hypot(y[r * dh + j], y[r * dh + j + dh / 2]), std::hypot(xv[r * dh + j], xv[r * dh + j + dh / 2]),
                  1e-12);
}

TEST(CausalAttention, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(2);
  struct Dims { int64_t B, T, H, dh; };
  for (Dims d : {Dims{2, 9, 3, 8}, Dims{1, 1, 1, 2}, Dims{1, 40, 2, 6}}) {
    Tensor q = rnd({d.B, d.T, d.H, d.dh}, rng), k = rnd({d.B, d.T, d.H, d.dh}, rng), v = rnd({d.B, d.T, d.H, d.dh}, rng);
    for (double base : {10000.0, 100.0}) {
      auto ref = ref_attention(q.to_vector(), k.to_vector(), v.to_vector(), d.B, d.T, d.H, d.dh, base);
      EXPECT_LT(max_rel_diff(causal_attention(q, k, v, base).to_vector(), ref), 1e-13);
      EXPECT_LT(max_rel_diff(causal_attention(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), base).to_vector(),
                             ref),
                2e-6);
    }
  }
  // Large scores stay finite (stable softmax).
  Tensor q = rnd({1, 6, 1, 4}, rng, DType::F64, 60.0), k = rnd({1, 6, 1, 4}, rng, DType::F64, 60.0),
         v = rnd({1, 6, 1, 4}, rng);
  auto ref = ref_attention(q.to_vector(), k.to_vector(), v.to_vector(), 1, 6, 1, 4, 10000.0);
  EXPECT_LT(max_rel_diff(causal_attention(q, k, v).to_vector(), ref), 1e-12);
}

// The CPU kernel works per (b, h) on blocks of 64 query rows, key tiles of 16
// (f32) or 8 (f64) columns and row pairs with a single-row tail: lengths below,
// at and across those edges, odd head counts, head dims below and above a tile.
// Forward and all three gradients against the naive f64 loops; the gradients
// are accumulated onto nonzero ones to check that backward adds.
TEST(CausalAttention, BlockEdgesMatchNaiveForwardAndBackward) {
  PoisonGuard poison;
  Rng rng(7);
  struct Dims { int64_t B, T, H, dh; };
  for (Dims d : {Dims{1, 1, 1, 2}, Dims{2, 17, 3, 8}, Dims{2, 63, 3, 8}, Dims{1, 64, 2, 16}, Dims{2, 65, 2, 64},
                 Dims{1, 130, 3, 2}, Dims{1, 130, 1, 64}, Dims{1, 129, 2, 10}}) {
    const Shape shape{d.B, d.T, d.H, d.dh};
    Tensor q = rnd(shape, rng, DType::F64, 1.5), k = rnd(shape, rng, DType::F64, 1.5), v = rnd(shape, rng),
           dy = rnd(shape, rng);
    const std::string tag = std::to_string(d.B) + "x" + std::to_string(d.T) + "x" + std::to_string(d.H) + "x" +
                            std::to_string(d.dh);
    auto ref = ref_attention(q.to_vector(), k.to_vector(), v.to_vector(), d.B, d.T, d.H, d.dh, 10000.0);
    RefGrads g = ref_attention_grad(q.to_vector(), k.to_vector(), v.to_vector(), dy.to_vector(), d.B, d.T, d.H,
                                    d.dh, 10000.0);
    for (DType dt : {DType::F64, DType::F32}) {
      const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
      std::vector<Tensor> in = {q.to(dt).detach(), k.to(dt).detach(), v.to(dt).detach()};
      for (Tensor& t : in) t.set_requires_grad(true);
      Tensor y = causal_attention(in[0], in[1], in[2]);
      EXPECT_LT(max_rel_diff(y.to_vector(), ref), dt == DType::F64 ? 1e-13 : 2e-6) << tag;
      y.backward(dy.to(dt));
      EXPECT_LT(max_rel_diff(in[0].grad().to_vector(), g.dq), tol) << tag << " dq " << dtype_name(dt);
      EXPECT_LT(max_rel_diff(in[1].grad().to_vector(), g.dk), tol) << tag << " dk " << dtype_name(dt);
      EXPECT_LT(max_rel_diff(in[2].grad().to_vector(), g.dv), tol) << tag << " dv " << dtype_name(dt);
      // A second backward through a fresh graph adds the same gradients again.
      causal_attention(in[0], in[1], in[2]).backward(dy.to(dt));
      auto twice = [](const std::vector<double>& x) {
        std::vector<double> y(x);
        for (double& e : y) e *= 2;
        return y;
      };
      EXPECT_LT(max_rel_diff(in[0].grad().to_vector(), twice(g.dq)), tol) << tag << " dq added";
      EXPECT_LT(max_rel_diff(in[1].grad().to_vector(), twice(g.dk)), tol) << tag << " dk added";
      EXPECT_LT(max_rel_diff(in[2].grad().to_vector(), twice(g.dv)), tol) << tag << " dv added";
    }
  }
}

// Gradcheck across a block edge (65 rows: one full block and a one-row block).
TEST(CausalAttention, GradcheckAcrossBlocksF64) {
  Rng rng(8);
  Tensor q = rnd({1, 65, 1, 2}, rng, DType::F64, 2.0), k = rnd({1, 65, 1, 2}, rng, DType::F64, 2.0),
         v = rnd({1, 65, 1, 2}, rng);
  expect_gradcheck(attn_fn(10000.0), {q, k, v}, {true, true, true}, {"q", "k", "v"});
}

// Each (b, h) belongs to one thread and is summed in a fixed order: outputs and
// gradients are bit-identical for any thread count.
TEST(CausalAttention, BitIdenticalAcrossThreadCounts) {
  const int saved = num_threads();
  Rng rng(9);
  for (DType dt : {DType::F32, DType::F64}) {
    const Shape shape{2, 100, 3, 16};
    Tensor q = rnd(shape, rng, dt), k = rnd(shape, rng, dt), v = rnd(shape, rng, dt), dy = rnd(shape, rng, dt);
    std::vector<std::vector<double>> first;
    for (int threads : {1, 2, 3, 5}) {
      set_num_threads(threads);
      std::vector<Tensor> in = {q.detach(), k.detach(), v.detach()};
      for (Tensor& t : in) t.set_requires_grad(true);
      Tensor y = causal_attention(in[0], in[1], in[2]);
      y.backward(dy);
      std::vector<std::vector<double>> got = {y.to_vector(), in[0].grad().to_vector(), in[1].grad().to_vector(),
                                              in[2].grad().to_vector()};
      if (first.empty()) first = got;
      for (size_t r = 0; r < got.size(); ++r)
        EXPECT_EQ(got[r], first[r]) << "result " << r << " with " << threads << " threads, " << dtype_name(dt);
    }
  }
  set_num_threads(saved);
}

TEST(CausalAttention, IsCausal) {
  // Changing the last token's k and v leaves every earlier output unchanged.
  Rng rng(3);
  Tensor q = rnd({1, 6, 2, 4}, rng), k = rnd({1, 6, 2, 4}, rng), v = rnd({1, 6, 2, 4}, rng);
  auto y1 = causal_attention(q, k, v).to_vector();
  auto kv = k.to_vector(), vv = v.to_vector();
  for (int64_t e = 5 * 2 * 4; e < 6 * 2 * 4; ++e) {
    kv[e] += 3.0;
    vv[e] -= 2.0;
  }
  auto y2 = causal_attention(q, Tensor::from_vector(kv, k.shape(), DType::F64),
                             Tensor::from_vector(vv, v.shape(), DType::F64))
                .to_vector();
  for (int64_t e = 0; e < 5 * 2 * 4; ++e) EXPECT_EQ(y1[e], y2[e]);
  bool last_changed = false;
  for (int64_t e = 5 * 2 * 4; e < 6 * 2 * 4; ++e) last_changed |= y1[e] != y2[e];
  EXPECT_TRUE(last_changed);
}

TEST(CausalAttention, GradcheckF64) {
  Rng rng(4);
  Tensor q = rnd({2, 6, 2, 4}, rng), k = rnd({2, 6, 2, 4}, rng), v = rnd({2, 6, 2, 4}, rng);
  expect_gradcheck(attn_fn(10000.0), {q, k, v}, {true, true, true}, {"q", "k", "v"});
  expect_gradcheck(attn_fn(10.0), {q, k, v}, {true, false, false}, {"q", "k", "v"});
  expect_gradcheck(attn_fn(10.0), {q, k, v}, {false, true, false}, {"q", "k", "v"});
  expect_gradcheck(attn_fn(10.0), {q, k, v}, {false, false, true}, {"q", "k", "v"});
  // Longer sequence with sharper attention.
  Tensor ql = rnd({1, 20, 1, 6}, rng, DType::F64, 2.0), kl = rnd({1, 20, 1, 6}, rng, DType::F64, 2.0),
         vl = rnd({1, 20, 1, 6}, rng);
  expect_gradcheck(attn_fn(10000.0), {ql, kl, vl}, {true, true, true}, {"q", "k", "v"});
}

TEST(CausalAttention, BadShapesThrowNamingTheInput) {
  Tensor q = Tensor::zeros({2, 5, 3, 8}, DType::F32);
  expect_throw_containing([&] { causal_attention(q, Tensor::zeros({2, 5, 3, 4}, DType::F32), q); },
                          "causal_attention: k must have shape [2,5,3,8]");
  expect_throw_containing([&] { causal_attention(q, q, Tensor::zeros({2, 4, 3, 8}, DType::F32)); },
                          "causal_attention: v must have shape [2,5,3,8]");
  Tensor odd = Tensor::zeros({2, 5, 3, 7}, DType::F32);
  expect_throw_containing([&] { causal_attention(odd, odd, odd); }, "causal_attention: q must have an even");
  expect_throw_containing([&] { causal_attention(Tensor::zeros({5, 3, 8}, DType::F32), q, q); },
                          "causal_attention: q must have rank 4");
  expect_throw_containing([&] { causal_attention(q, q, q.to(DType::F64)); }, "causal_attention: mixed tensors");
  expect_throw_containing([&] { rope(odd, 10000.0, 0); }, "rope: x must have an even");
  expect_throw_containing([&] { rope(q, 10000.0, -1); }, "rope: pos_offset must be >= 0");
  Tensor qg = q.clone();
  qg.set_requires_grad(true);
  expect_throw_containing([&] { rope(qg, 10000.0, 0); }, "rope: has no backward");
  NoGrad no_grad;
  EXPECT_NO_THROW(rope(qg, 10000.0, 0));
}

TEST(CausalAttention, RunnerEntry) {
  const RunnerOp* op = find_runner_op("causal_attention");
  ASSERT_NE(op, nullptr);
  gradcheck_runner_example(*op);
  EXPECT_EQ(op->inputs, (std::vector<std::string>{"q", "k", "v"}));
  EXPECT_EQ(op->outputs, (std::vector<std::string>{"y"}));
  EXPECT_DOUBLE_EQ(attr({}, *op, "rope_base"), 10000.0);
  Rng rng(5);
  OpAttrs attrs;
  NamedTensors in = op->example(rng, attrs);
  const Shape& s = in["q"].shape();
  auto ref = ref_attention(in["q"].to_vector(), in["k"].to_vector(), in["v"].to_vector(), s[0], s[1], s[2], s[3],
                           attr(attrs, *op, "rope_base"));
  EXPECT_LT(max_rel_diff(op->forward(in, attrs).at("y").to_vector(), ref), 1e-13);
  auto ref_base = ref_attention(in["q"].to_vector(), in["k"].to_vector(), in["v"].to_vector(), s[0], s[1], s[2],
                                s[3], 50.0);
  EXPECT_LT(max_rel_diff(op->forward(in, {{"rope_base", 50.0}}).at("y").to_vector(), ref_base), 1e-13);
}

TEST(CausalAttention, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(6);
  struct Dims { int64_t B, T, H, dh; };
  for (Dims d : {Dims{2, 77, 3, 64}, Dims{1, 130, 2, 128}, Dims{3, 33, 2, 40}, Dims{1, 5, 1, 2}}) {
    Tensor q = rnd({d.B, d.T, d.H, d.dh}, rng, DType::F32), k = rnd({d.B, d.T, d.H, d.dh}, rng, DType::F32),
           v = rnd({d.B, d.T, d.H, d.dh}, rng, DType::F32);
    Tensor qc = q.to(Device::CUDA), kc = k.to(Device::CUDA), vc = v.to(Device::CUDA);
    for (Tensor* t : {&q, &k, &v, &qc, &kc, &vc}) t->set_requires_grad(true);
    Tensor y = causal_attention(q, k, v), yc = causal_attention(qc, kc, vc);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << d.T << " " << d.dh;
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(qc.grad().to(Device::CPU), q.grad()), 1e-5) << d.T << " " << d.dh;
    EXPECT_LT(max_rel_diff(kc.grad().to(Device::CPU), k.grad()), 1e-5) << d.T << " " << d.dh;
    EXPECT_LT(max_rel_diff(vc.grad().to(Device::CPU), v.grad()), 1e-5) << d.T << " " << d.dh;
    NoGrad no_grad;
    EXPECT_LT(max_rel_diff(rope(qc, 10000.0, 9).to(Device::CPU), rope(q.detach(), 10000.0, 9)), 1e-6);
  }
  Tensor big = Tensor::zeros({1, 2, 1, 256}, DType::F32, Device::CUDA);
  expect_throw_containing([&] { causal_attention(big, big, big); },
                          "causal_attention: the CUDA kernel supports head_dim <= 128");
}
