//===- TrainTest.cpp - Update steps: checks, Session::update, train CLI ---===//
//
// The artifacts here add tiny_adamw (tiny_kernels.c, AdamW with the
// project's defaults) as an update step to the tiny grads step; expected
// values come from OptimizerRef.h (adamwStepRef, clipGradNormRef,
// learningRateRef).
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/Checkpoint.h"
#include "colossus/runtime/OptimizerRef.h"
#include "colossus/runtime/Session.h"
#include "colossus/runtime/TokenData.h"
#include "colossus/runtime/Weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <sstream>
#include <sys/stat.h>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

constexpr int V = 8, B = 2, S = 4, R = B * S;

std::string loadError(const ArtifactSpec &spec) {
  auto a = Artifact::loadBuffer(buildArtifact(spec), "t.colossus");
  return a ? std::string("<loaded>") : a.message();
}

// ---- Check 6 for update steps ----

TEST(UpdateArtifact, TheTinyTrainArtifactLoads) {
  EXPECT_EQ(loadError(tinyTrainSpec()), "<loaded>");
}

TEST(UpdateArtifact, RejectsBadHyper) {
  ArtifactSpec s = tinyTrainSpec();
  s.buffers[13].size = 12;
  EXPECT_THAT(loadError(s), HasSubstr("t.colossus: steps[1].hyper: "
                                      "buffers[13] 'hyper' has 12 bytes"));
  // f32[4], the hyper of artifacts before grad_scale.
  s.buffers[13].size = 16;
  EXPECT_THAT(loadError(s), HasSubstr("has 16 bytes, f32[5] [lr, 1 - beta1^t, "
                                      "1 - beta2^t, max_grad_norm, grad_scale] "
                                      "needs 20"));
  s = tinyTrainSpec();
  s.buffers[13].kind = schema::BufferKind::output;
  EXPECT_THAT(loadError(s), HasSubstr("must be an f32 input buffer"));
  s = tinyTrainSpec();
  s.steps[1].hyper = 99;
  EXPECT_THAT(loadError(s), HasSubstr("steps[1].hyper = 99 is out of range"));
}

TEST(UpdateArtifact, RejectsBadGradNorm) {
  ArtifactSpec s = tinyTrainSpec();
  s.buffers[14].size = 2;
  EXPECT_THAT(loadError(s), HasSubstr("steps[1].grad_norm: buffers[14] "
                                      "'grad_norm' has 2 bytes"));
  s = tinyTrainSpec();
  s.buffers[14].dtype = schema::DType::i32;
  EXPECT_THAT(loadError(s), HasSubstr("must be an f32 output buffer"));
}

TEST(UpdateArtifact, AtMostOneUpdateStep) {
  ArtifactSpec s = tinyTrainSpec();
  s.steps.push_back(s.steps[1]);
  EXPECT_THAT(loadError(s), HasSubstr("steps[2] is a second update step"));
}

TEST(UpdateArtifact, NeedsAGradsStepAndTheOptimizer) {
  ArtifactSpec s = tinyTrainSpec();
  s.steps.erase(s.steps.begin());
  EXPECT_THAT(loadError(s),
              HasSubstr("steps[0] is an update step but the artifact has no "
                        "grads step"));
  s = tinyTrainSpec();
  s.optimizer.reset();
  EXPECT_THAT(loadError(s), HasSubstr("no optimizer table"));
  s = tinyTrainSpec();
  s.optimizer->beta2 = 1.5f;
  EXPECT_THAT(loadError(s), HasSubstr("optimizer: beta1 = 0.9, beta2 = 1.5"));
}

TEST(UpdateArtifact, NeedsBothOptStateBuffersOfEveryParam) {
  ArtifactSpec s = tinyTrainSpec();
  s.buffers[12].name = "model.bias.v";
  EXPECT_THAT(loadError(s),
              HasSubstr("params[1] 'model.bias': no opt_state buffer named "
                        "'model.bias.exp_avg_sq'"));
  s = tinyTrainSpec();
  s.buffers[9].size = 16;
  EXPECT_THAT(loadError(s),
              HasSubstr("buffers[9] 'model.embed.weight.exp_avg' has 16 "
                        "bytes, the f32 state of params[0]"));
  s = tinyTrainSpec();
  s.buffers[10].dtype = schema::DType::f16;
  EXPECT_THAT(loadError(s), HasSubstr("an opt_state buffer must be f32"));
  s = tinyTrainSpec();
  s.buffers[11].name = s.buffers[9].name;
  EXPECT_THAT(loadError(s), HasSubstr("repeats the name of buffers[9]"));
}

