//===- OptimizerRefTest.cpp - AdamW, clipping, LR schedule references -----===//
//
// Expected values are worked out by hand from the formulas of
// OptimizerRef.h (PyTorch's AdamW semantics; the project's clipping rule).
//
//===----------------------------------------------------------------------===//

#include "colossus/runtime/OptimizerRef.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace colossus;

TEST(AdamWRef, TwoStepsByHandWithDecay) {
  // lr 0.1, wd 0.01, b1 0.9, b2 0.999, eps 1e-8; p = 1, g1 = 0.5, g2 = -0.25.
  AdamWHyper h{0.9, 0.999, 1e-8, 0.01}; // torch.optim.AdamW's defaults
  float p = 1.0f, m = 0.0f, v = 0.0f;
  float g = 0.5f;
  adamwStepRef(&p, &g, &m, &v, 1, /*step=*/1, 0.1, h, /*decay=*/true);
  // m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025;
  // mhat = 0.05 / 0.1 = 0.5; vhat = 0.00025 / 0.001 = 0.25;
  // p = 1 * (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002.
  EXPECT_FLOAT_EQ(m, 0.05f);
  EXPECT_FLOAT_EQ(v, 0.00025f);
  EXPECT_FLOAT_EQ(p, 0.899000002f);

  g = -0.25f;
  adamwStepRef(&p, &g, &m, &v, 1, /*step=*/2, 0.1, h, true);
  // m = 0.9 * 0.05 - 0.1 * 0.25 = 0.02;
  // v = 0.999 * 0.00025 + 0.001 * 0.0625 = 0.00031225;
  // mhat = 0.02 / (1 - 0.81) = 0.105263157894...;
  // vhat = 0.00031225 / (1 - 0.998001) = 0.156203101550...; sqrt =
  // 0.395225380... p = 0.899000002 * 0.999 - 0.1 * 0.105263157894 /
  // (0.395225380 + 1e-8)
  //   = 0.898101002 - 0.026633703 = 0.871467299.
  EXPECT_FLOAT_EQ(m, 0.02f);
  EXPECT_FLOAT_EQ(v, 0.00031225f);
  EXPECT_NEAR(p, 0.8714672987, 1e-6);
}

TEST(AdamWRef, ProjectDefaults) {
  AdamWHyper h;
  EXPECT_EQ(h.beta1, 0.9);
  EXPECT_EQ(h.beta2, 0.95);
  EXPECT_EQ(h.eps, 1e-8);
  EXPECT_EQ(h.weightDecay, 0.1);
  // Step 2 with b2 = 0.95: v = 0.95 * 0.0125 + 0.05 * 0.0625 = 0.015;
  // vhat = 0.015 / (1 - 0.9025) = 2 / 13; mhat = 0.02 / 0.19 = 2 / 19.
  float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
  adamwStepRef(&p, &g, &m, &v, 1, 1, 0.1, h, false);
  EXPECT_FLOAT_EQ(v, 0.0125f);
  g = -0.25f;
  adamwStepRef(&p, &g, &m, &v, 1, 2, 0.1, h, false);
  EXPECT_FLOAT_EQ(m, 0.02f);
  EXPECT_FLOAT_EQ(v, 0.015f);
  EXPECT_NEAR(p, 0.900000002 - 0.1 * (2.0 / 19) / (std::sqrt(2.0 / 13) + 1e-8),
              1e-6);
}

TEST(AdamWRef, NoDecayForVectors) {
  AdamWHyper h{0.9, 0.999, 1e-8, 0.01};
  float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
  adamwStepRef(&p, &g, &m, &v, 1, 1, 0.1, h, /*decay=*/false);
  // p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002.
  EXPECT_FLOAT_EQ(p, 0.900000002f);
  EXPECT_TRUE(appliesWeightDecay({4, 3}));
  EXPECT_TRUE(appliesWeightDecay({2, 3, 4}));
  EXPECT_FALSE(appliesWeightDecay({3}));
  EXPECT_FALSE(appliesWeightDecay({}));
}

