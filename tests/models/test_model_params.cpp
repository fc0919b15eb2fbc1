// Parameter names, shapes and counts (spec §2.6) and initialisation (§2.1–§2.5).
#include <cmath>
#include <map>

#include "model_test_util.h"
#include "models/init.h"
#include "models/lm.h"

namespace echo {
namespace {

using testing::tiny_config;

std::map<std::string, Shape> shapes_of(const LanguageModel& m) {
  std::map<std::string, Shape> out;
  for (const auto& p : m.params().all()) out[p.name] = p.tensor.shape();
  return out;
}

// The echo-50m model is built once (≈50M float32 values).
const LanguageModel& echo50m() {
  static std::unique_ptr<LanguageModel> m = make_model(preset("echo-50m"), 7);
  return *m;
}

std::vector<double> values(const LanguageModel& m, const std::string& name) {
  return m.params().get(name).to_vector();
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / v.size();
}
double std_of(const std::vector<double>& v) {
  double mu = mean_of(v), s = 0;
  for (double x : v) s += (x - mu) * (x - mu);
  return std::sqrt(s / v.size());
}
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

TEST(ModelParams, Ska1mFullNameAndShapeList) {
  auto m = make_model(preset("ska-1m"), 1);
  // d=128, V=128; M: d_inner 256, H 8, P 32, N 16, G 1, conv_dim 288, W 4;
  // S: H_s 4, r 24, P_s 32, K 2 (poly filter, no write gate); SwiGLU d_ff 256.
  std::vector<std::pair<std::string, Shape>> expected = {{"embedding.weight", {128, 128}}};
  for (int i = 0; i < 2; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    expected.push_back({p + "norm1.weight", {128}});
    expected.push_back({p + "mixer.in_proj.weight", {2 * 256 + 2 * 16 + 8, 128}});
    expected.push_back({p + "mixer.conv1d.weight", {288, 4}});
    expected.push_back({p + "mixer.conv1d.bias", {288}});
    expected.push_back({p + "mixer.dt_bias", {8}});
    expected.push_back({p + "mixer.A_log", {8}});
    expected.push_back({p + "mixer.D", {8}});
    expected.push_back({p + "mixer.norm.weight", {256}});
    expected.push_back({p + "mixer.out_proj.weight", {128, 256}});
    expected.push_back({p + "norm2.weight", {128}});
    expected.push_back({p + "mlp.gate.weight", {256, 128}});
    expected.push_back({p + "mlp.up.weight", {256, 128}});
    expected.push_back({p + "mlp.down.weight", {128, 256}});
  }
  for (int i = 2; i < 4; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    expected.push_back({p + "norm1.weight", {128}});
    expected.push_back({p + "mixer.w_k.weight", {96, 128}});
    expected.push_back({p + "mixer.w_q.weight", {96, 128}});
    expected.push_back({p + "mixer.w_v.weight", {128, 128}});
    expected.push_back({p + "mixer.w_o.weight", {128, 128}});
    expected.push_back({p + "mixer.gamma_raw", {1}});
    expected.push_back({p + "mixer.eta", {1}});
    expected.push_back({p + "mixer.filter_coef", {4, 3}});
    expected.push_back({p + "norm2.weight", {128}});
    expected.push_back({p + "mlp.gate.weight", {256, 128}});
    expected.push_back({p + "mlp.up.weight", {256, 128}});
    expected.push_back({p + "mlp.down.weight", {128, 256}});
  }
  expected.push_back({"norm_f.weight", {128}});

  const auto& all = m->params().all();
  ASSERT_EQ(all.size(), expected.size());
  int64_t total = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].name, expected[i].first);
    EXPECT_EQ(all[i].tensor.shape(), expected[i].second) << all[i].name;
    EXPECT_TRUE(all[i].tensor.requires_grad() && all[i].tensor.is_leaf()) << all[i].name;
    EXPECT_EQ(all[i].tensor.dtype(), DType::F32);
    total += shape_numel(expected[i].second);
  }
  EXPECT_EQ(m->num_params(), total);
  EXPECT_EQ(m->num_params(), 735756);  // by hand: 16384 + 2·203704 + 2·155918 + 128
}

