//===- HopperGemmTileTest.cpp - Tile heuristic of the sm_90a GEMM ---------===//
#include "colossus/Compiler/HopperGemmTile.h"

#include <gtest/gtest.h>

using namespace colossus;

namespace {

TEST(HopperGemmTile, LargeProblemTakes128x128AndTheDeepestRingThatFits) {
  std::optional<HopperGemmTile> t = selectHopperGemmTile(8192, 4096, 4096);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  EXPECT_EQ(t->bk, 64);
  // 32 KiB per stage: 7 stages (224 KiB) + 1 KiB alignment slack fit 227 KiB.
  EXPECT_EQ(t->stageBytes(), 32768);
  EXPECT_EQ(t->stages, 7);
  EXPECT_EQ(t->dynamicSmemBytes(), 7 * 32768 + 1024);
  EXPECT_LE(t->dynamicSmemBytes(), HopperGemmLimits().maxDynamicSmem);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
}

TEST(HopperGemmTile, NotAMultipleOf128RowsUses64x256) {
  // M = 64 * 33: 128 does not divide it; N = 4096 fills a wave with 64x256.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(64 * 33, 4096, 1024);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 256);
  EXPECT_EQ(t->stageBytes(), (64 + 256) * 64 * 2);
  EXPECT_EQ(t->stages, 5); // 40 KiB stages
}

TEST(HopperGemmTile, DualGemmHoldsTwoBTilesAndTwoAccumulators) {
  // Gate and up projections sharing A: 2 x bm x bn accumulators must fit
  // 128 registers, so 128x128 and 64x256 are out; 128x64 fills a wave.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(
      8192, 8192, 4096, HopperGemmLimits(), nullptr, /*bOperands=*/2);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 64);
  EXPECT_EQ(t->bOperands, 2);
  EXPECT_EQ(t->accumulatorRegisters(), 128);
  EXPECT_EQ(t->stageBytes(), (128 + 2 * 64) * 64 * 2);
  EXPECT_EQ(t->stages, 7);
  // A small one: the most CTAs (64x64), 24 KiB stages.
  t = selectHopperGemmTile(512, 1024, 256, HopperGemmLimits(), nullptr, 2);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 64);
  EXPECT_EQ(t->stageBytes(), 24576);
  EXPECT_EQ(t->stages, 4);
}

TEST(HopperGemmTile, SmallProblemPrefersMoreCtas) {
  // 256 x 256: 128x128 gives 4 CTAs, 64x64 gives 16 (the most).
  std::optional<HopperGemmTile> t = selectHopperGemmTile(256, 256, 192);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 64);
  EXPECT_EQ(t->bn, 64);
  // Three k tiles, and never fewer than three stages.
  EXPECT_EQ(t->stages, 3);
}

TEST(HopperGemmTile, FirstCandidateFillingAWaveWins) {
  // 128x128 yields 12 x 11 = 132 CTAs: exactly one wave on 132 SMs.
  std::optional<HopperGemmTile> t = selectHopperGemmTile(1536, 1408, 512);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 128);
  // With 133 SMs 128x128 leaves one idle; 64x256 does not divide N = 1408,
  // so 128x64 (12 x 22 = 264 CTAs) is the first to fill a wave.
  HopperGemmLimits more;
  more.numSMs = 133;
  t = selectHopperGemmTile(1536, 1408, 512, more);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->bn, 64);
}

TEST(HopperGemmTile, StagesCappedByKTiles) {
  std::optional<HopperGemmTile> t = selectHopperGemmTile(16384, 16384, 256);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->stages, 4); // K / 64
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
  EXPECT_EQ(t->bm, 128);
  EXPECT_EQ(t->stages, 3);
  tight.maxDynamicSmem -= 1; // 128x128 and 64x256 no longer fit 3 stages
  t = selectHopperGemmTile(8192, 8192, 8192, tight);
  ASSERT_TRUE(t);
  EXPECT_LT(t->stageBytes(), 32768);
  EXPECT_GE(t->stages, 3);
}

} // namespace
