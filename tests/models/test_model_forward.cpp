// The whole language model: forward sanity, float64 finite-difference gradient
// checks of the loss, and streaming decode (spec §4) against the parallel forward.
#include <cmath>

#include "autograd/parallel.h"
#include "model_test_util.h"
#include "models/lm.h"

namespace echo {
namespace {

// These models are tiny: every op's OpenMP region costs more than its work, and
// on a loaded machine spinning worker threads made this file 100× slower (300 s
// instead of 3 s with two threads). The ops' own tests cover the threaded paths.
const bool kSingleThreaded = (set_num_threads(1), true);

using testing::perturb_parameters;
using testing::random_tokens;
using testing::tiny_config;

Tensor random_targets(int64_t b, int64_t T, int64_t vocab, Rng& rng) {
  std::vector<int64_t> v(static_cast<size_t>(b * T));
  for (auto& x : v) x = rng.uniform() < 0.2 ? -100 : rng.randint(0, vocab);
  return Tensor::from_ints(v, {b, T}, DType::I64);
}

TEST(ModelForward, ShapesAndInitialLossNearLogV) {
  auto m = make_model(preset("ska-1m"), 1);
  Rng rng(2);
  Tensor tokens = random_tokens(2, 70, 128, rng);
  Tensor logits = m->forward(tokens);
  EXPECT_EQ(logits.shape(), (Shape{2, 70, 128}));
  for (double v : logits.to_vector()) ASSERT_TRUE(std::isfinite(v));
  // Tied embeddings of scale 0.02 give nearly uniform predictions at the start.
  Tensor targets = random_tokens(2, 70, 128, rng);
  const double loss = m->loss(tokens, targets).item();
  EXPECT_NEAR(loss, std::log(128.0), 0.05);
}

TEST(ModelForward, Float32AgreesWithFloat64) {
  for (const char* pattern : {"MSA", "SM"}) {
    auto m = make_model(tiny_config(pattern), 4);
    perturb_parameters(*m, 5);
    Rng rng(6);
    Tensor tokens = random_tokens(2, 17, 11, rng);
    Tensor l32 = m->forward(tokens);
    m->to(DType::F64);
    Tensor l64 = m->forward(tokens);
    EXPECT_EQ(l32.dtype(), DType::F32);
    EXPECT_LT(testing::max_rel_diff(l32, l64), 1e-4) << pattern;
  }
}

TEST(ModelForward, CausalInChunkMode) {
  // Changing the token at position t must not change logits before t.
  auto m = make_model(tiny_config("MSA"), 8);
  perturb_parameters(*m, 9);
  m->to(DType::F64);
  Rng rng(10);
  Tensor tokens = random_tokens(1, 16, 11, rng);
  auto base = m->forward(tokens).to_vector();
  auto ids = tokens.to_int_vector();
  ids[11] = (ids[11] + 3) % 11;
  auto changed = m->forward(Tensor::from_ints(ids, {1, 16})).to_vector();
  double before = 0, after = 0;
  for (int64_t t = 0; t < 16; ++t)
    for (int64_t v = 0; v < 11; ++v) {
      double d = std::fabs(base[t * 11 + v] - changed[t * 11 + v]);
      (t < 11 ? before : after) = std::max(t < 11 ? before : after, d);
    }
  EXPECT_EQ(before, 0.0);
  EXPECT_GT(after, 1e-6);
}

TEST(ModelForward, PrefixModeNeedsAMaskAndCannotDecode) {
  ModelConfig c = tiny_config("MS");
  c.ska->mode = "prefix";
  auto m = make_model(c, 1);
  Rng rng(3);
  Tensor tokens = random_tokens(2, 9, 11, rng);
  EXPECT_THROW(m->forward(tokens), std::runtime_error);
  std::vector<int64_t> mask(18, 0);
  for (int i = 0; i < 5; ++i) mask[i] = mask[9 + i] = 1;
  EXPECT_EQ(m->forward(tokens, Tensor::from_ints(mask, {2, 9})).shape(), (Shape{2, 9, 11}));
  EXPECT_THROW(m->make_decode_state(1), std::runtime_error);
}

TEST(ModelForward, BadInputsAreErrors) {
  auto m = make_model(tiny_config("MS"), 1);
  EXPECT_THROW(m->forward(Tensor::zeros({2, 3})), std::runtime_error);       // floating tokens
  EXPECT_THROW(m->forward(Tensor::from_ints({1, 2}, {2})), std::runtime_error);  // rank 1
  Rng rng(1);
  Tensor tokens = random_tokens(2, 5, 11, rng);
  EXPECT_THROW(m->loss(tokens, random_tokens(2, 4, 11, rng)), std::runtime_error);
  auto st = m->make_decode_state(2);
  EXPECT_THROW(m->step(Tensor::from_ints({1, 2, 3}, {3}), st), std::runtime_error);
}

// ---- float64 gradient checks of the whole loss -----------------------------------

void check_loss_gradients(const ModelConfig& cfg, int64_t b, int64_t T, bool with_mask, uint64_t seed) {
  auto m = make_model(cfg, seed);
  perturb_parameters(*m, seed + 1);
  m->to(DType::F64);
  Rng rng(seed + 2);
  Tensor tokens = random_tokens(b, T, cfg.vocab_size, rng);
  Tensor targets = random_targets(b, T, cfg.vocab_size, rng);
  Tensor mask;
  if (with_mask) {
    std::vector<int64_t> mv(static_cast<size_t>(b * T), 0);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t t = 0; t < T - 4 - i; ++t) mv[i * T + t] = 1;
    mask = Tensor::from_ints(mv, {b, T});
  }
  std::vector<Tensor> inputs;
  std::vector<std::string> names;
  for (const auto& p : m->params().all()) {
    inputs.push_back(p.tensor.detach().clone());
    names.push_back(p.name);
  }
  std::vector<bool> diff(inputs.size(), true);
  GradcheckOptions opt;
  opt.max_elements = 6;  // a random sample of each parameter's entries
  opt.eps = 1e-5;
  opt.tolerance = 1e-6;
  opt.seed = seed + 3;
  testing::expect_gradcheck(
      [&](const std::vector<Tensor>& xs) {
        m->set_parameters(xs);
        return std::vector<Tensor>{m->loss(tokens, targets, mask)};
      },
      inputs, diff, names, opt);
}

TEST(ModelGradcheck, MSA_Koopman) {
  // T = 13 crosses Mamba chunks of 4 and SKA chunks of 5; power filter, no gate.
  check_loss_gradients(tiny_config("MSA"), 2, 13, false, 100);
}

TEST(ModelGradcheck, SMA_SwiGLU_WriteGate_Poly) {
  ModelConfig c = tiny_config("SMA", "swiglu");
  c.ska->write_gate = true;
  c.ska->filter = "poly";
  c.ska->power_steps = 1;
  // With β constant along the sequence (w_beta = 0, see perturb_parameters) the
  // readout C G⁻¹ depends on β only through the ridge; a large ridge keeps the
  // gradient of b_beta well above finite-difference noise.
  c.ska->ridge = 0.3;
  check_loss_gradients(c, 2, 12, false, 200);
}

TEST(ModelGradcheck, MS_PrefixMode_NoMlp) {
  ModelConfig c = tiny_config("MS", "none");
  c.ska->mode = "prefix";
  check_loss_gradients(c, 2, 11, true, 300);
}

// ---- streaming decode == parallel forward ------------------------------------------

// Feeds the tokens one at a time and compares every step's logits with forward().
double decode_vs_forward(LanguageModel& m, const Tensor& tokens) {
  const int64_t b = tokens.size(0), T = tokens.size(1), V = m.config().vocab_size;
  auto full = m.forward(tokens).to_vector();  // [b,T,V]
  auto ids = tokens.to_int_vector();
  DecodeState st = m.make_decode_state(b);
  std::vector<double> streamed(full.size());
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int64_t> col(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i) col[i] = ids[i * T + t];
    Tensor logits = m.step(Tensor::from_ints(col, {b}), st);
    EXPECT_EQ(logits.shape(), (Shape{b, V}));
    auto lv = logits.to_vector();
    for (int64_t i = 0; i < b; ++i)
      for (int64_t v = 0; v < V; ++v) streamed[(i * T + t) * V + v] = lv[i * V + v];
  }
  EXPECT_EQ(st.position(), T);
  // advance() (no LM head) for all but the last token, then step(): the same
  // state, so the last token's logits agree too.
  DecodeState st2 = m.make_decode_state(b);
  std::vector<double> last(static_cast<size_t>(b * V)), last_full(last.size());
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int64_t> col(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i) col[i] = ids[i * T + t];
    if (t + 1 < T) {
      m.advance(Tensor::from_ints(col, {b}), st2);
    } else {
      last = m.step(Tensor::from_ints(col, {b}), st2).to_vector();
    }
  }
  EXPECT_EQ(st2.position(), T);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t v = 0; v < V; ++v) last_full[i * V + v] = full[(i * T + T - 1) * V + v];
  return std::max(testing::max_rel_diff(streamed, full), testing::max_rel_diff(last, last_full));
}

