#include "data/tasks.h"

#include <map>
#include <set>

#include "test_util.h"

using namespace echo;

namespace {
void expect_well_formed(const Task& task, const Example& e) {
  ASSERT_EQ((int64_t)e.tokens.size(), task.seq_len()) << task.spec().str();
  ASSERT_EQ(e.targets.size(), e.tokens.size());
  ASSERT_EQ(e.mask.size(), e.tokens.size());
  bool in_context = true;
  for (size_t t = 0; t < e.tokens.size(); ++t) {
    EXPECT_GE(e.tokens[t], 0);
    EXPECT_LT(e.tokens[t], task.vocab_size());
    EXPECT_TRUE(e.mask[t] == 0 || e.mask[t] == 1);
    if (e.mask[t] == 0) in_context = false;
    else EXPECT_TRUE(in_context) << "mask must be 1 on a prefix only, position " << t;
    if (e.mask[t] == 1) EXPECT_EQ(e.targets[t], kIgnoreIndex) << "context positions are not scored";
  }
  EXPECT_FALSE(scored_positions(e).empty());
}

// Accuracy of a guesser that knows the format but binds nothing: it answers with a
// uniformly chosen value among those in the context (the tokens in the answer range).
double informed_guess_accuracy(const Task& task, int lo, int hi, int n, uint64_t seed) {
  Rng rng(seed), guess(seed + 1);
  int64_t right = 0, total = 0;
  for (int i = 0; i < n; ++i) {
    Example e = task.sample(rng);
    std::vector<int32_t> candidates;
    for (size_t t = 0; t < e.tokens.size(); ++t)
      if (e.mask[t] == 1 && e.tokens[t] >= lo && e.tokens[t] < hi) candidates.push_back(e.tokens[t]);
    for (int64_t p : scored_positions(e)) {
      right += candidates[guess.randint(0, (int64_t)candidates.size())] == e.targets[p];
      ++total;
    }
  }
  return double(right) / total;
}
}  // namespace

TEST(Tasks, MqarDefaultLayout) {
  auto task = make_task("mqar:M=4,gap=6");
  Rng rng(7);
  Example e = task->sample(rng);
  expect_well_formed(*task, e);
  ASSERT_EQ(e.tokens.size(), 4u * 2 + 6 + 4);
  std::map<int32_t, int32_t> kv;
  for (int i = 0; i < 4; ++i) {
    int32_t k = e.tokens[2 * i], v = e.tokens[2 * i + 1];
    EXPECT_GE(k, 0); EXPECT_LT(k, 32);
    EXPECT_GE(v, 32); EXPECT_LT(v, 64);
    EXPECT_EQ(kv.count(k), 0u) << "keys are drawn without replacement";
    kv[k] = v;
  }
  for (int t = 8; t < 14; ++t) { EXPECT_GE(e.tokens[t], 64); EXPECT_EQ(e.mask[t], 1); }
  std::set<int32_t> queried;
  for (int t = 14; t < 18; ++t) {
    EXPECT_EQ(e.mask[t], 0);
    ASSERT_TRUE(kv.count(e.tokens[t])) << "query block holds keys only (no values)";
    EXPECT_EQ(e.targets[t], kv[e.tokens[t]]);
    queried.insert(e.tokens[t]);
  }
  EXPECT_EQ(queried.size(), 4u) << "every key queried once";
  EXPECT_DOUBLE_EQ(task->chance_uniform(), 1.0 / 32);
  EXPECT_DOUBLE_EQ(task->chance_informed(), (1 + 3.0 / 32) / 4);
}

TEST(Tasks, MqarRevealLayoutAndEliminationBaseline) {
  auto task = make_task("mqar:M=4,gap=3,reveal=1");
  Rng rng(3);
  Example e = task->sample(rng);
  expect_well_formed(*task, e);
  for (int i = 0; i < 4; ++i) {
    int t = 8 + 3 + 2 * i;
    EXPECT_EQ(e.tokens[t + 1], e.targets[t]) << "the value follows its key in reveal mode";
    EXPECT_EQ(e.targets[t + 1], kIgnoreIndex);
  }
  EXPECT_NEAR(task->chance_informed(), (1 + 0.5 + 1.0 / 3 + 0.25) / 4, 1e-12);  // H_4/4 = 0.52
}

TEST(Tasks, MqarInformedChanceMatchesSimulation) {
  auto task = make_task("mqar:M=8,gap=16");
  double acc = informed_guess_accuracy(*task, 32, 64, 4000, 11);
  EXPECT_NEAR(acc, task->chance_informed(), 0.01);
  EXPECT_GT(task->chance_informed(), 1.0 / 8) << "repeated values lift it above 1/M";
}