TEST(AdamWRef, FirstStepMovesEachElementByAboutLr) {
  // At t = 1, mhat = g and vhat = g^2: the update is lr * g / (|g| + eps).
  AdamWHyper h; // weight decay 0.1
  const float g[] = {1e-3f, -2.0f, 30.0f, -0.125f};
  float p[] = {0.5f, 0.5f, 0.5f, 0.5f};
  float m[4] = {}, v[4] = {};
  adamwStepRef(p, g, m, v, 4, 1, 0.01, h, true);
  for (int i = 0; i < 4; ++i) {
    double expected =
        0.5 * (1 - 0.01 * 0.1) -
        0.01 * g[i] / (std::fabs(static_cast<double>(g[i])) + 1e-8);
    EXPECT_NEAR(p[i], expected, 1e-7) << i;
  }
}

TEST(AdamWRef, ZeroGradientOnlyDecays) {
  AdamWHyper h;
  h.weightDecay = 0.5;
  float p = 2.0f, m = 0.0f, v = 0.0f, g = 0.0f;
  adamwStepRef(&p, &g, &m, &v, 1, 1, 0.1, h, true);
  EXPECT_EQ(m, 0.0f);
  EXPECT_EQ(v, 0.0f);
  EXPECT_FLOAT_EQ(p, 2.0f * (1.0f - 0.05f)); // 1.9
  adamwStepRef(&p, &g, &m, &v, 1, 2, 0.1, h, false);
  EXPECT_FLOAT_EQ(p, 1.9f);
}

TEST(AdamWRef, CustomBetas) {
  // b1 = 0.5, b2 = 0.75, eps = 0, no decay, lr = 1, p = 0, g = 2 then 4.
  AdamWHyper h{0.5, 0.75, 0.0, 0.0};
  float p = 0.0f, m = 0.0f, v = 0.0f, g = 2.0f;
  adamwStepRef(&p, &g, &m, &v, 1, 1, 1.0, h, false);
  // m = 1, v = 1; mhat = 1 / 0.5 = 2; vhat = 1 / 0.25 = 4; p = -2 / 2 = -1.
  EXPECT_EQ(m, 1.0f);
  EXPECT_EQ(v, 1.0f);
  EXPECT_EQ(p, -1.0f);
  g = 4.0f;
  adamwStepRef(&p, &g, &m, &v, 1, 2, 1.0, h, false);
  // m = 0.5 + 2 = 2.5; v = 0.75 + 4 = 4.75;
  // mhat = 2.5 / 0.75 = 3.3333; vhat = 4.75 / 0.4375 = 10.857142857;
  // p = -1 - 3.333333333 / 3.295017884 = -2.011628...
  EXPECT_EQ(m, 2.5f);
  EXPECT_EQ(v, 4.75f);
  EXPECT_NEAR(p, -1.0 - (2.5 / 0.75) / std::sqrt(4.75 / 0.4375), 1e-6);
}

TEST(ClipGradNormRef, GlobalNormAcrossTensors) {
  float a[] = {3.0f, 4.0f}, b[] = {12.0f};
  std::vector<GradSpan> grads = {{a, 2}, {b, 1}};
  EXPECT_DOUBLE_EQ(globalGradNormRef(grads), 13.0);

  // Under the limit: untouched.
  EXPECT_DOUBLE_EQ(clipGradNormRef(grads, 100.0), 13.0);
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_EQ(b[0], 12.0f);
  // maxNorm <= 0: disabled.
  EXPECT_DOUBLE_EQ(clipGradNormRef(grads, 0.0), 13.0);
  EXPECT_EQ(a[1], 4.0f);

  // Over: g *= 1 / (13 + 1e-6); the norm before clipping is returned.
  EXPECT_DOUBLE_EQ(clipGradNormRef(grads, 1.0), 13.0);
  const double coef = 1.0 / (13.0 + 1e-6);
  EXPECT_FLOAT_EQ(a[0], static_cast<float>(3.0 * coef));
  EXPECT_FLOAT_EQ(a[1], static_cast<float>(4.0 * coef));
  EXPECT_FLOAT_EQ(b[0], static_cast<float>(12.0 * coef));
  EXPECT_NEAR(globalGradNormRef(grads), 1.0, 1e-6);
}