TEST(ModelParams, SmallPresetCounts) {
  // M block 203704 (see above); A block: norms 256 + qkv 384·128 + out_proj 128·128 + SwiGLU 98304.
  EXPECT_EQ(make_model(preset("ssm-1m"), 1)->num_params(), 16384 + 4 * 203704 + 128);
  EXPECT_EQ(make_model(preset("attn-1m"), 1)->num_params(), 16384 + 2 * 203704 + 2 * 164096 + 128);
  auto m = make_model(preset("attn-1m"), 1);
  auto s = shapes_of(*m);
  EXPECT_EQ(s.at("layers.2.mixer.qkv.weight"), (Shape{3 * 4 * 32, 128}));
  EXPECT_EQ(s.at("layers.3.mixer.out_proj.weight"), (Shape{128, 128}));
  for (const char* small : {"ssm-1m", "attn-1m", "ska-1m"})
    EXPECT_LT(make_model(preset(small), 1)->num_params(), 1000000) << small;
}

TEST(ModelParams, Echo50mNamesShapesAndCount) {
  const LanguageModel& m = echo50m();
  auto s = shapes_of(m);
  EXPECT_EQ(s.at("embedding.weight"), (Shape{32000, 448}));
  EXPECT_EQ(s.at("layers.0.mixer.in_proj.weight"), (Shape{2 * 896 + 2 * 64 + 14, 448}));
  EXPECT_EQ(s.at("layers.0.mixer.conv1d.weight"), (Shape{1024, 4}));
  EXPECT_EQ(s.at("layers.0.mixer.conv1d.bias"), (Shape{1024}));
  EXPECT_EQ(s.at("layers.15.mixer.A_log"), (Shape{14}));
  EXPECT_EQ(s.at("layers.0.mixer.norm.weight"), (Shape{896}));
  EXPECT_EQ(s.at("layers.0.mixer.out_proj.weight"), (Shape{448, 896}));
  EXPECT_EQ(s.at("layers.3.mixer.w_k.weight"), (Shape{7 * 56, 448}));
  EXPECT_EQ(s.at("layers.7.mixer.w_v.weight"), (Shape{7 * 64, 448}));
  EXPECT_EQ(s.at("layers.11.mixer.w_o.weight"), (Shape{448, 7 * 64}));
  EXPECT_EQ(s.at("layers.3.mixer.gamma_raw"), (Shape{1}));
  EXPECT_EQ(s.at("layers.3.mlp.lift.weight"), (Shape{1216, 448}));
  EXPECT_EQ(s.at("layers.3.mlp.read.weight"), (Shape{448, 1216}));
  EXPECT_EQ(s.at("layers.3.mlp.rot_omega"), (Shape{608}));
  EXPECT_EQ(s.count("layers.3.mixer.filter_coef"), 0u);  // power filter
  EXPECT_EQ(s.count("layers.3.mixer.w_beta.weight"), 0u);  // no write gate
  EXPECT_EQ(s.count("layers.4.mixer.w_k.weight"), 0u);    // layer 4 is M
  EXPECT_EQ(s.size(), 1u + 13 * 14 + 3 * 12 + 1);  // 13 M layers, 3 S layers
  const int64_t n = m.num_params();
  EXPECT_GE(n, 45000000) << "echo-50m has " << n << " parameters";
  EXPECT_LE(n, 55000000) << "echo-50m has " << n << " parameters";
  // The per-group breakdown adds up and reports the kinds.
  auto report = parameter_report(m);
  int64_t sum = 0;
  for (const auto& g : report["groups"]) sum += g["params"].get<int64_t>();
  EXPECT_EQ(sum, n);
  EXPECT_EQ(report["groups"][4]["name"], "layers.3");
  EXPECT_EQ(report["groups"][4]["kind"], "S");
  EXPECT_EQ(report["groups"][4]["params"].get<int64_t>(),
            report["groups"][4]["mixer"].get<int64_t>() + report["groups"][4]["mlp"].get<int64_t>() +
                report["groups"][4]["norms"].get<int64_t>());
  EXPECT_NE(parameter_report_text(m).find("total"), std::string::npos);
}

TEST(ModelParams, FiftyMillionPresetsAreNearFiftyMillion) {
  for (const char* name : {"mamba2-50m", "hybrid-attn-50m"}) {
    const int64_t n = make_model(preset(name), 1)->num_params();
    EXPECT_GE(n, 45000000) << name << " has " << n;
    EXPECT_LE(n, 55000000) << name << " has " << n;
  }
}

