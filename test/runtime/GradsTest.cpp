//===- GradsTest.cpp - Grads steps: checks, Session::grads, the CLI -------===//
//
// The artifacts here embed tiny_xent / tiny_xent_grad of tiny_kernels.c, a
// real mean cross entropy and its gradients (logits = emb[token] + bias);
// the expected values come from tinyGradsReference (TestUtil.cpp), computed
// in double.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/Session.h"
#include "colossus/runtime/TokenData.h"
#include "colossus/runtime/Weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace {

constexpr int V = 8, B = 2, S = 4, R = B * S;

std::string loadError(const ArtifactSpec &spec) {
  auto a = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  return a ? std::string("<loaded>") : a.message();
}

/// tinyGradsSpec plus the forward kernels of tinySpec: one artifact with a
/// forward step and a grads step sharing the tokens buffer and the params.
ArtifactSpec bothStepsSpec() {
  ArtifactSpec s = tinyGradsSpec();
  using K = schema::BufferKind;
  using D = schema::DType;
  for (const auto &[name, numArgs] :
       std::vector<std::pair<std::string, uint32_t>>{
           {"tiny_store_kv", 2}, {"tiny_embed", 4}, {"tiny_logits", 3}}) {
    KernelSpec k;
    k.name = name;
    k.numArgs = numArgs;
    s.kernels.push_back(k);
  }
  // 9 logits, 10 kv (tiny_kernels.c indexes the cache with S = 16), 11 hid.
  s.buffers.push_back(
      {"logits", K::output, D::f32, {R, V}, 0, uint64_t(R * V * 4)});
  s.buffers.push_back({"kv", K::state, D::f32, {B, 16, 1}, 0, B * 16 * 4});
  s.buffers.push_back(
      {"hid", K::arena, D::f32, {R, V}, R * V * 4, uint64_t(R * V * 4)});
  s.arenaBytes = 2 * R * V * 4;
  StepSpec fwd;
  fwd.launches = {{2, {0, 10}}, {3, {0, 2, 3, 11}}, {4, {11, 10, 9}}};
  fwd.tokens = 0;
  fwd.logits = 9;
  s.steps.insert(s.steps.begin(), fwd);
  return s;
}

class GradsModel : public ::testing::Test {
protected:
  void SetUp() override {
    emb = testValues(V * V, 31);
    bias = testValues(V, 32);
    art = dir.file("grads.colossus");
    weights = dir.file("w.safetensors");
    writeFile(art, buildArtifact(tinyGradsSpec()));
    writeFile(weights,
              safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb),
                                f32Tensor("model.bias", {V}, bias)}));
  }

  std::unique_ptr<Session> open(const std::string &path) {
    auto s = Session::create(path, {std::nullopt, WeightsSpec::file(weights)});
    EXPECT_TRUE(s) << s.message();
    return s ? std::move(s).value() : nullptr;
  }

  void expectMatchesReference(const GradsResult &got,
                              const std::vector<int32_t> &tokens,
                              const std::vector<int32_t> &targets) {
    TinyGrads ref = tinyGradsReference(emb, bias, tokens, targets);
    EXPECT_NEAR(got.loss, ref.loss, 1e-5 * std::max(1.0, ref.loss));
    ASSERT_EQ(got.grads.size(), 2u);
    // Artifact.params order, whatever the order of Step.grads.
    EXPECT_EQ(got.grads[0].name, "model.embed.weight");
    EXPECT_EQ(got.grads[0].shape, (std::vector<int64_t>{V, V}));
    EXPECT_EQ(got.grads[1].name, "model.bias");
    EXPECT_EQ(got.grads[1].shape, (std::vector<int64_t>{V}));
    ASSERT_EQ(got.grads[0].values.size(), size_t(V * V));
    ASSERT_EQ(got.grads[1].values.size(), size_t(V));
    double sq = 0.0;
    for (int i = 0; i < V * V; ++i) {
      EXPECT_NEAR(got.grads[0].values[i], ref.emb[i], 1e-6) << "emb " << i;
      sq += ref.emb[i] * ref.emb[i];
    }
    for (int i = 0; i < V; ++i) {
      EXPECT_NEAR(got.grads[1].values[i], ref.bias[i], 1e-6) << "bias " << i;
      sq += ref.bias[i] * ref.bias[i];
    }
    EXPECT_NEAR(got.gradNorm, std::sqrt(sq), 1e-6);
    EXPECT_EQ(got.gradNorm, gradientNorm(got.grads));
    EXPECT_GE(got.seconds, 0.0);
  }

  TempDir dir;
  std::vector<float> emb, bias;
  std::string art, weights;
  std::vector<int32_t> tokens = {1, 5, 2, 7, 0, 3, 3, 6};
  std::vector<int32_t> targets = {5, 2, 7, 0, 3, 3, 6, 4};
};

} // namespace