TEST(ClipGradNormRef, OnlyANormAboveTheLimitIsScaled) {
  // norm == max: unchanged (clip_grad_norm_'s clamp would scale by
  // 5 / (5 + 1e-6); the project's rule does not).
  float a[] = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(clipGradNormRef({{a, 2}}, 5.0), 5.0);
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_EQ(a[1], 4.0f);
  // Half the norm: scaled by 6.5 / (13 + 1e-6).
  float b[] = {3.0f, 4.0f, 12.0f};
  EXPECT_DOUBLE_EQ(clipGradNormRef({{b, 3}}, 6.5), 13.0);
  EXPECT_FLOAT_EQ(b[2], static_cast<float>(12.0 * 6.5 / (13.0 + 1e-6)));
  // A negative limit disables clipping too.
  float c[] = {30.0f, 40.0f};
  EXPECT_DOUBLE_EQ(clipGradNormRef({{c, 2}}, -1.0), 50.0);
  EXPECT_EQ(c[0], 30.0f);
  float z[] = {0.0f, 0.0f};
  EXPECT_DOUBLE_EQ(clipGradNormRef({{z, 2}}, 1.0), 0.0);
  EXPECT_EQ(z[0], 0.0f);
}

TEST(ClipGradNormRef, NormIsAccumulatedInDouble) {
  // 2^24 + 1 ones: the f32 sum of squares would stall at 2^24.
  std::vector<float> g((size_t(1) << 24) + 1, 1.0f);
  EXPECT_DOUBLE_EQ(globalGradNormRef({{g.data(), g.size()}}),
                   std::sqrt(16777217.0));
}

TEST(LearningRateRef, WarmupThenCosine) {
  LrSchedule s{1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(learningRateRef(s, 1), 1e-4);  // 1e-3 * 1 / 10
  EXPECT_DOUBLE_EQ(learningRateRef(s, 5), 5e-4);  // 1e-3 * 5 / 10
  EXPECT_DOUBLE_EQ(learningRateRef(s, 10), 1e-3); // the peak
  // progress 0.25: 1e-4 + 0.45e-3 * (1 + cos(pi / 4)) = 8.68198052...e-4.
  EXPECT_NEAR(learningRateRef(s, 35), 8.6819805153394640e-4, 1e-18);
  // progress 0.5: 1e-4 + 0.45e-3 = 5.5e-4.
  EXPECT_NEAR(learningRateRef(s, 60), 5.5e-4, 1e-18);
  EXPECT_NEAR(learningRateRef(s, 110), 1e-4, 1e-18); // the end: minLr
  EXPECT_NEAR(learningRateRef(s, 500), 1e-4, 1e-18); // past the end
  // Monotone decreasing after the warmup.
  for (int64_t t = 11; t <= 110; ++t)
    EXPECT_LE(learningRateRef(s, t), learningRateRef(s, t - 1)) << t;
}

TEST(LearningRateRef, NoWarmupAndDegenerateTotals) {
  LrSchedule s{1.0, 0.0, 0, 4};
  // progress t / 4: 0.5 * (1 + cos(pi t / 4)).
  EXPECT_NEAR(learningRateRef(s, 1), 0.5 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(learningRateRef(s, 2), 0.5, 1e-15);
  EXPECT_NEAR(learningRateRef(s, 4), 0.0, 1e-15);
  // total <= warmup: max(1, total - warmup) = 1, so minLr right after.
  LrSchedule w{2.0, 0.5, 5, 5};
  EXPECT_DOUBLE_EQ(learningRateRef(w, 5), 2.0);
  EXPECT_DOUBLE_EQ(learningRateRef(w, 6), 0.5);
  // minLr == peak: constant after the warmup.
  LrSchedule c{3e-4, 3e-4, 2, 100};
  EXPECT_DOUBLE_EQ(learningRateRef(c, 1), 1.5e-4);
  for (int64_t t : {2, 3, 50, 100, 1000})
    EXPECT_DOUBLE_EQ(learningRateRef(c, t), 3e-4) << t;
}
