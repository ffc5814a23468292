//===- Backends.h - Kernel code generation backends -------------*- C++ -*-===//
#ifndef COLOSSUS_COMPILER_BACKENDS_H
#define COLOSSUS_COMPILER_BACKENDS_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace colossus {

/// Registers every dialect, extension and translation the compiler uses.
void registerCompilerDialects(mlir::DialectRegistry &registry);

/// cpu: lowers the `kernels` module (func.func kernels on memrefs) to LLVM,
/// adds the `void name(void **args, int64_t nb, int64_t nt, int64_t pos0)`
/// entry points, compiles for x86-64 and links an ELF shared object.
llvm::Expected<std::vector<uint8_t>>
buildCpuSharedObject(mlir::ModuleOp kernels, bool keepTemps = false);

/// Result of compiling one sm_90a kernel.
struct GpuKernelBinary {
  std::string ptx;
  std::vector<uint8_t> cubin;
  unsigned registers = 0;
  unsigned sharedMemBytes = 0;
  unsigned spillBytes = 0; // spill stores + spill loads
  unsigned stackBytes = 0;
  /// Launch ABI of a kernel that is not a plain SIMT kernel (the Hopper
  /// GEMM: docs/hopper-gemm.md, the Hopper attention:
  /// docs/hopper-attention.md), as `key=value` pairs; empty otherwise.
  std::string abi;
  /// The attribute the ABI came from (colossus.hopper_gemm or
  /// colossus.hopper_attention): which launch ABI `abi` is.
  std::string abiAttr;
};

/// sm_90a: lowers every gpu.module of the `kernels` module through NVVM to
/// PTX (.target sm_90a), then assembles each with `ptxas -arch=sm_90a -v`.
/// With `ptxasPath` empty, ptxas is looked up on PATH and in
/// /usr/local/cuda/bin.
llvm::Expected<std::map<std::string, GpuKernelBinary>>
buildGpuKernels(mlir::ModuleOp kernels, llvm::StringRef ptxasPath);

} // namespace colossus

#endif