// ---- Session::update ----

class TrainModel : public ::testing::Test {
protected:
  void SetUp() override {
    emb = testValues(V * V, 31);
    bias = testValues(V, 32);
    art = dir.file("train.colossus");
    weights = dir.file("w.safetensors");
    writeFile(art, buildArtifact(tinyTrainSpec()));
    writeFile(weights,
              safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb),
                                f32Tensor("model.bias", {V}, bias)}));
  }
  std::unique_ptr<Session> open() {
    auto s = Session::create(art, {std::nullopt, WeightsSpec::file(weights)});
    EXPECT_TRUE(s) << s.message();
    return s ? std::move(s).value() : nullptr;
  }
  static std::vector<int32_t> ids(uint32_t seed) {
    std::vector<int32_t> v(R);
    for (int i = 0; i < R; ++i)
      v[i] = static_cast<int32_t>((i * 5 + seed * 3 + i * i) % V);
    return v;
  }

  /// Runs `steps` grads + update steps on the session and the same on the
  /// host with OptimizerRef; compares params, moments and norms.
  void compareWithReference(double maxNorm, int steps) {
    auto s = open();
    ASSERT_TRUE(s);
    std::vector<float> pe = emb, pb = bias, me(V * V, 0), ve(V * V, 0),
                       mb(V, 0), vb(V, 0);
    AdamWHyper h;
    LrSchedule sched{0.05, 0.005, 1, steps};
    for (int t = 1; t <= steps; ++t) {
      auto tok = ids(t), tgt = ids(t + 7);
      auto g = s->grads(tok.data(), tgt.data());
      ASSERT_TRUE(g) << g.message();
      // Host: the gradients of the session, clipped, then AdamW.
      std::vector<float> ge = g->grads[0].values, gb = g->grads[1].values;
      double refNorm = clipGradNormRef(
          {{ge.data(), ge.size()}, {gb.data(), gb.size()}}, maxNorm);
      const double lr = learningRateRef(sched, t);
      adamwStepRef(pe.data(), ge.data(), me.data(), ve.data(), ge.size(), t,
                   lr, h, true);
      adamwStepRef(pb.data(), gb.data(), mb.data(), vb.data(), gb.size(), t,
                   lr, h, false);
      auto norm = s->update(lr, t, maxNorm);
      ASSERT_TRUE(norm) << norm.message();
      EXPECT_NEAR(*norm, refNorm, 1e-6 * refNorm);
      EXPECT_NEAR(*norm, g->gradNorm, 1e-6 * refNorm);
    }
    std::vector<float> se(V * V), sb(V), sme(V * V), sve(V * V), smb(V),
        svb(V);
    ASSERT_TRUE(s->readParam(0, se.data()));
    ASSERT_TRUE(s->readParam(1, sb.data()));
    ASSERT_TRUE(s->readOptState(0, sme.data(), sve.data()));
    ASSERT_TRUE(s->readOptState(1, smb.data(), svb.data()));
    auto near = [](const std::vector<float> &a, const std::vector<float> &b,
                   const char *what) {
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_NEAR(a[i], b[i], 1e-5 * (1.0 + std::fabs(b[i])))
            << what << "[" << i << "]";
    };
    near(se, pe, "emb");
    near(sb, pb, "bias");
    near(sme, me, "exp_avg emb");
    near(sve, ve, "exp_avg_sq emb");
    near(smb, mb, "exp_avg bias");
    near(svb, vb, "exp_avg_sq bias");
    // The params moved.
    EXPECT_NE(se, emb);
  }

  TempDir dir;
  std::string art, weights;
  std::vector<float> emb, bias;
};

TEST_F(TrainModel, UpdateMatchesOptimizerRefWithoutClipping) {
  compareWithReference(0.0, 3);
}

TEST_F(TrainModel, UpdateMatchesOptimizerRefWithClipping) {
  compareWithReference(0.05, 3);
}

TEST_F(TrainModel, GradsStepKeepsTheOptimizerState) {
  auto s = open();
  ASSERT_TRUE(s);
  auto tok = ids(1), tgt = ids(2);
  ASSERT_TRUE(s->grads(tok.data(), tgt.data(), false));
  ASSERT_TRUE(s->update(1e-2, 1, 1.0));
  std::vector<float> m1(V * V), v1(V * V), m2(V * V), v2(V * V);
  ASSERT_TRUE(s->readOptState(0, m1.data(), v1.data()));
  EXPECT_NE(m1, std::vector<float>(V * V, 0.0f));
  auto g = s->grads(tok.data(), tgt.data(), false);
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->grads.empty());
  ASSERT_TRUE(s->readOptState(0, m2.data(), v2.data()));
  EXPECT_EQ(m1, m2);
  EXPECT_EQ(v1, v2);
}