// ---- Check 6 for grads steps ----

TEST(GradsArtifact, LoadsAndIgnoresTheLogitsField) {
  ArtifactSpec spec = tinyGradsSpec();
  spec.steps[0].logits = 999; // unused by a grads step
  auto a = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(a) << a.message();
  const schema::Step *grads = (*a)->findStep(schema::StepKind::grads);
  ASSERT_NE(grads, nullptr);
  EXPECT_EQ(grads->name()->str(), "grads");
  EXPECT_EQ((*a)->findStep(schema::StepKind::forward), nullptr);
  EXPECT_EQ(grads->grads()->size(), 2u);
  EXPECT_EQ(loadError(bothStepsSpec()), "<loaded>");
}

TEST(GradsArtifact, RejectsBadTargets) {
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].targets = 42;
    EXPECT_THAT(loadError(s), HasSubstr("t.colossus: steps[0].targets = 42 is "
                                        "out of range (9 buffers)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].targets = 0;
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].targets = 0 is also steps[0].tokens"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].targets = 5;
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].targets: buffers[5] 'loss' must be an i32 "
                          "input buffer (it is output, f32)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[1].dtype = schema::DType::f32;
    EXPECT_THAT(loadError(s), HasSubstr("must be an i32 input buffer (it is "
                                        "input, f32)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[1].size = 4 * R + 4;
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].targets: buffers[1] 'targets' has 36 "
                          "bytes, the tokens buffer buffers[0] 'tokens' has "
                          "32"));
  }
  {
    // The tokens buffer is checked as in a forward step.
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[0].size = 4;
    s.buffers[1].size = 4;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].tokens: buffers[0] 'tokens' "
                                        "has 4 bytes, batch * seq i32 needs "
                                        "32"));
  }
}

TEST(GradsArtifact, RejectsBadLoss) {
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].loss = 9;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].loss = 9 is out of range "
                                        "(9 buffers)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].loss = 8; // probe: output i32
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].loss: buffers[8] 'probe' must be an f32 "
                          "output buffer (it is output, i32)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].loss = 4; // probs: arena
    EXPECT_THAT(loadError(s), HasSubstr("(it is arena, f32)"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[5].size = 2;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].loss: buffers[5] 'loss' has "
                                        "2 bytes, one f32 value needs 4"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[5].size = 16; // more than one value is allowed
    EXPECT_EQ(loadError(s), "<loaded>");
  }
}