TEST(ModelInit, MambaMixer) {
  const LanguageModel& m = echo50m();
  std::vector<double> log_dt, a;
  for (int i : {0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 15}) {
    const std::string p = "layers." + std::to_string(i) + ".mixer.";
    for (double b : values(m, p + "dt_bias")) {
      double dt = b > 20 ? b : std::log1p(std::exp(b));  // softplus recovers dt
      EXPECT_GE(dt, 1e-3 * (1 - 1e-5));
      EXPECT_LE(dt, 1e-1 * (1 + 1e-5));
      log_dt.push_back(std::log(dt));
    }
    for (double v : values(m, p + "A_log")) {
      EXPECT_GE(std::exp(v), 1.0 - 1e-6);
      EXPECT_LE(std::exp(v), 16.0 + 1e-5);
      a.push_back(std::exp(v));
    }
    for (double v : values(m, p + "D")) EXPECT_EQ(v, 1.0);
    for (double v : values(m, p + "norm.weight")) EXPECT_EQ(v, 1.0);
  }
  // ln dt ~ U(ln 1e-3, ln 1e-1): mean −4.61, sd 1.33 (182 samples); A ~ U(1,16): mean 8.5.
  EXPECT_NEAR(mean_of(log_dt), 0.5 * (std::log(1e-3) + std::log(1e-1)), 0.4);
  EXPECT_NEAR(mean_of(a), 8.5, 1.2);
  EXPECT_GT(std_of(log_dt), 1.0);

  auto in = values(m, "layers.0.mixer.in_proj.weight");
  const double in_bound = 1 / std::sqrt(448.0);
  EXPECT_LE(max_abs(in), in_bound);
  EXPECT_GE(max_abs(in), 0.999 * in_bound);
  EXPECT_NEAR(std_of(in), in_bound / std::sqrt(3.0), 0.01 * in_bound);
  auto conv = values(m, "layers.0.mixer.conv1d.weight");
  EXPECT_LE(max_abs(conv), 0.5);
  EXPECT_GE(max_abs(conv), 0.49);
  EXPECT_LE(max_abs(values(m, "layers.0.mixer.conv1d.bias")), 0.5);
  auto out = values(m, "layers.0.mixer.out_proj.weight");
  const double out_bound = 1 / std::sqrt(896.0) / std::sqrt(16.0);  // scaled by 1/√n_layers
  EXPECT_LE(max_abs(out), out_bound * (1 + 1e-6));
  EXPECT_GE(max_abs(out), 0.99 * out_bound);
}