TEST_F(TrainModel, WriteOptStateRoundTrips) {
  auto s = open();
  ASSERT_TRUE(s);
  auto m = testValues(V, 5), v = testValues(V, 6), p = testValues(V, 7);
  ASSERT_TRUE(s->writeOptState(1, m.data(), v.data()));
  ASSERT_TRUE(s->writeParam(1, p.data()));
  std::vector<float> m2(V), v2(V), p2(V);
  ASSERT_TRUE(s->readOptState(1, m2.data(), v2.data()));
  ASSERT_TRUE(s->readParam(1, p2.data()));
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
  EXPECT_EQ(p, p2);
  EXPECT_FALSE(s->readParam(2, p2.data()));
}

TEST_F(TrainModel, UpdateErrors) {
  auto s = open();
  ASSERT_TRUE(s);
  auto bad = s->update(1e-3, 0, 1.0);
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.message(), HasSubstr("t = 0 must be >= 1"));
  for (double scale : {0.0, -0.5, std::nan("")}) {
    auto badScale = s->update(1e-3, 1, 1.0, scale);
    ASSERT_FALSE(badScale);
    EXPECT_THAT(badScale.message(), HasSubstr("must be finite and > 0"));
  }

  writeFile(dir.file("g.colossus"), buildArtifact(tinyGradsSpec()));
  auto g = Session::create(dir.file("g.colossus"),
                           {std::nullopt, WeightsSpec::file(weights)});
  ASSERT_TRUE(g) << g.message();
  auto u = (*g)->update(1e-3, 1, 1.0);
  ASSERT_FALSE(u);
  EXPECT_THAT(u.message(), HasSubstr("no update step: compile with "
                                     "--step=train"));
  std::vector<float> m(V), v(V);
  EXPECT_FALSE((*g)->readOptState(0, m.data(), v.data()));
}

// ---- colossus-run ART train ----

class TrainCli : public TrainModel {
protected:
  void SetUp() override {
    TrainModel::SetUp();
    data = dir.file("train.bin");
    std::vector<uint8_t> bytes;
    for (int i = 0; i < 301; ++i) {
      uint16_t id = static_cast<uint16_t>((i * 7 + i / 3 + (i * i) % 5) % V);
      bytes.push_back(static_cast<uint8_t>(id & 0xff));
      bytes.push_back(static_cast<uint8_t>(id >> 8));
    }
    writeFile(data, bytes);
    writeText(data + ".json", R"({"dtype": "uint16"})");
  }
  CommandResult run(const std::string &args) {
    return runCommand(std::string(COLOSSUS_RUN_BIN) + " " + args);
  }
  std::string base() const {
    return art + " train --data " + data + " --weights " + weights;
  }
  /// The step lines of --json output.
  static std::vector<nlohmann::json> stepLines(const std::string &out) {
    std::vector<nlohmann::json> lines;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("step"))
        lines.push_back(j);
    }
    return lines;
  }
  static std::vector<float> tensor(const std::string &path,
                                   const std::string &name) {
    auto f = SafetensorsFile::open(path);
    EXPECT_TRUE(f) << f.message();
    auto v = tensorValuesF32(**f, name);
    EXPECT_TRUE(v) << v.message();
    return v ? *v : std::vector<float>{};
  }
  std::string data;
};

TEST_F(TrainCli, JsonLinesFollowTheSchedule) {
  auto r = run(base() + " --steps 5 --lr 0.01 --warmup 2 --min-lr 0.002 "
                        "--json");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto lines = stepLines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  LrSchedule sched{0.01, 0.002, 2, 5};
  for (int i = 0; i < 5; ++i) {
    const auto &j = lines[i];
    EXPECT_EQ(j["step"].get<int>(), i + 1);
    EXPECT_EQ(j["lr"].get<double>(), learningRateRef(sched, i + 1));
    EXPECT_TRUE(std::isfinite(j["loss"].get<double>()));
    EXPECT_GT(j["grad_norm"].get<double>(), 0.0);
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
  }
  // Default min-lr: 0.1 * peak; no warmup: t = 1 is the peak.
  r = run(base() + " --steps 2 --lr 0.01 --json");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  lines = stepLines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["lr"].get<double>(),
            learningRateRef({0.01, 0.001, 0, 2}, 1));
  EXPECT_EQ(lines[1]["lr"].get<double>(), 0.001);
}

