//===- SessionTest.cpp - Real execution on the cpu device -----------------===//
//
// The artifacts here embed the shared object built from tiny_kernels.c; the
// expected logits come from tinyReference (TestUtil.cpp), an independent
// restatement of the kernels' semantics.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Session.h"
#include "colossus/runtime/Weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <set>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

constexpr int V = 8;

class TinyModel : public ::testing::Test {
protected:
  void SetUp() override {
    emb = testValues(V * V, 11);
    bias = testValues(V, 12);
    artifactPath = dir.file("tiny.colossus");
    weightsPath = dir.file("tiny.safetensors");
    writeFile(artifactPath, buildArtifact(tinySpec()));
    writeFile(weightsPath,
              safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb),
                                f32Tensor("model.bias", {V}, bias)}));
  }

  std::unique_ptr<Session> open(const std::string &weights) {
    auto s = Session::create(artifactPath,
                             {std::nullopt, WeightsSpec::file(weights)});
    EXPECT_TRUE(s) << s.message();
    return s ? std::move(s).value() : nullptr;
  }

  /// Greedy / sampled generation computed on the reference model.
  std::vector<int32_t> referenceGenerate(const std::vector<int32_t> &prompt,
                                         int64_t maxNew,
                                         const SamplingParams &p) {
    Sampler sampler(p);
    std::vector<int32_t> context = prompt, out;
    std::vector<float> logits =
        tinyReference(emb, bias, {}, prompt, /*pos0=*/0);
    int32_t next = static_cast<int32_t>(
        sampler.sample(logits.data() + (prompt.size() - 1) * V, V));
    out.push_back(next);
    for (int64_t i = 0; i + 1 < maxNew; ++i) {
      int64_t pos0 = static_cast<int64_t>(context.size());
      logits = tinyReference(emb, bias, context, {next}, pos0);
      context.push_back(next);
      next = static_cast<int32_t>(sampler.sample(logits.data(), V));
      out.push_back(next);
    }
    return out;
  }

  TempDir dir;
  std::vector<float> emb, bias;
  std::string artifactPath, weightsPath;
};

void expectNear(const std::vector<float> &a, const std::vector<float> &b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], 1e-5f) << "index " << i;
}

} // namespace

TEST_F(TinyModel, ForwardMatchesReference) {
  auto s = open(weightsPath);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->deviceKind(), DeviceKind::Cpu);
  std::vector<int32_t> tokens = {1, 5, 3, 7, 0};
  auto logits = s->forward(tokens);
  ASSERT_TRUE(logits) << logits.message();
  expectNear(*logits, tinyReference(emb, bias, {}, tokens, 0));
  // The state is reset per request: the same call gives the same logits.
  auto again = s->forward(tokens);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *logits);
  // A full-capacity prompt.
  std::vector<int32_t> full(16);
  for (int i = 0; i < 16; ++i)
    full[i] = i % V;
  auto l16 = s->forward(full);
  ASSERT_TRUE(l16) << l16.message();
  expectNear(*l16, tinyReference(emb, bias, {}, full, 0));
}

TEST_F(TinyModel, LowLevelStepsKeepTheState) {
  auto s = open(weightsPath);
  ASSERT_TRUE(s);
  std::vector<int32_t> prompt = {3, 1, 4};
  ASSERT_TRUE(s->resetState());
  ASSERT_TRUE(s->writeTokens(prompt.data(), prompt.size()));
  ASSERT_TRUE(s->runStep(1, 3, 0));
  int32_t next = 6;
  ASSERT_TRUE(s->writeTokens(&next, 1));
  ASSERT_TRUE(s->runStep(1, 1, 3));
  std::vector<float> row(V);
  ASSERT_TRUE(s->readLogits(row.data(), 1));
  expectNear(row, tinyReference(emb, bias, prompt, {next}, 3));
  EXPECT_THAT(s->runStep(1, 1, 16).message(),
              HasSubstr("invalid active region nb = 1, nt = 1, pos0 = 16"));
  EXPECT_FALSE(s->runStep(2, 1, 0));
  EXPECT_FALSE(s->runStep(1, 0, 0));
}