TEST(ModelInit, SkaMixer) {
  const LanguageModel& m = echo50m();
  for (const char* w : {"layers.3.mixer.w_k.weight", "layers.3.mixer.w_q.weight"}) {
    // 392 ≤ 448 rows: W Wᵀ = I.
    auto v = values(m, w);
    const int64_t rows = 392, cols = 448;
    double err = 0;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < cols; ++k) dot += v[i * cols + k] * v[j * cols + k];
        err = std::max(err, std::fabs(dot - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(err, 1e-5) << w;
  }
  EXPECT_NE(values(m, "layers.3.mixer.w_k.weight"), values(m, "layers.3.mixer.w_q.weight"));
  auto wv = values(m, "layers.3.mixer.w_v.weight");
  const double xavier = std::sqrt(6.0 / (448 + 448));
  EXPECT_LE(max_abs(wv), xavier);
  EXPECT_GE(max_abs(wv), 0.999 * xavier);
  EXPECT_EQ(max_abs(values(m, "layers.3.mixer.w_o.weight")), 0.0);
  const double gamma_raw = values(m, "layers.3.mixer.gamma_raw")[0];
  EXPECT_NEAR(gamma_raw, std::log(0.2 / 0.8), 1e-6);
  EXPECT_NEAR(0.5 + 1 / (1 + std::exp(-gamma_raw)), 0.7, 1e-6);
  EXPECT_EQ(values(m, "layers.3.mixer.eta")[0], 1.5);

  ModelConfig c = preset("ska-1m");
  c.ska->write_gate = true;
  auto g = make_model(c, 3);
  EXPECT_EQ(g->params().get("layers.2.mixer.w_beta.weight").shape(), (Shape{4, 128}));
  EXPECT_EQ(max_abs(values(*g, "layers.2.mixer.w_beta.weight")), 0.0);
  EXPECT_EQ(max_abs(values(*g, "layers.2.mixer.w_beta.bias")), 0.0);
  for (double v : values(*g, "layers.3.mixer.filter_coef")) EXPECT_NEAR(v, 1.0 / 3.0, 1e-7);
}

TEST(ModelInit, MlpsEmbeddingAndNorms) {
  const LanguageModel& m = echo50m();
  auto emb = values(m, "embedding.weight");
  EXPECT_NEAR(mean_of(emb), 0.0, 1e-4);
  EXPECT_NEAR(std_of(emb), 0.02, 0.0002);
  std::vector<double> omega;
  for (int i = 0; i < 16; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (double v : values(m, p + "mlp.rot_gamma")) EXPECT_EQ(v, 1.0);
    auto o = values(m, p + "mlp.rot_omega");
    omega.insert(omega.end(), o.begin(), o.end());
    for (double v : values(m, p + "norm1.weight")) EXPECT_EQ(v, 1.0);
    for (double v : values(m, p + "norm2.weight")) EXPECT_EQ(v, 1.0);
  }
  EXPECT_NEAR(std_of(omega), 0.1, 0.004);  // 9728 samples
  auto lift = values(m, "layers.0.mlp.lift.weight");
  const double xavier = std::sqrt(6.0 / (448 + 1216));
  EXPECT_LE(max_abs(lift), xavier);
  EXPECT_GE(max_abs(lift), 0.999 * xavier);
  EXPECT_NEAR(std_of(lift), xavier / std::sqrt(3.0), 0.01 * xavier);
  for (double v : values(m, "norm_f.weight")) EXPECT_EQ(v, 1.0);

  auto s = make_model(preset("ssm-1m"), 5);
  auto gate = values(*s, "layers.0.mlp.gate.weight");
  EXPECT_LE(max_abs(gate), 1 / std::sqrt(128.0));
  auto down = values(*s, "layers.0.mlp.down.weight");
  EXPECT_LE(max_abs(down), 1 / std::sqrt(256.0));
  EXPECT_GE(max_abs(down), 0.99 / std::sqrt(256.0));
}

TEST(ModelInit, OrthogonalBothOrientations) {
  Rng rng(11);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{5, 9}, {9, 5}, {6, 6}}) {
    auto v = init::orthogonal_values(rows, cols, rng);
    // rows ≤ cols: W Wᵀ = I; rows > cols: Wᵀ W = I.
    const bool by_rows = rows <= cols;
    const int64_t n = by_rows ? rows : cols, len = by_rows ? cols : rows;
    double err = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < len; ++k)
          dot += by_rows ? v[i * cols + k] * v[j * cols + k] : v[k * cols + i] * v[k * cols + j];
        err = std::max(err, std::fabs(dot - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(err, 1e-13) << rows << "x" << cols;
  }
}

TEST(ModelInit, SeedDeterminesEverything) {
  auto a = make_model(preset("ska-1m"), 42), b = make_model(preset("ska-1m"), 42), c = make_model(preset("ska-1m"), 43);
  for (size_t i = 0; i < a->params().size(); ++i) {
    const auto& pa = a->params().all()[i];
    EXPECT_EQ(pa.tensor.to_vector(), b->params().all()[i].tensor.to_vector()) << pa.name;
  }
  EXPECT_NE(values(*a, "layers.0.mixer.in_proj.weight"), values(*c, "layers.0.mixer.in_proj.weight"));
  EXPECT_NE(values(*a, "embedding.weight"), values(*c, "embedding.weight"));
}

TEST(ModelParams, CastsKeepValuesAndRebuildTheRegistry) {
  auto m = make_model(tiny_config("MSA"), 3);
  auto before = m->params().get("layers.1.mixer.w_k.weight").to_vector();
  m->to(DType::F64);
  EXPECT_EQ(m->dtype(), DType::F64);
  for (const auto& p : m->params().all()) {
    EXPECT_EQ(p.tensor.dtype(), DType::F64) << p.name;
    EXPECT_TRUE(p.tensor.requires_grad() && p.tensor.is_leaf()) << p.name;
  }
  EXPECT_EQ(m->params().get("layers.1.mixer.w_k.weight").to_vector(), before);
  EXPECT_THROW(m->to(DType::I32), std::runtime_error);
  EXPECT_THROW(m->params().get("layers.9.mixer.D"), std::runtime_error);
}

}  // namespace
}  // namespace echo