TEST_F(TrainCli, MatchesTheSessionLoopAndWritesACheckpoint) {
  const std::string ckpt = dir.file("ckpt");
  auto r = run(base() + " --steps 3 --lr 0.02 --seed 4 --max-grad-norm 0.5 "
                        "--checkpoint-dir " + ckpt + " --json");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto lines = stepLines(r.out);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(r.out, HasSubstr("\"checkpoint\""));

  // The same loop through the library.
  auto s = open();
  ASSERT_TRUE(s);
  auto td = TokenData::open(data, {});
  ASSERT_TRUE(td) << td.message();
  std::vector<int32_t> tok(R), tgt(R);
  LrSchedule sched{0.02, 0.002, 0, 3};
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE((*td)->fillBatch(step, B, S, DataOrder::Random, 4, tok.data(),
                                 tgt.data()));
    auto g = s->grads(tok.data(), tgt.data(), false);
    ASSERT_TRUE(g);
    auto n = s->update(learningRateRef(sched, step + 1), step + 1, 0.5);
    ASSERT_TRUE(n);
    EXPECT_EQ(lines[step]["loss"].get<double>(), static_cast<double>(g->loss));
    EXPECT_EQ(lines[step]["grad_norm"].get<double>(), *n);
  }
  std::vector<float> pe(V * V), me(V * V), ve(V * V);
  ASSERT_TRUE(s->readParam(0, pe.data()));
  ASSERT_TRUE(s->readOptState(0, me.data(), ve.data()));
  const std::string step3 = ckpt + "/step-00000003";
  ASSERT_TRUE(verifyCheckpoint(step3)) << verifyCheckpoint(step3).message();
  EXPECT_EQ(tensor(step3 + "/model.safetensors", "model.embed.weight"), pe);
  EXPECT_EQ(tensor(step3 + "/optimizer.safetensors",
                   "model.embed.weight.exp_avg"),
            me);
  EXPECT_EQ(tensor(step3 + "/optimizer.safetensors",
                   "model.embed.weight.exp_avg_sq"),
            ve);
  auto loaded = loadCheckpoint(step3);
  ASSERT_TRUE(loaded);
  auto dataJ = nlohmann::json::parse(loaded->dataJson);
  EXPECT_EQ(dataJ["seed"], 4);
  EXPECT_EQ(dataJ["order"], "random");
  EXPECT_EQ(dataJ["schedule"]["lr"], 0.02);
  EXPECT_EQ(dataJ["schedule"]["max_grad_norm"], 0.5);
}

TEST_F(TrainCli, ResumeIsBitIdentical) {
  const std::string d1 = dir.file("straight"), d2 = dir.file("split");
  const std::string common = " --lr 0.02 --warmup 2 --json --checkpoint-every 4 ";
  auto straight = run(base() + " --steps 8 --checkpoint-dir " + d1 + common);
  ASSERT_EQ(straight.exitCode, 0) << straight.err;
  // An interrupted run of 8 steps: the schedule's total stays 8.
  auto half = run(base() + " --steps 4 --schedule-steps 8 --checkpoint-dir " +
                  d2 + common);
  ASSERT_EQ(half.exitCode, 0) << half.err;
  // --resume needs no --weights when a checkpoint exists.
  auto rest = run(art + " train --data " + data + " --steps 8 --resume "
                  "--checkpoint-dir " + d2 + common);
  ASSERT_EQ(rest.exitCode, 0) << rest.err;
  EXPECT_EQ(rest.err, "");
  auto a = stepLines(straight.out), b = stepLines(half.out),
       c = stepLines(rest.out);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 4u);
  ASSERT_EQ(c.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(a[i]["loss"], b[i]["loss"]);
    EXPECT_EQ(a[i + 4]["step"], c[i]["step"]);
    EXPECT_EQ(a[i + 4]["loss"], c[i]["loss"]) << "step " << i + 5;
    EXPECT_EQ(a[i + 4]["grad_norm"], c[i]["grad_norm"]);
  }
  for (const char *f : {"/step-00000008/model.safetensors",
                        "/step-00000008/optimizer.safetensors"})
    EXPECT_EQ(readFile(d1 + f), readFile(d2 + f)) << f;

  // A damaged newest checkpoint: skipped with a warning, step 4 used.
  const std::string model8 = d2 + "/step-00000008/model.safetensors";
  auto bytes = readFile(model8);
  bytes.resize(bytes.size() / 2);
  writeFile(model8, bytes);
  auto again = run(art + " train --data " + data + " --steps 8 --resume "
                   "--checkpoint-dir " + d2 + common);
  ASSERT_EQ(again.exitCode, 0) << again.err;
  EXPECT_THAT(again.err, HasSubstr("colossus-run: warning: "));
  EXPECT_THAT(again.err, HasSubstr("step-00000008: skipped"));
  auto d = stepLines(again.out);
  ASSERT_EQ(d.size(), 4u);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(a[i + 4]["loss"], d[i]["loss"]);
  EXPECT_EQ(readFile(d1 + "/step-00000008/model.safetensors"),
            readFile(model8));

  // Nothing left to do.
  auto done = run(art + " train --data " + data + " --steps 8 --resume "
                  "--checkpoint-dir " + d2);
  ASSERT_EQ(done.exitCode, 0) << done.err;
  EXPECT_THAT(done.out, HasSubstr("nothing to do"));
}