TEST(GradsArtifact, RejectsBadGradients) {
  auto withGrads = [](std::vector<std::pair<std::string, uint32_t>> grads) {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].grads = std::move(grads);
    return loadError(s);
  };
  EXPECT_THAT(withGrads({{"model.bias", 7},
                         {"model.embed.weight", 6},
                         {"model.head.weight", 6}}),
              HasSubstr("t.colossus: steps[0].grads[2] 'model.head.weight' "
                        "names no parameter"));
  EXPECT_THAT(withGrads({{"model.bias", 7}, {"model.bias", 6}}),
              HasSubstr("steps[0].grads[1] 'model.bias' repeats "
                        "steps[0].grads[0]"));
  EXPECT_THAT(withGrads({{"model.bias", 7}}),
              HasSubstr("steps[0].grads: no gradient for params[0] "
                        "'model.embed.weight'"));
  EXPECT_THAT(withGrads({}), HasSubstr("no gradient for params[0]"));
  EXPECT_THAT(withGrads({{"model.bias", 7}, {"", 6}}),
              HasSubstr("steps[0].grads[1] has no name"));
  EXPECT_THAT(withGrads({{"model.bias", 70}, {"model.embed.weight", 6}}),
              HasSubstr("steps[0].grads[0] 'model.bias'.buffer = 70 is out of "
                        "range (9 buffers)"));
  EXPECT_THAT(withGrads({{"model.bias", 3}, {"model.embed.weight", 6}}),
              HasSubstr("steps[0].grads[0] 'model.bias': buffers[3] 'bias' "
                        "must be an f32 output buffer (it is param, f32)"));
  EXPECT_THAT(withGrads({{"model.bias", 8}, {"model.embed.weight", 6}}),
              HasSubstr("buffers[8] 'probe' must be an f32 output buffer (it "
                        "is output, i32)"));
  EXPECT_THAT(withGrads({{"model.bias", 7}, {"model.embed.weight", 5}}),
              HasSubstr("steps[0].grads[1] 'model.embed.weight': buffers[5] "
                        "'loss' is also steps[0].loss"));
  {
    // Two gradients in one buffer (sizes equal: a second param [8]).
    ArtifactSpec s = tinyGradsSpec();
    s.buffers.push_back({"bias2",
                         schema::BufferKind::param,
                         schema::DType::f32,
                         {V},
                         0,
                         V * 4});
    s.params.push_back({"model.bias2", {V}, 9, schema::ParamInit::zeros, 0});
    s.steps[0].grads.push_back({"model.bias2", 7});
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].grads[2] 'model.bias2': buffers[7] "
                          "'grad.bias' is also the buffer of "
                          "steps[0].grads[0]"));
  }
  EXPECT_THAT(withGrads({{"model.bias", 6}, {"model.embed.weight", 7}}),
              HasSubstr("steps[0].grads[0] 'model.bias': buffers[6] "
                        "'grad.emb' has 256 bytes, the parameter's f32 "
                        "gradient (shape [8]) needs 32"));
  {
    ArtifactSpec s = tinyGradsSpec();
    s.buffers[6].shape = {V * V}; // right size, wrong shape
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].grads[1] 'model.embed.weight': buffers[6] "
                          "'grad.emb' has shape [64], the parameter's is "
                          "[8, 8]"));
    s.buffers[6].shape = {}; // no shape: only the size is checked
    EXPECT_EQ(loadError(s), "<loaded>");
  }
}

TEST(GradsArtifact, RejectsUnknownAndRepeatedStepKinds) {
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps[0].kind = static_cast<schema::StepKind>(7);
    EXPECT_THAT(loadError(s), HasSubstr("steps[0]: unknown step kind 7"));
  }
  {
    ArtifactSpec s = tinyGradsSpec();
    s.steps.push_back(s.steps[0]);
    s.steps[1].name = "grads2";
    EXPECT_THAT(loadError(s), HasSubstr("steps[1] is a second grads step "
                                        "(steps[0] is one)"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps.push_back(s.steps[0]);
    EXPECT_THAT(loadError(s), HasSubstr("steps[1] is a second forward step"));
  }
}

// ---- Session::grads ----

TEST_F(GradsModel, LossAndGradientsMatchTheReference) {
  auto s = open(art);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->forwardStep(), nullptr);
  ASSERT_NE(s->gradsStep(), nullptr);
  auto r = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(r) << r.message();
  expectMatchesReference(*r, tokens, targets);
  // The whole compiled batch: nb = batch, nt = seq, pos0 = 0.
  const int32_t *probe = static_cast<const int32_t *>(s->bufferAddress(8));
  EXPECT_EQ(probe[0], B);
  EXPECT_EQ(probe[1], S);
  EXPECT_EQ(probe[2], 0);
}

