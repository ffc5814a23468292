//===- HopperGemmTile.cpp - Tile shape of the sm_90a GEMM -----------------===//
#include "colossus/Compiler/HopperGemmTile.h"

#include <algorithm>

using namespace colossus;

std::optional<HopperGemmTile>
colossus::selectHopperGemmTile(int64_t m, int64_t n, int64_t k,
                               const HopperGemmLimits &limits,
                               std::string *whyNot, int64_t bOperands) {
  auto fail = [&](std::string msg) -> std::optional<HopperGemmTile> {
    if (whyNot)
      *whyNot = std::move(msg);
    return std::nullopt;
  };
  constexpr int64_t bk = 64;
  if (m <= 0 || n <= 0 || k <= 0)
    return fail("the shape must be static and positive");
  if (k % bk)
    return fail("K = " + std::to_string(k) + " is not a multiple of 64");
  static constexpr int64_t candidates[][2] = {
      {128, 128}, {64, 256}, {128, 64}, {64, 128}, {64, 64}};
  const int64_t kTiles = k / bk;
  std::optional<HopperGemmTile> best;
  int64_t bestCtas = 0;
  for (const auto &c : candidates) {
    HopperGemmTile t;
    t.bm = c[0];
    t.bn = c[1];
    t.bk = bk;
    t.bOperands = bOperands;
    if (m % t.bm || n % t.bn)
      continue;
    if (t.accumulatorRegisters() > limits.maxAccumulatorRegisters)
      continue;
    int64_t fit =
        (limits.maxDynamicSmem - HopperGemmTile::kSmemAlignSlack) /
        t.stageBytes();
    if (fit < limits.minStages)
      continue;
    t.stages = std::max(limits.minStages,
                        std::min({fit, limits.maxStages, kTiles}));
    int64_t ctas = (m / t.bm) * (n / t.bn);
    if (ctas >= limits.numSMs)
      return t;
    if (!best || ctas > bestCtas) {
      best = t;
      bestCtas = ctas;
    }
  }
  if (!best)
    return fail("M = " + std::to_string(m) + " and N = " + std::to_string(n) +
                " are not both multiples of 64");
  return best;
}
