/* A tiny hand-written "compiled model" for the runtime tests, following the
 * cpu kernel calling convention of docs/artifact-format.md:
 *   void name(void **args, int64_t nb, int64_t nt, int64_t pos0)
 * Capacities: vocab V = 8, seq S = 16, batch from the artifact (rows are
 * compacted: row r = b * nt + t, position pos0 + t).
 *
 *   tiny_store_kv(tokens, kv):            kv[b, pos0 + t] = tokens[r]
 *   tiny_embed(tokens, emb, bias, hid):   hid[r, v] = emb[tokens[r], v] +
 * bias[v] tiny_logits(hid, kv, logits):         logits[r, v] = hid[r, v] + pos0
 *                                           + (v == sum % V ? 2.5 : 0)
 *     with sum = sum_{q <= pos0 + t} kv[b, q] (token ids, so an integer)
 * The kv buffer is a pretend KV cache: it must persist between steps for
 * generation to match the reference in SessionTest.cpp.
 */
#include <stdint.h>

#define V 8
#define S 16

void tiny_store_kv(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const int32_t *tokens = (const int32_t *)args[0];
  float *kv = (float *)args[1];
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t t = 0; t < nt; ++t)
      kv[b * S + pos0 + t] = (float)tokens[b * nt + t];
}

void tiny_embed(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const int32_t *tokens = (const int32_t *)args[0];
  const float *emb = (const float *)args[1];
  const float *bias = (const float *)args[2];
  float *hid = (float *)args[3];
  (void)pos0;
  for (int64_t r = 0; r < nb * nt; ++r)
    for (int v = 0; v < V; ++v)
      hid[r * V + v] = emb[tokens[r] * V + v] + bias[v];
}

void tiny_logits(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const float *hid = (const float *)args[0];
  const float *kv = (const float *)args[1];
  float *logits = (float *)args[2];
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t t = 0; t < nt; ++t) {
      float sum = 0.0f;
      for (int64_t q = 0; q <= pos0 + t; ++q)
        sum += kv[b * S + q];
      int64_t r = b * nt + t;
      int64_t hot = (int64_t)sum % V;
      for (int v = 0; v < V; ++v)
        logits[r * V + v] =
            hid[r * V + v] + (float)pos0 + (v == hot ? 2.5f : 0.0f);
    }
}

/* A tiny grads step (kind grads, docs/artifact-format.md): the mean cross
 * entropy of logits[r, v] = emb[tokens[r], v] + bias[v] against targets[r]
 * over the rows r < nb * nt whose target is not the ignore index -100, and
 * its gradients. Reference: tinyGradsReference in TestUtil.cpp.
 *
 *   tiny_xent(tokens, targets, emb, bias, probs, loss, probe):
 *       probs[r, :] = softmax(logits[r, :]); loss[0] = mean of
 *       -log probs[r, targets[r]] over the counted rows (0 when none);
 *       probe[0..2] = nb, nt, pos0 (so the tests see the launch extents)
 *   tiny_xent_grad(targets, tokens, probs, gemb, gbias):
 *       d = (probs[r, :] - onehot(targets[r])) / count for counted rows;
 *       gemb[tokens[r], :] += d; gbias[:] += d
 * The gradient kernel accumulates: it relies on the runtime zeroing the
 * gradient outputs before every grads step.
 */
#include <math.h>

#define IGNORE_INDEX (-100)

void tiny_xent(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const int32_t *tokens = (const int32_t *)args[0];
  const int32_t *targets = (const int32_t *)args[1];
  const float *emb = (const float *)args[2];
  const float *bias = (const float *)args[3];
  float *probs = (float *)args[4];
  float *loss = (float *)args[5];
  int32_t *probe = (int32_t *)args[6];
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < nb * nt; ++r) {
    double z[V], mx = -INFINITY, se = 0.0;
    for (int v = 0; v < V; ++v) {
      z[v] = (double)emb[tokens[r] * V + v] + (double)bias[v];
      if (z[v] > mx)
        mx = z[v];
    }
    for (int v = 0; v < V; ++v)
      se += exp(z[v] - mx);
    for (int v = 0; v < V; ++v)
      probs[r * V + v] = (float)(exp(z[v] - mx) / se);
    if (targets[r] != IGNORE_INDEX) {
      sum += mx + log(se) - z[targets[r]];
      ++count;
    }
  }
  loss[0] = count ? (float)(sum / (double)count) : 0.0f;
  probe[0] = (int32_t)nb;
  probe[1] = (int32_t)nt;
  probe[2] = (int32_t)pos0;
}