TEST_F(GradsModel, EveryCallStartsFromZeroedGradients) {
  // tiny_xent_grad accumulates: a second call must not add to the first.
  auto s = open(art);
  ASSERT_TRUE(s);
  auto first = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(first) << first.message();
  auto again = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(again) << again.message();
  EXPECT_EQ(again->loss, first->loss);
  for (size_t p = 0; p < 2; ++p)
    EXPECT_EQ(again->grads[p].values, first->grads[p].values);
  EXPECT_EQ(again->gradNorm, first->gradNorm);
  std::vector<int32_t> t2 = {7, 7, 0, 1, 2, 3, 4, 5};
  std::vector<int32_t> y2 = {0, 1, 2, 3, 4, 5, 6, 7};
  auto other = s->grads(t2.data(), y2.data());
  ASSERT_TRUE(other) << other.message();
  expectMatchesReference(*other, t2, y2);
}

TEST_F(GradsModel, AccumulateGradsAddsToTheBuffers) {
  // Gradient accumulation: grads() on one micro-batch, accumulateGrads() on
  // the next leaves the sum of both gradients (the loss is the last one's).
  auto s = open(art);
  ASSERT_TRUE(s);
  std::vector<int32_t> t2 = {7, 7, 0, 1, 2, 3, 4, 5};
  std::vector<int32_t> y2 = {0, 1, 2, 3, 4, 5, 6, 7};
  auto a = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(a) << a.message();
  auto b = s->grads(t2.data(), y2.data());
  ASSERT_TRUE(b) << b.message();
  auto first = s->grads(tokens.data(), targets.data(), /*readGradients=*/false);
  ASSERT_TRUE(first) << first.message();
  auto sum = s->accumulateGrads(t2.data(), y2.data());
  ASSERT_TRUE(sum) << sum.message();
  EXPECT_EQ(sum->loss, b->loss);
  ASSERT_EQ(sum->grads.size(), 2u);
  for (size_t p = 0; p < 2; ++p) {
    ASSERT_EQ(sum->grads[p].values.size(), a->grads[p].values.size());
    for (size_t i = 0; i < sum->grads[p].values.size(); ++i)
      EXPECT_FLOAT_EQ(sum->grads[p].values[i],
                      a->grads[p].values[i] + b->grads[p].values[i])
          << sum->grads[p].name << "[" << i << "]";
  }
  // A plain grads() starts again from zero.
  auto again = s->grads(t2.data(), y2.data());
  ASSERT_TRUE(again) << again.message();
  for (size_t p = 0; p < 2; ++p)
    EXPECT_EQ(again->grads[p].values, b->grads[p].values);
}

TEST_F(GradsModel, IgnoreIndexTargets) {
  auto s = open(art);
  ASSERT_TRUE(s);
  std::vector<int32_t> y = targets;
  y[1] = y[4] = y[7] = kIgnoreIndex;
  auto r = s->grads(tokens.data(), y.data());
  ASSERT_TRUE(r) << r.message();
  expectMatchesReference(*r, tokens, y);
  std::vector<int32_t> none(R, kIgnoreIndex);
  r = s->grads(tokens.data(), none.data());
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(r->loss, 0.0f);
  EXPECT_EQ(r->gradNorm, 0.0);
}

TEST_F(GradsModel, RejectsIdsOutOfRange) {
  auto s = open(art);
  ASSERT_TRUE(s);
  std::vector<int32_t> t = tokens, y = targets;
  t[5] = V;
  auto r = s->grads(t.data(), y.data());
  ASSERT_FALSE(r);
  EXPECT_THAT(r.message(), HasSubstr("token id 8 at index 5 (sample 1, "
                                     "position 1) is out of range [0, 8)"));
  t[5] = -1;
  EXPECT_THAT(s->grads(t.data(), y.data()).message(),
              HasSubstr("token id -1 at index 5"));
  t = tokens;
  y[6] = V;
  EXPECT_THAT(s->grads(t.data(), y.data()).message(),
              HasSubstr("target id 8 at index 6 (sample 1, position 2) is out "
                        "of range [0, 8) and is not the ignore index -100"));
  y[6] = -1;
  EXPECT_THAT(s->grads(t.data(), y.data()).message(),
              HasSubstr("target id -1 at index 6"));
  EXPECT_THAT(s->grads(nullptr, y.data()).message(), HasSubstr("null"));
}

