//===- Roofline.h - sm_90 occupancy and roofline estimates ------*- C++ -*-===//
//
// Static performance estimates for the --report of sm_90a kernels: the
// theoretical occupancy of a kernel from its ptxas resource usage, the
// compute pipe its PTX uses, and a roofline time estimate per device.
// Everything here is an estimate from counts and datasheet peaks, never a
// measurement. Plain C++ (no LLVM/MLIR), so the unit tests link nothing else.
//
//===----------------------------------------------------------------------===//
#ifndef COLOSSUS_COMPILER_ROOFLINE_H
#define COLOSSUS_COMPILER_ROOFLINE_H

#include <cstdint>
#include <string_view>
#include <vector>

namespace colossus {

/// Per-SM resource limits of compute capability 9.0 (H100, H200), from the
/// CUDA C++ Programming Guide's table of compute capabilities and the
/// allocation rules of NVIDIA's occupancy calculator (cuda_occupancy.h).
namespace sm90 {
constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxWarpsPerSM = 64;
constexpr unsigned kMaxBlocksPerSM = 32;
constexpr unsigned kRegistersPerSM = 65536;
constexpr unsigned kRegistersPerBlock = 65536;
constexpr unsigned kMaxRegistersPerThread = 255;
/// Registers are allocated per warp in units of 256.
constexpr unsigned kRegisterAllocationUnit = 256;
/// The register file is split among 4 SM sub-partitions (one warp scheduler
/// each); a warp's registers live in one of them.
constexpr unsigned kSubPartitions = 4;
constexpr unsigned kSharedMemPerSM = 228 * 1024;
/// The most shared memory one block may use (static + dynamic, opt-in).
constexpr unsigned kMaxSharedMemPerBlock = 227 * 1024;
/// Shared memory the system reserves for every resident block.
constexpr unsigned kReservedSharedMemPerBlock = 1024;
constexpr unsigned kSharedMemAllocationUnit = 128;
} // namespace sm90

/// What bounds the number of resident blocks per SM.
enum class OccupancyLimiter {
  Warps,        // 64 warps (2048 threads) per SM
  Blocks,       // 32 blocks per SM
  Registers,    // 65536 registers per SM
  SharedMemory, // 228 KB per SM
  Launch,       // the block cannot run at all (too many threads, registers
                // per block or shared memory per block)
};

/// Theoretical occupancy of one kernel on one SM.
struct Occupancy {
  unsigned warpsPerBlock = 0;
  unsigned blocksPerSM = 0; // 0: the launch fails
  unsigned activeWarpsPerSM = 0;
  double fraction = 0; // activeWarpsPerSM / 64
  OccupancyLimiter limiter = OccupancyLimiter::Launch;
  unsigned registersPerBlock = 0; // as allocated (per-warp rounding)
  unsigned sharedMemPerBlock = 0; // as allocated (reserved 1 KB, rounding)
};

/// The theoretical occupancy of a kernel launched with `blockDim` threads per
/// block (1-D) on an sm_90 SM, computed like NVIDIA's occupancy calculator:
///
///   warps/block   = ceil(blockDim / 32)
///   regs/warp     = roundUp(regsPerThread * 32, 256)
///   by registers  = floor(65536 / 4 / regs/warp) * 4 warps  (sub-partitions)
///                   / warps/block blocks
///   smem/block    = roundUp(static + dynamic + 1024 reserved, 128)
///   by smem       = floor(228 KB / smem/block) blocks
///   by warps      = floor(64 / warps/block) blocks;  by blocks = 32
///   blocks/SM     = the minimum of the four; active warps = blocks * warps
///   occupancy     = active warps / 64
///
/// A block that cannot run at all gives 0 blocks (limiter Launch): more than
/// 1024 threads, more than 255 registers per thread, more than 65536
/// registers per block, or more than 227 KB of shared memory per block.
/// `regsPerThread` 0 (unknown) places no register limit.
Occupancy sm90Occupancy(unsigned blockDim, unsigned regsPerThread,
                        unsigned staticSharedBytes,
                        unsigned dynamicSharedBytes);

const char *limiterName(OccupancyLimiter l);

/// The execution pipe a kernel's arithmetic runs on, which picks its peak.
enum class ComputePipe {
  FmaF32,     // SIMT f32 (FFMA): today's kernels
  TensorTf32, // wgmma / mma with tf32 operands
  TensorBf16, // wgmma / mma with bf16 or f16 operands
  TensorFp8,  // wgmma / mma with e4m3 / e5m2 operands
};

/// The pipe of a kernel from its PTX: the narrowest tensor-core operand type
/// of any `wgmma.mma_async` or `mma.sync` instruction, else SIMT f32.
ComputePipe classifyPtx(std::string_view ptx);

const char *pipeName(ComputePipe p);

/// Datasheet figures of one device (dense, no sparsity), FLOP/s and B/s.
struct DeviceSpec {
  const char *name; // the report's key: h100_sxm, h200_sxm
  double fmaF32;
  double tensorTf32;
  double tensorBf16;
  double tensorFp8;
  double hbmBytesPerSecond;
};

/// H100 SXM and H200 SXM (docs/performance.md names the sources).
const std::vector<DeviceSpec> &rooflineDevices();

double peakFlops(const DeviceSpec &d, ComputePipe p);

/// The roofline time of one launch: max(flops / peak, bytes / bandwidth).
struct RooflineTime {
  double computeSeconds = 0;
  double memorySeconds = 0;
  double seconds = 0;
  bool memoryBound = false;
};

RooflineTime rooflineTime(double flops, double bytes, double peakFlopsPerS,
                          double bytesPerS);

} // namespace colossus

#endif
