//===- OptimizerRef.h - Host reference of AdamW, clipping, LR schedule ----===//
//
// The conventions the compiled train step follows, written out on the host.
// These functions are a test oracle and the documentation of the
// convention; the training loop does not call them (the update runs in the
// compiled kernels). PyTorch semantics (torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_):
//
// AdamW, for step t = 1, 2, ... (t = the number of updates so far,
// including this one) and learning rate lr = lr(t):
//   m    = b1 * m + (1 - b1) * g
//   v    = b2 * v + (1 - b2) * g^2
//   mhat = m / (1 - b1^t),  vhat = v / (1 - b2^t)
//   p    = p * (1 - lr * wd)                  decoupled decay, only for
//                                             parameters of rank >= 2 (not
//                                             norm weights, not biases)
//   p    = p - lr * mhat / (sqrt(vhat) + eps)
// The reference computes each element in double from the stored f32 values
// and rounds m, v and p to f32 when it stores them (the update uses the
// stored f32 m and v, as an f32 implementation does). A compiled f32 kernel
// is compared with it within a relative tolerance, not bit for bit.
//
// Gradient clipping by global norm (before the update):
//   norm = sqrt(sum over all parameters and elements of g^2)   (in double)
//   if norm > maxNorm: every g *= maxNorm / (norm + 1e-6)
// maxNorm <= 0 disables it. (clip_grad_norm_ multiplies by
// clamp(maxNorm / (norm + 1e-6), max=1), which also scales, by less than
// 1e-6 relative, when maxNorm - 1e-6 < norm <= maxNorm; the project's
// convention, shared with test/e2e/train_reference.py, leaves those alone.)
// The norm before clipping is returned (and logged by the train loop).
//
// Learning rate of step t = 1, 2, ...: linear warmup, then cosine decay:
//   t <= warmup:  peak * t / warmup
//   otherwise:    minLr + 0.5 * (peak - minLr) * (1 + cos(pi * progress)),
//                 progress = min(1, (t - warmup) / max(1, total - warmup))
// (so lr(t) = minLr for every t >= total).
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_OPTIMIZERREF_H
#define COLOSSUS_RUNTIME_OPTIMIZERREF_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace colossus {

/// AdamW hyper-parameters. Defaults: the project's (GPT-style, as in
/// test/e2e/train_reference.py), not torch.optim.AdamW's (0.999, 0.01).
struct AdamWHyper {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weightDecay = 0.1;
};

/// Whether a parameter of this shape gets weight decay (rank >= 2).
bool appliesWeightDecay(const std::vector<int64_t> &shape);

/// One AdamW update of `n` elements in place (see the top of this file).
/// `step` is t >= 1; `decay` selects the decoupled weight decay.
void adamwStepRef(float *param, const float *grad, float *expAvg,
                  float *expAvgSq, size_t n, int64_t step, double lr,
                  const AdamWHyper &hyper, bool decay);

/// A gradient tensor for clipping.
struct GradSpan {
  float *data;
  size_t size;
};

/// The global L2 norm of all gradients, in double.
double globalGradNormRef(const std::vector<GradSpan> &grads);

/// Clips in place (see the top of this file); returns the norm before
/// clipping.
double clipGradNormRef(const std::vector<GradSpan> &grads, double maxNorm);

/// Warmup + cosine schedule (see the top of this file).
struct LrSchedule {
  double peak = 1e-3;
  double minLr = 0.0;
  int64_t warmup = 0;
  int64_t total = 1;
};

/// The learning rate of step t >= 1.
double learningRateRef(const LrSchedule &schedule, int64_t step);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_OPTIMIZERREF_H