TEST(Tasks, ZoologyVariant) {
  auto task = make_task("mqar:variant=zoology,M=4,T=64,V=128");
  Rng rng(5);
  for (int i = 0; i < 20; ++i) {
    Example e = task->sample(rng);
    expect_well_formed(*task, e);
    auto pos = scored_positions(e);
    ASSERT_EQ(pos.size(), 4u);
    for (int64_t p : pos) {
      EXPECT_GE(e.tokens[p], 1); EXPECT_LT(e.tokens[p], 64);
      EXPECT_EQ(e.tokens[p + 1], e.targets[p]);
      EXPECT_GE(e.targets[p], 64);
      bool in_context = false;
      for (int j = 0; j < 4; ++j)
        if (e.tokens[2 * j] == e.tokens[p] && e.tokens[2 * j + 1] == e.targets[p]) in_context = true;
      EXPECT_TRUE(in_context);
    }
  }
}

TEST(Tasks, TransferTasksAreWellFormedAndAnswerable) {
  for (const char* spec : {"niah:T=64,needles=2", "tooltrace:calls=6,filler=3", "sysprompt:vars=4,gap=20",
                           "multihop:hops=3,chains=2", "commonword:len=24,words=6"}) {
    auto task = make_task(spec);
    Rng rng(9);
    for (int i = 0; i < 50; ++i) {
      Example e = task->sample(rng);
      expect_well_formed(*task, e);
      for (int64_t p : scored_positions(e)) {
        // The answer is recoverable from the context: it appears there.
        bool present = false;
        for (size_t t = 0; t < e.tokens.size(); ++t) present |= e.mask[t] == 1 && e.tokens[t] == e.targets[p];
        EXPECT_TRUE(present) << spec;
      }
    }
  }
}

TEST(Tasks, MultiHopAnswerFollowsTheChain) {
  auto task = make_task("multihop:hops=3,chains=3");
  Rng rng(2);
  for (int n = 0; n < 30; ++n) {
    Example e = task->sample(rng);
    std::map<int32_t, int32_t> assign;  // lhs -> rhs
    for (size_t t = 0; t + 2 < e.tokens.size() && e.mask[t] == 1; t += 3) {
      ASSERT_EQ(e.tokens[t + 1], 64);
      assign[e.tokens[t]] = e.tokens[t + 2];
    }
    int64_t p = scored_positions(e).at(0);
    int32_t x = e.tokens[p];
    for (int hop = 0; hop < 10 && x < 32; ++hop) x = assign.at(x);
    EXPECT_EQ(x, e.targets[p]);
  }
}

TEST(Tasks, CommonWordWinnerIsStrictlyMostFrequent) {
  auto task = make_task("commonword:len=20,words=5");
  Rng rng(4);
  for (int n = 0; n < 50; ++n) {
    Example e = task->sample(rng);
    std::map<int32_t, int> count;
    for (size_t t = 0; t + 1 < e.tokens.size(); ++t) count[e.tokens[t]]++;
    int32_t answer = e.targets.back();
    for (auto& kv : count)
      if (kv.first != answer) EXPECT_LT(kv.second, count[answer]);
  }
}

TEST(Tasks, SeededAndReproducible) {
  auto task = make_task("mqar:M=8,gap=32");
  Rng a(42), b(42), c(43);
  EXPECT_EQ(task->sample(a).tokens, task->sample(b).tokens);
  Rng a2(42);
  EXPECT_NE(task->sample(a2).tokens, task->sample(c).tokens);
}

TEST(Tasks, BadSpecsNameTheProblem) {
  auto msg = [](const std::string& s) {
    try { make_task(s); } catch (const std::exception& e) { return std::string(e.what()); }
    return std::string("no error");
  };
  EXPECT_NE(msg("mqar:M=8,gapp=3").find("unknown key 'gapp'"), std::string::npos);
  EXPECT_NE(msg("mqar:M=x").find("M"), std::string::npos);
  EXPECT_NE(msg("mqar:M=40").find("M"), std::string::npos);
  EXPECT_NE(msg("nosuch:a=1").find("unknown task 'nosuch'"), std::string::npos);
  EXPECT_NE(msg("mqar:M").find("key=value"), std::string::npos);
}

TEST(Tasks, MixtureBatchPadsAndAlternates) {
  auto a = make_task("mqar:M=2,gap=2");     // T = 8
  auto b = make_task("sysprompt:vars=2,gap=10");  // T = 18
  Rng rng(1);
  Batch batch = make_batch({a.get(), b.get()}, 4, rng);
  ASSERT_EQ(batch.tokens.shape(), (Shape{4, 18}));
  auto tgt = batch.targets.to_int_vector();
  auto msk = batch.mask.to_int_vector();
  for (int t = 8; t < 18; ++t) {  // padding of the mqar rows
    EXPECT_EQ(tgt[0 * 18 + t], kIgnoreIndex);
    EXPECT_EQ(msk[0 * 18 + t], 0);
  }
  EXPECT_NE(tgt[1 * 18 + 17], kIgnoreIndex) << "row 1 is sysprompt, scored at its last position";
}
