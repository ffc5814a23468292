//===- Sampling.cpp - Picking the next token from logits ------------------===//

#include "colossus/runtime/Sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace colossus {

Status validateSamplingParams(const SamplingParams &p) {
  if (!(p.temperature >= 0.0) || !std::isfinite(p.temperature))
    return makeError("--temperature must be a finite number >= 0 (got ",
                     p.temperature, ")");
  if (p.topK < 0)
    return makeError("--top-k must be >= 0 (got ", p.topK, ")");
  if (!(p.topP > 0.0 && p.topP <= 1.0))
    return makeError("--top-p must be in (0, 1] (got ", p.topP, ")");
  return Status::success();
}

int64_t argmax(const float *logits, size_t n) {
  int64_t best = -1;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i]))
      continue;
    if (best < 0 || logits[i] > logits[best])
      best = static_cast<int64_t>(i);
  }
  return best < 0 ? 0 : best;
}

int64_t Sampler::sample(const float *logits, size_t n) {
  if (params_.temperature == 0.0 || n <= 1)
    return argmax(logits, n);
  // Candidates by scaled logit, descending; NaN counts as -inf.
  std::vector<double> z(n);
  for (size_t i = 0; i < n; ++i)
    z[i] = std::isnan(logits[i])
               ? -INFINITY
               : static_cast<double>(logits[i]) / params_.temperature;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  size_t keep = n;
  if (params_.topK > 0 && static_cast<size_t>(params_.topK) < n)
    keep = static_cast<size_t>(params_.topK);
  auto byLogit = [&](int64_t a, int64_t b) {
    return z[a] > z[b] || (z[a] == z[b] && a < b);
  };
  if (keep < n) {
    std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                      byLogit);
    order.resize(keep);
  } else {
    std::sort(order.begin(), order.end(), byLogit);
  }
  // Softmax over the kept candidates.
  double maxZ = z[order[0]];
  if (!std::isfinite(maxZ)) // all -inf (or +inf): take the first
    return order[0];
  std::vector<double> prob(order.size());
  double total = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    prob[i] = std::exp(z[order[i]] - maxZ);
    total += prob[i];
  }
  for (double &q : prob)
    q /= total;
  // Nucleus.
  if (params_.topP < 1.0) {
    double mass = 0.0;
    size_t cut = prob.size();
    for (size_t i = 0; i < prob.size(); ++i) {
      mass += prob[i];
      if (mass >= params_.topP) {
        cut = i + 1;
        break;
      }
    }
    prob.resize(cut);
    order.resize(cut);
    total = std::accumulate(prob.begin(), prob.end(), 0.0);
    for (double &q : prob)
      q /= total;
  }
  double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double cum = 0.0;
  for (size_t i = 0; i < prob.size(); ++i) {
    cum += prob[i];
    if (u < cum)
      return order[i];
  }
  return order.back();
}

} // namespace colossus
