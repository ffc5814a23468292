//===- RooflineTest.cpp - sm_90 occupancy and roofline unit tests ---------===//
//
// Expected occupancies are computed by hand with the formula of NVIDIA's
// occupancy calculator (cuda_occupancy.h) for compute capability 9.0:
// 64 warps, 32 blocks, 65536 registers (4 sub-partitions of 16384, per-warp
// allocation unit 256) and 228 KB shared memory per SM; 227 KB per block,
// 1 KB reserved per block, 128-byte allocation unit. Each case states its
// arithmetic.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/Roofline.h"

#include <gtest/gtest.h>

using namespace colossus;

namespace {

struct Case {
  unsigned blockDim, regs, staticSmem, dynamicSmem;
  unsigned blocks, warps;
  OccupancyLimiter limiter;
};

void expectOccupancy(const Case &c) {
  Occupancy o = sm90Occupancy(c.blockDim, c.regs, c.staticSmem, c.dynamicSmem);
  SCOPED_TRACE(testing::Message()
               << "block " << c.blockDim << ", " << c.regs << " regs, smem "
               << c.staticSmem << " + " << c.dynamicSmem);
  EXPECT_EQ(o.blocksPerSM, c.blocks);
  EXPECT_EQ(o.activeWarpsPerSM, c.warps);
  EXPECT_DOUBLE_EQ(o.fraction, c.warps / 64.0);
  EXPECT_EQ(o.limiter, c.limiter);
}

TEST(Sm90Occupancy, FullOccupancyIsWarpLimited) {
  // 4 warps/block; 32 regs -> 1024 regs/warp; 16384 / 1024 = 16 warps per
  // sub-partition -> 64 warps -> 16 blocks; 64 / 4 = 16 blocks by warps;
  // smem 0 + 1024 reserved -> 228 blocks. 16 blocks, 64 warps, 100%.
  expectOccupancy({128, 32, 0, 0, 16, 64, OccupancyLimiter::Warps});
  // 100 threads round up to 4 warps: the same.
  expectOccupancy({100, 32, 0, 0, 16, 64, OccupancyLimiter::Warps});
  // Registers unknown (0) place no limit.
  expectOccupancy({128, 0, 0, 0, 16, 64, OccupancyLimiter::Warps});
}

TEST(Sm90Occupancy, RegistersAreAllocatedPerSubPartition) {
  // 3 warps/block; 40 regs -> 1280 regs/warp; floor(16384 / 1280) = 12
  // warps per sub-partition -> 48 warps -> 16 blocks (by warps: 21).
  // 48 warps = 75%. Pooling the whole register file would give
  // floor(65536 / 1280) = 51 warps -> 17 blocks: the sub-partition matters.
  expectOccupancy({96, 40, 0, 0, 16, 48, OccupancyLimiter::Registers});
  // 8 warps/block; 255 regs -> 8160, rounded to 8192 regs/warp; 2 warps per
  // sub-partition -> 8 warps -> 1 block, 12.5%.
  expectOccupancy({256, 255, 0, 0, 1, 8, OccupancyLimiter::Registers});
  // 32 warps/block; 64 regs -> 2048 regs/warp; 8 per sub-partition -> 32
  // warps -> 1 block (by warps: 2), 50%.
  expectOccupancy({1024, 64, 0, 0, 1, 32, OccupancyLimiter::Registers});
  // 28 warps/block; 72 regs -> 2304 regs/warp (64512 per block <= 65536);
  // floor(16384 / 2304) = 7 -> 28 warps -> 1 block, 43.75%.
  expectOccupancy({896, 72, 0, 0, 1, 28, OccupancyLimiter::Registers});
}

TEST(Sm90Occupancy, BlockLimit) {
  // 1 warp/block, 16 regs: 128 blocks by registers, 64 by warps, but at
  // most 32 blocks per SM -> 32 warps, 50%.
  expectOccupancy({32, 16, 0, 0, 32, 32, OccupancyLimiter::Blocks});
}

TEST(Sm90Occupancy, SharedMemory) {
  // 48 KB static + 1 KB reserved = 50176 B per block; 233472 / 50176 = 4.65
  // -> 4 blocks -> 16 warps, 25%.
  expectOccupancy({128, 32, 49152, 0, 4, 16, OccupancyLimiter::SharedMemory});
  // 227 KB dynamic (the per-block maximum) + 1 KB = 228 KB: 1 block, 4 warps.
  expectOccupancy({128, 32, 0, 232448, 1, 4, OccupancyLimiter::SharedMemory});
  // 1 warp/block; 32276 + 1024 = 33300 B, rounded up to 128: 33408 B;
  // 233472 / 33408 = 6.99 -> 6 blocks (7 without the rounding), 6 warps.
  expectOccupancy({32, 32, 0, 32276, 6, 6, OccupancyLimiter::SharedMemory});
  // Static and dynamic add up: 24 KB + 24 KB is the 48 KB case.
  expectOccupancy(
      {128, 32, 24576, 24576, 4, 16, OccupancyLimiter::SharedMemory});
}

TEST(Sm90Occupancy, BlocksThatCannotLaunch) {
  // 1025 threads per block.
  expectOccupancy({1025, 32, 0, 0, 0, 0, OccupancyLimiter::Launch});
  // 16 warps x 8192 regs = 131072 > 65536 registers per block.
  expectOccupancy({512, 255, 0, 0, 0, 0, OccupancyLimiter::Launch});
  // 32 warps x 2304 regs = 73728 > 65536.
  expectOccupancy({1024, 72, 0, 0, 0, 0, OccupancyLimiter::Launch});
  // 227 KB + 1 byte of shared memory per block.
  expectOccupancy({128, 32, 1, 232448, 0, 0, OccupancyLimiter::Launch});
  // More registers per thread than sm_90 has.
  expectOccupancy({32, 256, 0, 0, 0, 0, OccupancyLimiter::Launch});
}

TEST(Sm90Occupancy, AllocatedResources) {
  Occupancy o = sm90Occupancy(96, 40, 100, 0);
  EXPECT_EQ(o.warpsPerBlock, 3u);
  EXPECT_EQ(o.registersPerBlock, 3u * 1280u);
  EXPECT_EQ(o.sharedMemPerBlock, 1152u); // 100 + 1024 = 1124 -> 9 x 128
}

TEST(ClassifyPtx, SimtKernelsUseTheFmaPipe) {
  EXPECT_EQ(classifyPtx("fma.rn.f32 %f1, %f2, %f3, %f4;\n"),
            ComputePipe::FmaF32);
  EXPECT_EQ(classifyPtx(""), ComputePipe::FmaF32);
  // Fences and comments are not matrix instructions.
  EXPECT_EQ(classifyPtx("wgmma.fence.sync.aligned;\n"
                        "// wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16\n"),
            ComputePipe::FmaF32);
}

TEST(ClassifyPtx, TensorCoreInstructions) {
  EXPECT_EQ(classifyPtx("  wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16."
                        "bf16 {%f1}, %rd1, %rd2, p, 1, 1, 0, 1;\n"),
            ComputePipe::TensorBf16);
  EXPECT_EQ(classifyPtx("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                        "{%f1}, {%r1}, {%r2}, {%f2};"),
            ComputePipe::TensorBf16);
  EXPECT_EQ(classifyPtx("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                        "{%f1}, {%r1}, {%r2}, {%f2};"),
            ComputePipe::TensorTf32);
  EXPECT_EQ(classifyPtx("wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3."
                        "e4m3 {%f1}, %rd1, %rd2, p, 1, 1;"),
            ComputePipe::TensorFp8);
  // Mixed kernels take the fastest pipe they use.
  EXPECT_EQ(classifyPtx("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                        "{%f1}, {%r1}, {%r2}, {%f2};\n"
                        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                        "{%f1}, %rd1, %rd2, p, 1, 1, 0, 1;\n"),
            ComputePipe::TensorBf16);
}

TEST(Roofline, Devices) {
  const std::vector<DeviceSpec> &d = rooflineDevices();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_STREQ(d[0].name, "h100_sxm");
  EXPECT_DOUBLE_EQ(d[0].hbmBytesPerSecond, 3.35e12);
  EXPECT_DOUBLE_EQ(peakFlops(d[0], ComputePipe::FmaF32), 66.9e12);
  EXPECT_DOUBLE_EQ(peakFlops(d[0], ComputePipe::TensorBf16), 989e12);
  EXPECT_DOUBLE_EQ(peakFlops(d[0], ComputePipe::TensorFp8), 1979e12);
  EXPECT_STREQ(d[1].name, "h200_sxm");
  EXPECT_DOUBLE_EQ(d[1].hbmBytesPerSecond, 4.8e12);
  EXPECT_DOUBLE_EQ(peakFlops(d[1], ComputePipe::FmaF32), 66.9e12);
}

TEST(Roofline, TimeIsTheSlowerOfComputeAndMemory) {
  // 1 TFLOP at 66.9 TFLOP/s = 14.9 ms; 6.7 TB at 3.35 TB/s = 2 s.
  RooflineTime t = rooflineTime(1e12, 6.7e12, 66.9e12, 3.35e12);
  EXPECT_TRUE(t.memoryBound);
  EXPECT_DOUBLE_EQ(t.seconds, 2.0);
  EXPECT_NEAR(t.computeSeconds, 0.014948, 1e-6);
  // 989 TFLOP at 989 TFLOP/s = 1 s; 1 TB at 4.8 TB/s = 0.208 s.
  RooflineTime c = rooflineTime(989e12, 1e12, 989e12, 4.8e12);
  EXPECT_FALSE(c.memoryBound);
  EXPECT_DOUBLE_EQ(c.seconds, 1.0);
  EXPECT_NEAR(c.memorySeconds, 0.208333, 1e-6);
}

} // namespace