void tiny_xent_grad(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const int32_t *targets = (const int32_t *)args[0];
  const int32_t *tokens = (const int32_t *)args[1];
  const float *probs = (const float *)args[2];
  float *gemb = (float *)args[3];
  float *gbias = (float *)args[4];
  int64_t count = 0;
  (void)pos0;
  for (int64_t r = 0; r < nb * nt; ++r)
    count += targets[r] != IGNORE_INDEX;
  for (int64_t r = 0; r < nb * nt; ++r) {
    if (targets[r] == IGNORE_INDEX)
      continue;
    for (int v = 0; v < V; ++v) {
      float d =
          (probs[r * V + v] - (v == targets[r] ? 1.0f : 0.0f)) / (float)count;
      gemb[tokens[r] * V + v] += d;
      gbias[v] += d;
    }
  }
}

/* A tiny update step (kind update, docs/artifact-format.md) for the params of
 * the tiny grads step, with the project's AdamW defaults compiled in
 * (beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1 on the rank-2 emb only):
 *
 *   tiny_adamw(gemb, gbias, emb, bias, m_emb, v_emb, m_bias, v_bias, hyper,
 *              gnorm):
 *       hyper = [lr, 1 - beta1^t, 1 - beta2^t, max_grad_norm, grad_scale];
 *       g = grad_scale * (gemb, gbias) (the mean of accumulated micro-batch
 *       gradients); gnorm[0] = global norm of g, accumulated in double;
 *       clipping by max_grad_norm / (norm + 1e-6) when norm > max > 0
 *       (the gradient buffers are left as they are); AdamW in double from
 *       the stored f32 values, as adamwStepRef of OptimizerRef.h.
 * Launched with nb = nt = 1.
 */
static void tiny_adamw_tensor(float *p, const float *g, float *m, float *v,
                              int64_t n, double coef, const float *hyper,
                              int decay) {
  const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  const double lr = hyper[0], bc1 = hyper[1], bc2 = hyper[2];
  const double shrink = decay ? 1.0 - lr * wd : 1.0;
  for (int64_t i = 0; i < n; ++i) {
    double gi = (double)g[i];
    if (coef != 1.0)
      gi = (double)(float)(gi * coef);
    m[i] = (float)(b1 * m[i] + (1.0 - b1) * gi);
    v[i] = (float)(b2 * v[i] + (1.0 - b2) * gi * gi);
    double mhat = (double)m[i] / bc1, vhat = (double)v[i] / bc2;
    double x = (double)p[i] * shrink;
    x -= lr * mhat / (sqrt(vhat) + eps);
    p[i] = (float)x;
  }
}

void tiny_adamw(void **args, int64_t nb, int64_t nt, int64_t pos0) {
  const float *gemb = (const float *)args[0];
  const float *gbias = (const float *)args[1];
  float *emb = (float *)args[2];
  float *bias = (float *)args[3];
  const float *hyper = (const float *)args[8];
  float *gnorm = (float *)args[9];
  (void)nb;
  (void)nt;
  (void)pos0;
  double sum = 0.0;
  for (int i = 0; i < V * V; ++i)
    sum += (double)gemb[i] * (double)gemb[i];
  for (int i = 0; i < V; ++i)
    sum += (double)gbias[i] * (double)gbias[i];
  const double scale = hyper[4];
  double norm = scale * sqrt(sum);
  gnorm[0] = (float)norm;
  double maxNorm = hyper[3], coef = scale;
  if (maxNorm > 0.0 && norm > maxNorm)
    coef = scale * (maxNorm / (norm + 1e-6));
  tiny_adamw_tensor(emb, gemb, (float *)args[4], (float *)args[5], V * V, coef,
                    hyper, 1);
  tiny_adamw_tensor(bias, gbias, (float *)args[6], (float *)args[7], V, coef,
                    hyper, 0);
}
