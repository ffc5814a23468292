//===- Roofline.cpp - sm_90 occupancy and roofline estimates --------------===//
#include "colossus/Compiler/Roofline.h"

#include <algorithm>

using namespace colossus;

namespace {

unsigned divideCeil(unsigned x, unsigned y) { return (x + y - 1) / y; }
unsigned roundUp(unsigned x, unsigned y) { return divideCeil(x, y) * y; }

} // namespace

Occupancy colossus::sm90Occupancy(unsigned blockDim, unsigned regsPerThread,
                                  unsigned staticSharedBytes,
                                  unsigned dynamicSharedBytes) {
  using namespace sm90;
  Occupancy o;
  o.warpsPerBlock = divideCeil(blockDim, kWarpSize);
  unsigned regsPerWarp =
      roundUp(regsPerThread * kWarpSize, kRegisterAllocationUnit);
  o.registersPerBlock = regsPerWarp * o.warpsPerBlock;
  uint64_t smemUsed = uint64_t(staticSharedBytes) + dynamicSharedBytes;
  if (smemUsed <= kMaxSharedMemPerBlock)
    o.sharedMemPerBlock =
        roundUp(static_cast<unsigned>(smemUsed) + kReservedSharedMemPerBlock,
                kSharedMemAllocationUnit);
  if (blockDim == 0 || blockDim > kMaxThreadsPerBlock ||
      regsPerThread > kMaxRegistersPerThread ||
      o.registersPerBlock > kRegistersPerBlock ||
      smemUsed > kMaxSharedMemPerBlock)
    return o; // blocksPerSM 0, limiter Launch

  unsigned byWarps = kMaxWarpsPerSM / o.warpsPerBlock;
  unsigned byBlocks = kMaxBlocksPerSM;
  unsigned byRegs = regsPerWarp == 0
                        ? kMaxBlocksPerSM
                        : (kRegistersPerSM / kSubPartitions / regsPerWarp) *
                              kSubPartitions / o.warpsPerBlock;
  unsigned bySmem = kSharedMemPerSM / o.sharedMemPerBlock;
  o.blocksPerSM = std::min({byWarps, byBlocks, byRegs, bySmem});
  // The first limit, in this order, that attains the minimum.
  if (o.blocksPerSM == byWarps)
    o.limiter = OccupancyLimiter::Warps;
  else if (o.blocksPerSM == byBlocks)
    o.limiter = OccupancyLimiter::Blocks;
  else if (o.blocksPerSM == byRegs)
    o.limiter = OccupancyLimiter::Registers;
  else
    o.limiter = OccupancyLimiter::SharedMemory;
  o.activeWarpsPerSM = o.blocksPerSM * o.warpsPerBlock;
  o.fraction = double(o.activeWarpsPerSM) / kMaxWarpsPerSM;
  return o;
}

const char *colossus::limiterName(OccupancyLimiter l) {
  switch (l) {
  case OccupancyLimiter::Warps:
    return "warps";
  case OccupancyLimiter::Blocks:
    return "blocks";
  case OccupancyLimiter::Registers:
    return "registers";
  case OccupancyLimiter::SharedMemory:
    return "shared_memory";
  case OccupancyLimiter::Launch:
    return "launch";
  }
  return "launch";
}

ComputePipe colossus::classifyPtx(std::string_view ptx) {
  ComputePipe pipe = ComputePipe::FmaF32;
  auto widen = [&](ComputePipe p) {
    if (static_cast<int>(p) > static_cast<int>(pipe))
      pipe = p;
  };
  size_t pos = 0;
  while (pos < ptx.size()) {
    size_t end = ptx.find('\n', pos);
    if (end == std::string_view::npos)
      end = ptx.size();
    std::string_view line = ptx.substr(pos, end - pos);
    pos = end + 1;
    // Comments are not instructions.
    line = line.substr(0, line.find("//"));
    size_t at = line.find("wgmma.mma_async");
    if (at == std::string_view::npos)
      at = line.find("mma.sync");
    if (at == std::string_view::npos)
      continue;
    // The opcode with its type suffixes, up to the first operand.
    std::string_view op = line.substr(at);
    op = op.substr(0, op.find_first_of(" \t"));
    auto has = [&](std::string_view s) {
      return op.find(s) != std::string_view::npos;
    };
    if (has(".e4m3") || has(".e5m2"))
      widen(ComputePipe::TensorFp8);
    else if (has(".bf16") || has(".f16"))
      widen(ComputePipe::TensorBf16);
    else if (has(".tf32"))
      widen(ComputePipe::TensorTf32);
  }
  return pipe;
}

const char *colossus::pipeName(ComputePipe p) {
  switch (p) {
  case ComputePipe::FmaF32:
    return "fma_f32";
  case ComputePipe::TensorTf32:
    return "tensor_tf32";
  case ComputePipe::TensorBf16:
    return "tensor_bf16";
  case ComputePipe::TensorFp8:
    return "tensor_fp8";
  }
  return "fma_f32";
}

const std::vector<DeviceSpec> &colossus::rooflineDevices() {
  // Dense (no sparsity) peaks at boost clock. H100 SXM5: NVIDIA H100 Tensor
  // Core GPU datasheet and architecture whitepaper (FP32 66.9, TF32 494.7,
  // BF16 989.4, FP8 1978.9 TFLOP/s; HBM3 3.35 TB/s). H200 SXM: the same
  // GH100 compute at the same clocks (H200 datasheet: FP32 67, BF16 989,
  // FP8 1979 TFLOP/s), HBM3e 4.8 TB/s. BF16 and FP8 as in DESIGN.md.
  static const std::vector<DeviceSpec> devices = {
      {"h100_sxm", 66.9e12, 494.7e12, 989e12, 1979e12, 3.35e12},
      {"h200_sxm", 66.9e12, 494.7e12, 989e12, 1979e12, 4.8e12},
  };
  return devices;
}

double colossus::peakFlops(const DeviceSpec &d, ComputePipe p) {
  switch (p) {
  case ComputePipe::FmaF32:
    return d.fmaF32;
  case ComputePipe::TensorTf32:
    return d.tensorTf32;
  case ComputePipe::TensorBf16:
    return d.tensorBf16;
  case ComputePipe::TensorFp8:
    return d.tensorFp8;
  }
  return d.fmaF32;
}

RooflineTime colossus::rooflineTime(double flops, double bytes,
                                    double peakFlopsPerS, double bytesPerS) {
  RooflineTime t;
  t.computeSeconds = flops / peakFlopsPerS;
  t.memorySeconds = bytes / bytesPerS;
  t.memoryBound = t.memorySeconds > t.computeSeconds;
  t.seconds = std::max(t.computeSeconds, t.memorySeconds);
  return t;
}
