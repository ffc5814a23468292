//===- HopperGemmTileTest.cpp - Tile heuristic of the sm_90a GEMM ---------===//
#include "colossus/Compiler/HopperGemmTile.h"

#include <gtest/gtest.h>

using namespace colossus;

namespace {

TEST(HopperGemmTile, LargeProblemTakes128x256OnTwoConsumers) {
  std::optional<HopperGemmTile> t = selectHopperGemmTile(8192, 4096, 4096);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 256);
  EXPECT_EQ(t->bk, 64);
  // Two consumer warpgroups of 64 rows each, and the producer warpgroup.
  EXPECT_EQ(t->consumers, 2);
  EXPECT_EQ(t->consumerRows(), 64);
  EXPECT_EQ(t->threads(), 384);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
  EXPECT_EQ(t->consumerRegisters(), 232);
  // 48 KiB per stage: 4 stages (192 KiB) + 1 KiB alignment slack fit 227 KiB.
  EXPECT_EQ(t->stageBytes(), 49152);
  EXPECT_EQ(t->stages, 4);
  EXPECT_EQ(t->dynamicSmemBytes(), 4 * 49152 + 1024);
  EXPECT_LE(t->dynamicSmemBytes(), HopperGemmLimits().maxDynamicSmem);
  // 1024 tiles on the persistent grid of one CTA per SM.
  EXPECT_EQ(t->grid, HopperGemmTile::kNumSMs);
  EXPECT_EQ(t->grid, 132);
}

TEST(HopperGemmTile, SquareBenchmarkShapesTake128x256) {
  for (int64_t s : {4096, 8192}) {
    std::optional<HopperGemmTile> t = selectHopperGemmTile(s, s, s);
    ASSERT_TRUE(t) << s;
    EXPECT_EQ(t->bm, 128) << s;
    EXPECT_EQ(t->bn, 256) << s;
    EXPECT_EQ(t->stages, 4) << s;
    EXPECT_EQ(t->grid, 132) << s;
  }
}

TEST(HopperGemmTile, NIsNotAMultipleOf256Uses256x128) {
  // N = 33 * 128: 128x256 does not divide it; 256x128 (two consumers of 128
  // rows, two m64 blocks each) has the same intensity and 528 tiles.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(4096, 4224, 1024);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 256);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->consumers, 2);
  EXPECT_EQ(t->consumerRows(), 128);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
  EXPECT_EQ(t->stages, 4);
}

TEST(HopperGemmTile, NotAMultipleOf128RowsUses64x256OnOneConsumer) {
  // M = 64 * 33: 128 does not divide it; 64x256 has the highest intensity.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(64 * 33, 4096, 1024);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 256);
  EXPECT_EQ(t->consumers, 1);
  EXPECT_EQ(t->threads(), 256);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
  EXPECT_EQ(t->consumerRegisters(), 240);
  EXPECT_EQ(t->stageBytes(), (64 + 256) * 64 * 2);
  EXPECT_EQ(t->stages, 5); // 40 KiB stages
}

TEST(HopperGemmTile, DualGemmHoldsTwoBTilesAndTwoAccumulators) {
  // Gate and up projections sharing A: the two accumulators of a consumer
  // thread must fit 128 registers together, so 128x256 (2 x 64x256 per
  // consumer = 256), 256x128 (2 x 128x128 = 256) and 64x256 are out;
  // 128x128 on two consumers (2 x 64x128 = 128) scores best.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(
      8192, 8192, 4096, HopperGemmLimits(), nullptr, /*bOperands=*/2);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->consumers, 2);
  EXPECT_EQ(t->bOperands, 2);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
  EXPECT_EQ(t->stageBytes(), (128 + 2 * 128) * 64 * 2);
  EXPECT_EQ(t->stages, 4);
  EXPECT_EQ(t->grid, 132);
  EXPECT_EQ(t->threads(), 384);
  // A small one: the most tiles (64x64 on one consumer), 24 KiB stages.
  t = selectHopperGemmTile(512, 1024, 256, HopperGemmLimits(), nullptr, 2);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 64);
  EXPECT_EQ(t->consumers, 1);
  EXPECT_EQ(t->accumulatorRegisters(), 64);
  EXPECT_EQ(t->stageBytes(), 24576);
  EXPECT_EQ(t->stages, 4);
  EXPECT_EQ(t->grid, 128);
}