TEST_F(TinyModel, GenerateGreedyMatchesReference) {
  auto s = open(weightsPath);
  ASSERT_TRUE(s);
  std::vector<int32_t> prompt = {2, 4, 6};
  auto r = s->generate(prompt, 13, SamplingParams{});
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(r->promptTokens, 3);
  EXPECT_EQ(r->tokens, referenceGenerate(prompt, 13, SamplingParams{}));
  EXPECT_GE(r->seconds, 0.0);
  // The pretend KV term makes the greedy choice change along the way.
  std::set<int32_t> distinct(r->tokens.begin(), r->tokens.end());
  EXPECT_GT(distinct.size(), 1u);
  auto none = s->generate(prompt, 0, SamplingParams{});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->tokens.empty());
}

TEST_F(TinyModel, GenerateSamplingIsDeterministic) {
  auto s = open(weightsPath);
  ASSERT_TRUE(s);
  std::vector<int32_t> prompt = {7};
  SamplingParams p{1.5, 5, 0.95, 1234};
  auto a = s->generate(prompt, 15, p);
  auto b = s->generate(prompt, 15, p);
  ASSERT_TRUE(a) << a.message();
  ASSERT_TRUE(b);
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->tokens, referenceGenerate(prompt, 15, p));
}

TEST_F(TinyModel, RejectsBadRequests) {
  auto s = open(weightsPath);
  ASSERT_TRUE(s);
  EXPECT_THAT(s->generate({1, 2, 3}, 14, {}).message(),
              HasSubstr("the prompt of 3 tokens + 14 new tokens exceeds the "
                        "artifact's sequence capacity seq = 16"));
  EXPECT_TRUE(s->generate({1, 2, 3}, 13, {}));
  EXPECT_THAT(s->forward({}).message(), HasSubstr("empty"));
  EXPECT_THAT(s->forward({1, 8}).message(),
              HasSubstr("token id 8 at position 1 is out of range [0, 8)"));
  EXPECT_THAT(s->forward({-1}).message(), HasSubstr("out of range"));
  EXPECT_THAT(s->forward(std::vector<int32_t>(17, 1)).message(),
              HasSubstr("sequence capacity"));
  EXPECT_THAT(s->generate({1}, 2, {-1.0, 0, 1.0, 0}).message(),
              HasSubstr("--temperature"));
}

TEST_F(TinyModel, HalfPrecisionAndShardedWeights) {
  // emb as F16, bias as BF16: test values are exact in both.
  writeFile(dir.file("model-1.safetensors"),
            safetensorsBytes({f16Tensor("model.embed.weight", {V, V}, emb)}));
  writeFile(dir.file("model-2.safetensors"),
            safetensorsBytes({bf16Tensor("model.bias", {V}, bias)}));
  writeText(dir.file("model.safetensors.index.json"),
            R"({"weight_map": {"model.embed.weight": "model-1.safetensors",
                               "model.bias": "model-2.safetensors"}})");
  auto s = open(dir.path());
  ASSERT_TRUE(s);
  std::vector<int32_t> tokens = {0, 2, 4};
  auto logits = s->forward(tokens);
  ASSERT_TRUE(logits);
  expectNear(*logits, tinyReference(emb, bias, {}, tokens, 0));
}

TEST_F(TinyModel, WeightsMismatchIsAnError) {
  writeFile(dir.file("partial.safetensors"),
            safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb)}));
  auto s = Session::create(
      artifactPath,
      {std::nullopt, WeightsSpec::file(dir.file("partial.safetensors"))});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.message(), "weights " + dir.file("partial.safetensors") +
                             ": missing tensor 'model.bias'");
  writeFile(dir.file("shape.safetensors"),
            safetensorsBytes({f32Tensor("model.embed.weight", {V * V}, emb),
                              f32Tensor("model.bias", {V}, bias)}));
  s = Session::create(
      artifactPath,
      {std::nullopt, WeightsSpec::file(dir.file("shape.safetensors"))});
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'model.embed.weight' has shape "
                                     "[64], the artifact expects [8, 8]"));
}