TEST_F(TrainCli, ResumeWithOtherDataSettingsIsAnError) {
  const std::string d = dir.file("ck");
  auto r = run(base() + " --steps 2 --seed 1 --checkpoint-dir " + d);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("step 2/2 loss "));
  r = run(base() + " --steps 4 --seed 2 --resume --checkpoint-dir " + d);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_THAT(r.err, HasSubstr("state.json: data.seed is 1, this run has 2"));
}

TEST_F(TrainCli, GradsOutHasTheFirstStepsGradients) {
  const std::string g = dir.file("g.safetensors");
  auto r = run(base() + " --steps 2 --data-order sequential --grads-out " + g);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto s = open();
  ASSERT_TRUE(s);
  auto td = TokenData::open(data, {});
  ASSERT_TRUE(td);
  std::vector<int32_t> tok(R), tgt(R);
  ASSERT_TRUE((*td)->fillBatch(0, B, S, DataOrder::Sequential, 0, tok.data(),
                               tgt.data()));
  auto grads = s->grads(tok.data(), tgt.data());
  ASSERT_TRUE(grads);
  EXPECT_EQ(tensor(g, "model.embed.weight"), grads->grads[0].values);
  EXPECT_EQ(tensor(g, "model.bias"), grads->grads[1].values);
}

TEST_F(TrainCli, Errors) {
  writeFile(dir.file("g.colossus"), buildArtifact(tinyGradsSpec()));
  auto r = run(dir.file("g.colossus") + " train --data " + data +
               " --weights " + weights + " --steps 2");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_THAT(r.err, HasSubstr("no update step: compile with --step=train"));

  struct Case {
    std::string args, message;
  } usage[] = {
      {" --steps 0", "--steps: '0' is not an integer >= 1"},
      {"", "needs --steps N"},
      {" --steps 2 --lr abc", "--lr: 'abc' is not a number >= 0"},
      {" --steps 2 --resume", "--resume needs --checkpoint-dir D"},
      {" --steps 2 --checkpoint-every 2",
       "--checkpoint-every needs --checkpoint-dir D"},
      {" --steps 2 --checkpoint-dir x --checkpoint-every 0",
       "--checkpoint-every: '0'"},
      {" --steps 2 --data-order shuffled", "unknown order 'shuffled'"},
      {" --steps 2 --step-index 1", "--step-index is not an option of the "
                                    "'train' command"},
  };
  for (const Case &c : usage) {
    r = run(base() + c.args);
    EXPECT_EQ(r.exitCode, 2) << c.args << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args;
  }
  r = run(art + " train --data " + data + " --steps 2");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_THAT(r.err, HasSubstr("needs --weights PATH or --init=random"));
  r = run(art + " train --data " + data + " --steps 2 --resume "
          "--checkpoint-dir " + dir.file("empty"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_THAT(r.err, HasSubstr("--resume found no checkpoint"));
  r = run(art + " train --data " + data + " --steps 2 --init=random "
          "--checkpoint-dir /proc/nope/ck");
  EXPECT_EQ(r.exitCode, 1) << r.err;
}

TEST_F(TrainCli, InfoAndHelp) {
  auto r = run(art + " info");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["steps"][1]["kind"], "update");
  EXPECT_FLOAT_EQ(j["steps"][1]["optimizer"]["beta2"].get<float>(), 0.95f);
  EXPECT_EQ(j["opt_state_bytes"], 2 * (V * V + V) * 4);
  r = run("--help");
  EXPECT_THAT(r.out, HasSubstr("colossus-run ARTIFACT train"));
  EXPECT_THAT(r.out, HasSubstr("--checkpoint-every K"));
}

} // namespace