TEST(ModelDecode, StreamingEqualsParallelFloat64) {
  struct Case {
    const char* pattern;
    const char* mlp;
    bool gate;
    const char* filter;
  };
  for (const Case& k : {Case{"MS", "koopman", false, "power"}, Case{"SM", "swiglu", true, "poly"},
                        Case{"MSA", "koopman", false, "poly"}, Case{"AMS", "none", true, "power"},
                        Case{"MMSS", "swiglu", false, "power"}}) {
    SCOPED_TRACE(k.pattern);
    ModelConfig c = tiny_config(k.pattern, k.mlp);
    c.ska->write_gate = k.gate;
    c.ska->filter = k.filter;
    auto m = make_model(c, 20);
    perturb_parameters(*m, 21);
    m->to(DType::F64);
    Rng rng(22);
    // 23 tokens: 5 Mamba chunks of 4 and 4 SKA chunks of 5, neither a multiple.
    EXPECT_LT(decode_vs_forward(*m, random_tokens(2, 23, 11, rng)), 1e-9);
  }
}

TEST(ModelDecode, StreamingFloat32IsCloseToParallel) {
  auto m = make_model(tiny_config("MSA"), 30);
  perturb_parameters(*m, 31);
  Rng rng(32);
  EXPECT_LT(decode_vs_forward(*m, random_tokens(1, 19, 11, rng)), 1e-4);
}