TEST_F(GradsModel, ForwardOnAGradsArtifactIsAnError) {
  auto s = open(art);
  ASSERT_TRUE(s);
  auto f = s->forward({1, 2});
  ASSERT_FALSE(f);
  EXPECT_THAT(f.message(),
              HasSubstr(art + ": the artifact has no forward step"));
  EXPECT_THAT(f.message(), HasSubstr("--step=train"));
  EXPECT_THAT(s->generate({1}, 2, SamplingParams{}).message(),
              HasSubstr("has no forward step"));
  int32_t id = 1;
  EXPECT_THAT(s->writeTokens(&id, 1).message(),
              HasSubstr("has no forward step"));
  EXPECT_THAT(s->runStep(1, 1, 0).message(), HasSubstr("has no forward step"));
  float out[V];
  EXPECT_THAT(s->readLogits(out, 1).message(),
              HasSubstr("has no forward step"));
}

TEST_F(GradsModel, GradsOnAForwardArtifactIsAnError) {
  writeFile(dir.file("fwd.colossus"), buildArtifact(tinySpec()));
  writeFile(dir.file("fwd.safetensors"),
            safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb),
                              f32Tensor("model.bias", {V}, bias)}));
  auto s = Session::create(
      dir.file("fwd.colossus"),
      {std::nullopt, WeightsSpec::file(dir.file("fwd.safetensors"))});
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ((*s)->gradsStep(), nullptr);
  std::vector<int32_t> ids(16, 1);
  auto r = (*s)->grads(ids.data(), ids.data());
  ASSERT_FALSE(r);
  EXPECT_THAT(r.message(), HasSubstr(dir.file("fwd.colossus") +
                                     ": the artifact has no grads step: "
                                     "compile with --step=train"));
}

