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