TEST(ModelDecode, StateSizeIsConstantForMandS) {
  auto m = make_model(preset("ska-1m"), 40);
  DecodeState st = m->make_decode_state(1);
  Rng rng(41);
  auto feed = [&](int64_t n) {
    for (int64_t i = 0; i < n; ++i) m->step(Tensor::from_ints({rng.randint(0, 128)}, {1}), st);
  };
  feed(1);
  const auto after1 = st.layer_state_bytes();
  feed(999);
  const auto after1000 = st.layer_state_bytes();
  feed(300);
  EXPECT_EQ(st.position(), 1300);
  EXPECT_EQ(after1, after1000);
  EXPECT_EQ(after1000, st.layer_state_bytes());
  // M layers: conv state [conv_dim, W−1] and SSM state [H,P,N] in float32.
  const int64_t mamba_bytes = (288 * 3 + 8 * 32 * 16) * 4;
  EXPECT_EQ(after1[0], mamba_bytes);
  EXPECT_EQ(after1[1], mamba_bytes);
  EXPECT_GT(after1[2], 0);
  EXPECT_EQ(after1[2], after1[3]);
  EXPECT_EQ(st.state_bytes(), 2 * mamba_bytes + 2 * after1[2]);
}

TEST(ModelDecode, AttentionCacheGrowsPerToken) {
  auto m = make_model(tiny_config("MA"), 50);
  DecodeState st = m->make_decode_state(2);
  Rng rng(51);
  for (int64_t t = 1; t <= 40; ++t) {
    m->step(Tensor::from_ints({rng.randint(0, 11), rng.randint(0, 11)}, {2}), st);
    // K and V, batch 2, 2 heads of width 8, float32.
    ASSERT_EQ(st.layer_state_bytes()[1], 2 * 2 * t * 2 * 8 * 4);
  }
}

}  // namespace
}  // namespace echo

