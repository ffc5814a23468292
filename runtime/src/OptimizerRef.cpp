//===- OptimizerRef.cpp - Host reference of AdamW, clipping, LR schedule --===//

#include "colossus/runtime/OptimizerRef.h"

#include <algorithm>
#include <cmath>

namespace colossus {

bool appliesWeightDecay(const std::vector<int64_t> &shape) {
  return shape.size() >= 2;
}

void adamwStepRef(float *param, const float *grad, float *expAvg,
                  float *expAvgSq, size_t n, int64_t step, double lr,
                  const AdamWHyper &h, bool decay) {
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(h.beta1, t);
  const double bc2 = 1.0 - std::pow(h.beta2, t);
  const double shrink = decay ? 1.0 - lr * h.weightDecay : 1.0;
  for (size_t i = 0; i < n; ++i) {
    const double g = grad[i];
    expAvg[i] = static_cast<float>(h.beta1 * expAvg[i] + (1.0 - h.beta1) * g);
    expAvgSq[i] =
        static_cast<float>(h.beta2 * expAvgSq[i] + (1.0 - h.beta2) * g * g);
    const double mhat = static_cast<double>(expAvg[i]) / bc1;
    const double vhat = static_cast<double>(expAvgSq[i]) / bc2;
    double p = static_cast<double>(param[i]) * shrink;
    p -= lr * mhat / (std::sqrt(vhat) + h.eps);
    param[i] = static_cast<float>(p);
  }
}

double globalGradNormRef(const std::vector<GradSpan> &grads) {
  double sum = 0.0;
  for (const GradSpan &g : grads)
    for (size_t i = 0; i < g.size; ++i)
      sum += static_cast<double>(g.data[i]) * static_cast<double>(g.data[i]);
  return std::sqrt(sum);
}

double clipGradNormRef(const std::vector<GradSpan> &grads, double maxNorm) {
  const double norm = globalGradNormRef(grads);
  if (maxNorm <= 0.0 || !(norm > maxNorm))
    return norm;
  const double coef = maxNorm / (norm + 1e-6);
  for (const GradSpan &g : grads)
    for (size_t i = 0; i < g.size; ++i)
      g.data[i] = static_cast<float>(static_cast<double>(g.data[i]) * coef);
  return norm;
}

double learningRateRef(const LrSchedule &s, int64_t step) {
  if (s.warmup > 0 && step <= s.warmup)
    return s.peak * static_cast<double>(step) / static_cast<double>(s.warmup);
  const double span =
      static_cast<double>(std::max<int64_t>(1, s.total - s.warmup));
  const double progress =
      std::min(1.0, static_cast<double>(step - s.warmup) / span);
  const double pi = 3.14159265358979323846;
  return s.minLr + 0.5 * (s.peak - s.minLr) * (1.0 + std::cos(pi * progress));
}

} // namespace colossus