TEST_F(TinyModel, RandomInitIsDeterministic) {
  auto create = [&](uint64_t seed) {
    auto s = Session::create(artifactPath,
                             {DeviceKind::Cpu, WeightsSpec::random(seed)});
    EXPECT_TRUE(s) << s.message();
    return std::move(s).value();
  };
  auto a = create(3), b = create(3), c = create(4);
  std::vector<int32_t> tokens = {1, 2, 3};
  auto la = a->forward(tokens), lb = b->forward(tokens),
       lc = c->forward(tokens);
  ASSERT_TRUE(la && lb && lc);
  EXPECT_EQ(*la, *lb);
  EXPECT_NE(*la, *lc);
  // model.bias has init = ones; the embedding is normal(0, 0.5).
  const float *biasBuf = static_cast<const float *>(a->bufferAddress(3));
  for (int v = 0; v < V; ++v)
    EXPECT_EQ(biasBuf[v], 1.0f);
  const float *embBuf = static_cast<const float *>(a->bufferAddress(2));
  std::vector<float> e(embBuf, embBuf + V * V);
  expectNear(*la, tinyReference(e, std::vector<float>(V, 1.0f), {}, tokens, 0));
  // The parameters are generated on worker threads: each holds exactly what
  // a sequential initParam of its index gives.
  const schema::Artifact &root = a->artifact().root();
  for (uint32_t i = 0; i < a->artifact().numParams(); ++i) {
    const schema::Param *param = root.params()->Get(i);
    size_t count = root.buffers()->Get(param->buffer())->size() / 4;
    std::vector<float> want(count);
    initParam(*param, 3, i, want.data(), count);
    const float *got =
        static_cast<const float *>(a->bufferAddress(param->buffer()));
    EXPECT_EQ(std::vector<float>(got, got + count), want) << "param " << i;
  }
}

TEST_F(TinyModel, SeveralSessionsAtOnce) {
  // Each session dlopens its own copy of the object from its own memfd.
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 4; ++i) {
    sessions.push_back(open(weightsPath));
    ASSERT_TRUE(sessions.back());
  }
  sessions.erase(sessions.begin() + 1); // free one in the middle
  sessions.push_back(open(weightsPath));
  ASSERT_TRUE(sessions.back());
  for (auto &s : sessions) {
    auto l = s->forward({5, 6});
    ASSERT_TRUE(l);
    expectNear(*l, tinyReference(emb, bias, {}, {5, 6}, 0));
  }
}

TEST(CpuDevice, MissingSymbolIsNamed) {
  ArtifactSpec spec = tinySpec();
  spec.kernels[1].name = "tiny_nope";
  auto art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art) << art.message();
  auto session = Session::create(std::move(art).value(),
                                 {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(),
              HasSubstr("t.colossus: kernels[1]: symbol 'tiny_nope' not found "
                        "in cpu_object"));
}

TEST(CpuDevice, GarbageObjectIsAnError) {
  ArtifactSpec spec = tinySpec();
  spec.cpuObject = std::vector<uint8_t>(1000, 0x5a);
  auto art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art);
  auto session = Session::create(std::move(art).value(),
                                 {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(),
              HasSubstr("t.colossus: cannot load cpu_object as a shared "
                        "object"));
  spec.cpuObject.clear();
  art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art);
  session = Session::create(std::move(art).value(),
                            {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(), HasSubstr("cpu_object is empty"));
}

TEST(CpuDevice, NeedsAForwardOrGradsStep) {
  // Steps are found by Step.kind; the name is informative.
  ArtifactSpec spec = tinySpec();
  spec.steps[0].name = "train";
  auto art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art);
  auto session = Session::create(std::move(art).value(),
                                 {std::nullopt, WeightsSpec::random(0)});
  ASSERT_TRUE(session) << session.message();
  EXPECT_NE((*session)->forwardStep(), nullptr);
  spec.steps.clear();
  art = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  ASSERT_TRUE(art);
  session = Session::create(std::move(art).value(),
                            {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(),
              HasSubstr("has neither a forward nor a grads step"));
}

TEST(CudaDevice, NoDriverIsAClearError) {
  if (void *h = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    ::dlclose(h);
    GTEST_SKIP() << "a CUDA driver is installed on this machine";
  }
  ArtifactSpec spec = tinySpec();
  spec.target = schema::Target::sm_90a;
  spec.cpuObject.clear();
  for (auto &k : spec.kernels)
    k.ptx = ".version 8.0\n.target sm_90a\n.address_size 64\n";
  auto art = Artifact::loadBuffer(buildArtifact(spec), "gpu.colossus");
  ASSERT_TRUE(art) << art.message();
  auto session = Session::create(std::move(art).value(),
                                 {std::nullopt, WeightsSpec::random(0)});
  ASSERT_FALSE(session);
  EXPECT_THAT(session.message(), HasSubstr("no CUDA driver"));
  auto device = createDevice(DeviceKind::Cuda);
  ASSERT_FALSE(device);
  EXPECT_THAT(device.message(), HasSubstr("no CUDA driver"));
}