namespace echo {
namespace {

// ---- CUDA against the CPU (runs where a GPU is present; skips elsewhere) ------------

TEST(ModelCuda, ForwardBackwardAndDecodeMatchCpu) {
  ECHO_REQUIRE_GPU();
  // Every layer kind: M, S in chunk and prefix mode, A; both MLPs (Koopman and SwiGLU).
  struct Case {
    const char* pattern;
    const char* mlp;
    const char* ska_mode;
  };
  for (const Case& k : {Case{"MSA", "koopman", "chunk"}, Case{"SM", "swiglu", "prefix"}, Case{"AS", "swiglu", "chunk"}}) {
    SCOPED_TRACE(std::string(k.pattern) + " " + k.mlp + " " + k.ska_mode);
    ModelConfig c = tiny_config(k.pattern, k.mlp);
    c.ska->mode = k.ska_mode;
    c.ska->write_gate = true;
    c.ska->filter = "poly";
    c.ska->ridge = 1e-2;  // well-conditioned Gram matrices: f32 vs f32 compares kernels, not conditioning
    auto cpu = make_model(c, 60), gpu = make_model(c, 60);
    perturb_parameters(*cpu, 61);
    perturb_parameters(*gpu, 61);
    gpu->to(Device::CUDA);
    Rng rng(62);
    Tensor tokens = random_tokens(2, 19, 11, rng);
    Tensor targets = random_targets(2, 19, 11, rng);
    Tensor mask;  // prefix mode reads the context marked by a mask
    const bool prefix = std::string(k.ska_mode) == "prefix";
    if (prefix) {
      std::vector<int64_t> m(2 * 19, 0);
      for (int t = 0; t < 19; ++t) m[t] = t < 11, m[19 + t] = t < 7;
      mask = Tensor::from_ints(m, {2, 19});
    }

    EXPECT_LT(testing::max_rel_diff(gpu->forward(tokens, mask).to(Device::CPU), cpu->forward(tokens, mask)), 1e-3);
    Tensor lc = cpu->loss(tokens, targets, mask), lg = gpu->loss(tokens, targets, mask);
    EXPECT_NEAR(lg.item(), lc.item(), 1e-4 * std::fabs(lc.item()));
    lc.backward();
    lg.backward();
    for (size_t i = 0; i < cpu->params().size(); ++i) {
      const auto& pc = cpu->params().all()[i];
      const auto& pg = gpu->params().all()[i];
      ASSERT_TRUE(pc.tensor.grad().defined() && pg.tensor.grad().defined()) << pc.name;
      EXPECT_LT(testing::max_rel_diff(pg.tensor.grad().to(Device::CPU), pc.tensor.grad()), 5e-3) << pc.name;
    }
    // Streaming decode on the GPU against its own parallel forward (chunk mode:
    // decoding a prefix-mode model needs its mask's context split, not tested here).
    if (!prefix) EXPECT_LT(decode_vs_forward(*gpu, tokens), 1e-3);
  }
}

}  // namespace
}  // namespace echo
