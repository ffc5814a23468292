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
      {128, 256}, {256, 128}, {128, 128}, {64, 256},
      {128, 64},  {64, 128},  {64, 64}};
  const int64_t kTiles = k / bk;
  const int64_t sms = std::max<int64_t>(limits.numSMs, 1);
  std::optional<HopperGemmTile> best;
  double bestScore = 0;
  for (const auto &c : candidates) {
    HopperGemmTile t;
    t.bm = c[0];
    t.bn = c[1];
    t.bk = bk;
    t.consumers = t.bm >= 128 ? 2 : 1;
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
    const int64_t tiles = (m / t.bm) * (n / t.bn);
    const int64_t waves = (tiles + sms - 1) / sms;
    t.grid = std::min(tiles, sms);
    const double score = double(tiles) / double(waves * sms) *
                         double(bOperands * t.bm * t.bn) /
                         double(t.bm + bOperands * t.bn);
    if (!best || score > bestScore) {
      best = t;
      bestScore = score;
    }
  }
  if (!best)
    return fail("M = " + std::to_string(m) + " and N = " + std::to_string(n) +
                " are not both multiples of 64");
  return best;
}
