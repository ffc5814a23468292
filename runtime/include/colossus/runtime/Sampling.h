//===- Sampling.h - Picking the next token from logits --------------------===//
//
//   temperature == 0: greedy argmax (the lowest index wins ties; NaN logits
//                     are never picked unless every logit is NaN -> 0).
//   temperature > 0:  z = logits / temperature (in double); candidates sorted
//                     by z descending (ties: lower index first); top-k keeps
//                     the first k (k > 0); softmax over the kept candidates;
//                     top-p keeps the shortest prefix whose probability mass
//                     reaches p (0 < p <= 1, at least one token); renormalise
//                     and draw u = (rng() >> 11) * 2^-53 from a
//                     std::mt19937_64 seeded with the --seed value; the pick
//                     is the first candidate whose cumulative probability
//                     exceeds u. (The draw avoids
//                     std::uniform_real_distribution, whose algorithm differs
//                     between standard libraries, so a seed gives the same
//                     tokens everywhere.)
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_SAMPLING_H
#define COLOSSUS_RUNTIME_SAMPLING_H

#include "colossus/runtime/Status.h"

#include <cstddef>
#include <cstdint>
#include <random>

namespace colossus {

struct SamplingParams {
  double temperature = 0.0; ///< 0 = greedy; must be >= 0 and finite.
  int64_t topK = 0;         ///< 0 = off; otherwise keep the k most likely.
  double topP = 1.0;        ///< 1 = off; nucleus mass in (0, 1].
  uint64_t seed = 0;        ///< seeds the std::mt19937_64 of the sampler.
};

/// Validates the parameters (messages name the flag: --temperature, ...).
Status validateSamplingParams(const SamplingParams &params);

/// Index of the largest logit (lowest index on ties).
int64_t argmax(const float *logits, size_t n);

/// A sampler with its own generator; one per generation request.
class Sampler {
public:
  explicit Sampler(const SamplingParams &params)
      : params_(params), rng_(params.seed) {}
  /// Picks a token from `n` logits (params must be valid, n >= 1).
  int64_t sample(const float *logits, size_t n);

private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

} // namespace colossus

#endif // COLOSSUS_RUNTIME_SAMPLING_H