TEST_F(GradsModel, OneSessionRunsBothKindsOfStep) {
  writeFile(dir.file("both.colossus"), buildArtifact(bothStepsSpec()));
  auto s = open(dir.file("both.colossus"));
  ASSERT_TRUE(s);
  auto r = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(r) << r.message();
  expectMatchesReference(*r, tokens, targets);
  auto logits = s->forward({1, 2, 3});
  ASSERT_TRUE(logits) << logits.message();
  std::vector<float> ref = tinyReference(emb, bias, {}, {1, 2, 3}, 0);
  ASSERT_EQ(logits->size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR((*logits)[i], ref[i], 1e-5f) << i;
  r = s->grads(tokens.data(), targets.data());
  ASSERT_TRUE(r) << r.message();
  expectMatchesReference(*r, tokens, targets);
}

TEST(GradsSession, NeedsAStep) {
  ArtifactSpec spec = tinySpec();
  spec.steps.clear();
  auto art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art) << art.message();
  auto session = Session::create(std::move(art).value(),
                                 {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(),
              HasSubstr("t.colossus: the artifact has neither a forward nor a "
                        "grads step"));
}

TEST(GradsSession, GradientNormAccumulatesInDouble) {
  std::vector<ParamGradient> g(2);
  g[0].values = {3.0f, 0.0f};
  g[1].values = {4.0f};
  EXPECT_EQ(gradientNorm(g), 5.0);
  EXPECT_EQ(gradientNorm({}), 0.0);
  // Squares of 1e-23 underflow to zero in float, not in double.
  std::vector<ParamGradient> tiny(1);
  tiny[0].values.assign(100, 1e-23f);
  EXPECT_NEAR(gradientNorm(tiny), 10.0 * double(1e-23f), 1e-30);
}

// ---- colossus-run ART grads ----

namespace {

class GradsCli : public GradsModel {
protected:
  void SetUp() override {
    GradsModel::SetUp();
    // 21 uint16 tokens: W = (21 - 1) / 4 = 5 windows.
    for (int i = 0; i < 21; ++i)
      fileTokens.push_back(static_cast<uint16_t>((i * 5 + 3) % V));
    data = dir.file("train.bin");
    writeTokens(data, fileTokens);
    writeText(data + ".json", R"({"dtype": "uint16"})");
    writeFile(dir.file("fwd.colossus"), buildArtifact(tinySpec()));
  }
  static void writeTokens(const std::string &path,
                          const std::vector<uint16_t> &ids) {
    std::vector<uint8_t> bytes(ids.size() * 2);
    std::memcpy(bytes.data(), ids.data(), bytes.size());
    writeFile(path, bytes);
  }
  /// The batch of data step k in sequential order, by the documented
  /// formula: w = (k * B + i) mod W, inputs = tokens[w*S + j], targets
  /// shifted by one.
  void sequentialBatch(int64_t k, std::vector<int32_t> &x,
                       std::vector<int32_t> &y) const {
    const int64_t W = (static_cast<int64_t>(fileTokens.size()) - 1) / S;
    x.assign(R, 0);
    y.assign(R, 0);
    for (int64_t i = 0; i < B; ++i) {
      int64_t w = (k * B + i) % W;
      for (int64_t j = 0; j < S; ++j) {
        x[i * S + j] = fileTokens[w * S + j];
        y[i * S + j] = fileTokens[w * S + j + 1];
      }
    }
  }
  CommandResult run(const std::string &args) {
    return runCommand(std::string(COLOSSUS_RUN_BIN) + " " + args);
  }
  void expectError(const std::string &args, int code,
                   const std::string &message) {
    CommandResult r = run(args);
    EXPECT_EQ(r.exitCode, code) << args << "\n" << r.err;
    EXPECT_THAT(r.err, StartsWith("colossus-run: error: ")) << args;
    EXPECT_THAT(r.err, HasSubstr(message)) << args;
    EXPECT_EQ(r.out, "") << args;
  }
  /// The JSON line of a successful run.
  nlohmann::json runJson(const std::string &args) {
    CommandResult r = run(args + " --json");
    EXPECT_EQ(r.exitCode, 0) << args << "\n" << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    return nlohmann::json::parse(r.out);
  }

  std::vector<uint16_t> fileTokens;
  std::string data;
};

} // namespace

TEST_F(GradsCli, JsonMatchesTheSessionOnTheDocumentedBatch) {
  std::vector<int32_t> x, y;
  for (int64_t k : {0, 3}) { // step 3 wraps: windows 6, 7 -> 1, 2
    sequentialBatch(k, x, y);
    auto s = open(art);
    ASSERT_TRUE(s);
    auto expected = s->grads(x.data(), y.data());
    ASSERT_TRUE(expected) << expected.message();
    expectMatchesReference(*expected, x, y);
    std::string args = art + " grads --weights " + weights + " --data " + data;
    if (k)
      args += " --step-index " + std::to_string(k);
    auto j = runJson(args);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["loss"].get<double>(), double(expected->loss)) << k;
    EXPECT_DOUBLE_EQ(j["grad_norm"].get<double>(), expected->gradNorm) << k;
    EXPECT_EQ(j["tokens"], R);
    EXPECT_TRUE(j["time_s"].is_number());
  }
  // --data-order=sequential is the default.
  EXPECT_EQ(
      runJson(art + " grads --weights " + weights + " --data " + data +
              " --data-order sequential")["loss"],
      runJson(art + " grads --weights " + weights + " --data " + data)["loss"]);
}

TEST_F(GradsCli, RandomOrderUsesTheSeed) {
  auto tokenData = TokenData::open(data, {std::nullopt, S, V});
  ASSERT_TRUE(tokenData) << tokenData.message();
  std::vector<int32_t> x(R), y(R);
  ASSERT_TRUE(
      (*tokenData)
          ->fillBatch(2, B, S, DataOrder::Random, 5, x.data(), y.data()));
  auto s = open(art);
  ASSERT_TRUE(s);
  auto expected = s->grads(x.data(), y.data());
  ASSERT_TRUE(expected) << expected.message();
  auto j = runJson(art + " grads --weights " + weights + " --data " + data +
                   " --data-order=random --seed 5 --step-index=2");
  EXPECT_EQ(j["loss"].get<double>(), double(expected->loss));
  EXPECT_DOUBLE_EQ(j["grad_norm"].get<double>(), expected->gradNorm);
}

