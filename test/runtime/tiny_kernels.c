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