TEST(HopperGemmTile, DualGemmRegisterBudgetCoversBothAccumulators) {
  // Every shape the heuristic may pick keeps both accumulators of a
  // consumer thread within the budget; a single GEMM may use 128x256 where
  // the dual one may not.
  for (int64_t m : {64, 128, 256, 512, 4096, 8192})
    for (int64_t n : {64, 128, 256, 1024, 14336})
      for (int64_t ops : {1, 2}) {
        std::optional<HopperGemmTile> t =
            selectHopperGemmTile(m, n, 4096, HopperGemmLimits(), nullptr, ops);
        ASSERT_TRUE(t) << m << "x" << n;
        EXPECT_LE(t->accumulatorRegisters(), 128) << m << "x" << n;
        EXPECT_EQ(t->accumulatorRegisters(),
                  ops * (t->bm / t->consumers) * t->bn / 128);
      }
  HopperGemmLimits tight;
  tight.maxAccumulatorRegisters = 64;
  std::optional<HopperGemmTile> t =
      selectHopperGemmTile(4096, 4096, 4096, tight, nullptr, 2);
  ASSERT_TRUE(t);
  EXPECT_LE(t->accumulatorRegisters(), 64);
  std::optional<HopperGemmTile> single = selectHopperGemmTile(8192, 8192, 4096);
  ASSERT_TRUE(single);
  EXPECT_EQ(single->accumulatorRegisters(), 128);
}

TEST(HopperGemmTile, SmallProblemPrefersMoreCtas) {
  // 256 x 256: 128x256 gives 2 tiles, 64x64 gives 16 (the best score: wave
  // efficiency 16/132 times intensity 32).
  std::optional<HopperGemmTile> t = selectHopperGemmTile(256, 256, 192);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 64);
  EXPECT_EQ(t->consumers, 1);
  // Three k tiles, and never fewer than three stages.
  EXPECT_EQ(t->stages, 3);
  // Fewer tiles than SMs: one CTA per tile.
  EXPECT_EQ(t->grid, 16);
}

TEST(HopperGemmTile, WaveQuantizationBeatsIntensity) {
  // 1536 x 1408: 256x128 gives 66 tiles (half a wave: score 0.5 * 85.3),
  // 128x128 gives 132 (one full wave: 1.0 * 64).
  std::optional<HopperGemmTile> t = selectHopperGemmTile(1536, 1408, 512);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->consumers, 2);
  EXPECT_EQ(t->grid, 132);
  // With 264 SMs 128x128 fills half of them (0.5 * 64 = 32); 128x64 (264
  // tiles) fills all (1.0 * 42.7) and wins, ahead of 64x128 (a tie: the
  // earlier candidate).
  HopperGemmLimits more;
  more.numSMs = 264;
  t = selectHopperGemmTile(1536, 1408, 512, more);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 64);
  EXPECT_EQ(t->grid, 264);
}

TEST(HopperGemmTile, StagesCappedByKTiles) {
  std::optional<HopperGemmTile> t = selectHopperGemmTile(16384, 16384, 192);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bn, 256);
  EXPECT_EQ(t->stages, 3); // K / 64
}

TEST(HopperGemmTile, RejectsUnalignedShapesWithAReason) {
  std::string why;
  EXPECT_FALSE(selectHopperGemmTile(100, 128, 64, HopperGemmLimits(), &why));
  EXPECT_NE(why.find("multiples of 64"), std::string::npos) << why;
  EXPECT_FALSE(selectHopperGemmTile(128, 128, 96, HopperGemmLimits(), &why));
  EXPECT_NE(why.find("K = 96"), std::string::npos) << why;
  EXPECT_FALSE(selectHopperGemmTile(-1, 128, 64, HopperGemmLimits(), &why));
}

TEST(HopperGemmTile, RespectsTheSharedMemoryBudget) {
  HopperGemmLimits tight;
  tight.maxDynamicSmem = 3 * 32768 + 1024; // three 128x128 stages exactly
  std::optional<HopperGemmTile> t =
      selectHopperGemmTile(8192, 8192, 8192, tight);
  ASSERT_TRUE(t);
  // 128x256 and 256x128 (48 KiB stages) do not fit three.
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->stages, 3);
  tight.maxDynamicSmem -= 1; // 128x128 and 64x256 no longer fit 3 stages
  t = selectHopperGemmTile(8192, 8192, 8192, tight);
  ASSERT_TRUE(t);
  EXPECT_LT(t->stageBytes(), 32768);
  EXPECT_GE(t->stages, 3);
}

TEST(HopperGemmTile, RespectsTheAccumulatorBudget) {
  // 64 registers per consumer thread: 128x256 and 256x128 (128 each) and
  // 64x256 (128) are out; 128x128 on two consumers has 64.
  HopperGemmLimits few;
  few.maxAccumulatorRegisters = 64;
  std::optional<HopperGemmTile> t = selectHopperGemmTile(8192, 8192, 8192, few);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->accumulatorRegisters(), 64);
}

} // namespace