TEST_F(GradsCli, RandomInitUsesTheSeed) {
  std::vector<int32_t> x, y;
  sequentialBatch(0, x, y);
  auto s = Session::create(art, {std::nullopt, WeightsSpec::random(3)});
  ASSERT_TRUE(s) << s.message();
  auto expected = (*s)->grads(x.data(), y.data());
  ASSERT_TRUE(expected) << expected.message();
  auto j = runJson(art + " grads --init=random --seed 3 --data " + data);
  EXPECT_EQ(j["loss"].get<double>(), double(expected->loss));
  EXPECT_DOUBLE_EQ(j["grad_norm"].get<double>(), expected->gradNorm);
}

TEST_F(GradsCli, TextLine) {
  CommandResult r =
      run(art + " grads --weights " + weights + " --data " + data);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("loss "));
  EXPECT_THAT(r.out, HasSubstr(" grad_norm "));
  EXPECT_THAT(r.out, HasSubstr(" tokens 8 ("));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);
}

TEST_F(GradsCli, GradsOutReadsBack) {
  std::vector<int32_t> x, y;
  sequentialBatch(1, x, y);
  auto s = open(art);
  ASSERT_TRUE(s);
  auto expected = s->grads(x.data(), y.data());
  ASSERT_TRUE(expected) << expected.message();
  std::string out = dir.file("g.safetensors");
  runJson(art + " grads --weights " + weights + " --data " + data +
          " --step-index 1 --grads-out " + out);
  auto file = SafetensorsFile::open(out);
  ASSERT_TRUE(file) << file.message();
  EXPECT_EQ((*file)->names(),
            (std::vector<std::string>{"model.bias", "model.embed.weight"}));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const ParamGradient &g : expected->grads) {
    const SafetensorsTensor *t = (*file)->find(g.name);
    ASSERT_NE(t, nullptr) << g.name;
    EXPECT_EQ(t->dtype, "F32");
    EXPECT_EQ(t->shape, g.shape);
    ASSERT_EQ(t->bytes, g.values.size() * 4);
    std::vector<float> values(g.values.size());
    std::memcpy(values.data(), t->data, t->bytes);
    EXPECT_EQ(values, g.values) << g.name; // bit for bit
  }
  // The gradients are those of the reference.
  TinyGrads ref = tinyGradsReference(emb, bias, x, y);
  std::vector<float> gb(V);
  std::memcpy(gb.data(), (*file)->find("model.bias")->data, V * 4);
  for (int i = 0; i < V; ++i)
    EXPECT_NEAR(gb[i], ref.bias[i], 1e-6);
}

TEST_F(GradsCli, DataDTypeOption) {
  std::vector<uint8_t> bytes(fileTokens.size() * 4);
  for (size_t i = 0; i < fileTokens.size(); ++i) {
    uint32_t v = fileTokens[i];
    std::memcpy(bytes.data() + 4 * i, &v, 4);
  }
  writeFile(dir.file("u32.bin"), bytes); // no sidecar
  auto a = runJson(art + " grads --weights " + weights + " --data " +
                   dir.file("u32.bin") + " --data-dtype uint32");
  auto b = runJson(art + " grads --weights " + weights + " --data " + data);
  EXPECT_EQ(a["loss"], b["loss"]);
  EXPECT_EQ(a["grad_norm"], b["grad_norm"]);
  expectError(art + " grads --weights " + weights + " --data " +
                  dir.file("u32.bin"),
              1, "the token dtype is not known");
  expectError(art + " grads --weights " + weights + " --data " + data +
                  " --data-dtype uint32",
              1, "disagrees with uint16");
}

TEST_F(GradsCli, UsageErrorsExitWith2) {
  const std::string base = art + " grads --weights " + weights;
  expectError(base, 2, "the 'grads' command needs --data TOKENS.bin");
  expectError(art + " grads --data " + data, 2,
              "needs --weights PATH or --init=random");
  expectError(base + " --init=random --data " + data, 2, "mutually exclusive");
  expectError(base + " --data " + data + " --data-dtype int8", 2,
              "--data-dtype: unknown dtype 'int8'");
  expectError(base + " --data " + data + " --data-order shuffled", 2,
              "--data-order: unknown order 'shuffled'");
  expectError(base + " --data " + data + " --step-index -1", 2,
              "--step-index: '-1' is not a non-negative integer");
  expectError(base + " --data " + data + " --step-index 1x", 2, "--step-index");
  expectError(base + " --data " + data + " --prompt-ids 1", 2,
              "--prompt-ids is not an option of the 'grads' command");
  expectError(base + " --data " + data + " --logits-out x.npy", 2,
              "--logits-out is not an option of the 'grads' command");
  expectError(art +
                  " forward --init=random --prompt-ids 1 --logits-out x.npy "
                  "--data " +
                  data,
              2, "--data is not an option of the 'forward' command");
  expectError(art + " generate --init=random --prompt-ids 1 --grads-out g", 2,
              "--grads-out is not an option of the 'generate' command");
  expectError(art + " fit", 2,
              "unknown command 'fit' (expected info, forward, generate, "
              "grads or train)");
}

TEST_F(GradsCli, BadInputsExitWith1) {
  const std::string base = art + " grads --weights " + weights;
  // A token id >= vocab inside the batch of step 0.
  std::vector<uint16_t> bad = fileTokens;
  bad[6] = 77;
  writeTokens(dir.file("bad.bin"), bad);
  expectError(base + " --data " + dir.file("bad.bin") + " --data-dtype uint16",
              1,
              "token data " + dir.file("bad.bin") +
                  ": token 6 (byte offset 12) has id 77, not below the "
                  "vocabulary size 8");
  expectError(base + " --data " + dir.file("none.bin") +
                  " --data-dtype "
                  "uint16",
              1, dir.file("none.bin"));
  writeTokens(dir.file("short.bin"), {1, 2, 3});
  expectError(base + " --data " + dir.file("short.bin") +
                  " --data-dtype "
                  "uint16",
              1, dir.file("short.bin"));
  expectError(base + " --data " + data + " --grads-out " +
                  dir.file("no/dir/g.safetensors"),
              1, dir.file("no/dir/g.safetensors"));
  expectError(art + " grads --weights " + dir.file("none.safetensors") +
                  " --data " + data,
              1, "cannot open");
  expectError(art + " grads --init=random --device cuda --data " + data, 1,
              "runs on the cpu device, not on the cuda device");
}

TEST_F(GradsCli, WrongKindOfArtifact) {
  expectError(dir.file("fwd.colossus") + " grads --init=random --data " + data,
              1,
              dir.file("fwd.colossus") +
                  ": the artifact has no grads step: compile with "
                  "--step=train");
  expectError(art + " forward --weights " + weights +
                  " --prompt-ids 1,2 --logits-out " + dir.file("l.npy"),
              1, art + ": the artifact has no forward step");
  expectError(art + " generate --weights " + weights + " --prompt-ids 1,2", 1,
              "compiled with --step=train");
  // The artifact's kind is reported before any weights are read.
  expectError(art + " generate --weights " + dir.file("none.safetensors") +
                  " --prompt-ids 1",
              1, "has no forward step");
}

TEST_F(GradsCli, InfoShowsTheStepKind) {
  CommandResult r = run(art + " info");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["steps"].size(), 1u);
  EXPECT_EQ(j["steps"][0]["name"], "grads");
  EXPECT_EQ(j["steps"][0]["kind"], "grads");
  EXPECT_EQ(j["steps"][0]["launches"], 2);
  EXPECT_EQ(j["steps"][0]["grads"], 2);
  EXPECT_EQ(j["batch"], B);
  EXPECT_EQ(j["seq"], S);
  r = run(dir.file("fwd.colossus") + " info");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["steps"][0]["kind"], "forward");
  EXPECT_FALSE(j["steps"][0].contains("grads"));
}

TEST_F(GradsCli, HelpDocumentsTheGradsCommand) {
  CommandResult r = run("--help");
  EXPECT_EQ(r.exitCode, 0);
  for (const char *flag : {"grads", "--data", "--data-dtype", "--data-order",
                           "--step-index", "--grads-out", "--step=train"})
    EXPECT_THAT(r.out, HasSubstr(flag));
}
