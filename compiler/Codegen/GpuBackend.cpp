//===- GpuBackend.cpp - Kernels to sm_90a PTX and cubin -------------------===//
#include "colossus/Compiler/Backends.h"
#include "colossus/Compiler/HopperAttention.h"
#include "colossus/Compiler/HopperGemm.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"
#include "llvm/Support/raw_ostream.h"
#include <cstdlib>

using namespace mlir;
using namespace llvm;

namespace {

Error err(const Twine &msg) {
  return createStringError(inconvertibleErrorCode(), msg);
}

Expected<std::string> findPtxas(StringRef given) {
  if (!given.empty()) {
    if (!sys::fs::can_execute(given))
      return err("--ptxas=" + given + ": not an executable");
    return given.str();
  }
  if (ErrorOr<std::string> p = sys::findProgramByName("ptxas"))
    return *p;
  if (ErrorOr<std::string> p =
          sys::findProgramByName("ptxas", {"/usr/local/cuda/bin"}))
    return *p;
  return err("ptxas not found on PATH or in /usr/local/cuda/bin: the sm_90a "
             "target needs the CUDA toolkit's ptxas (or pass --ptxas=PATH)");
}

unsigned firstNumber(StringRef text, StringRef pattern) {
  Regex re(pattern);
  SmallVector<StringRef> groups;
  if (!re.match(text, &groups) || groups.size() < 2)
    return 0;
  unsigned v = 0;
  groups[1].getAsInteger(10, v);
  return v;
}

} // namespace

Expected<std::map<std::string, colossus::GpuKernelBinary>>
colossus::buildGpuKernels(ModuleOp kernels, StringRef ptxasPath) {
  Expected<std::string> ptxas = findPtxas(ptxasPath);
  if (!ptxas)
    return ptxas.takeError();
  // MLIR's NVVM serialization links libdevice (for exp, pow, sin, ...) from
  // the toolkit named by CUDA_HOME; default it to the toolkit of this ptxas.
  if (!std::getenv("CUDA_HOME") && !std::getenv("CUDA_ROOT") &&
      !std::getenv("CUDA_PATH")) {
    SmallString<128> root(*ptxas);
    sys::path::remove_filename(root); // .../bin
    sys::path::remove_filename(root); // toolkit root
    SmallString<128> libdevice(root);
    sys::path::append(libdevice, "nvvm", "libdevice", "libdevice.10.bc");
    if (!sys::fs::exists(libdevice))
      return err("libdevice not found at " + libdevice +
                 " (set CUDA_HOME to the CUDA toolkit)");
    setenv("CUDA_HOME", root.c_str(), 0);
  }
  MLIRContext *ctx = kernels.getContext();
  // Launch ABIs of kernels that are not plain SIMT kernels, by gpu.module.
  // (attribute name, ABI line) by gpu.module.
  std::map<std::string, std::pair<std::string, std::string>> abis;
  kernels.walk([&](gpu::GPUFuncOp fn) {
    for (const char *attr : {kHopperGemmAbiAttr, kHopperAttentionAbiAttr,
                             kHopperAttentionBwdAbiAttr})
      if (auto abi = fn->getAttrOfType<StringAttr>(attr))
        if (auto gm = fn->getParentOfType<gpu::GPUModuleOp>())
          abis[gm.getSymName().str()] = {attr, abi.str()};
  });
  OwningOpRef<ModuleOp> m = ModuleOp::create(kernels.getLoc());
  (*m)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                UnitAttr::get(ctx));
  for (Operation &op : kernels.getBody()->getOperations())
    m->getBody()->push_back(op.clone());

  auto pm = mlir::PassManager::on<ModuleOp>(ctx);
  if (failed(parsePassPipeline(
          "gpu-lower-to-nvvm-pipeline{cubin-chip=sm_90a "
          "cubin-features=+ptx80 cubin-format=isa opt-level=3 "
          "kernel-bare-ptr-calling-convention=1}",
          pm)))
    return err("internal error: bad sm_90a lowering pipeline");
  if (failed(pm.run(*m)))
    return err("lowering the sm_90a kernels through NVVM to PTX failed");

  std::map<std::string, GpuKernelBinary> out;
  SmallString<128> dir;
  if (std::error_code ec = sys::fs::createUniqueDirectory("colossus-ptx", dir))
    return err("cannot create a temporary directory: " + ec.message());
  for (auto bin : m->getOps<gpu::BinaryOp>()) {
    std::string name = bin.getSymName().str();
    ArrayAttr objects = bin.getObjectsAttr();
    // A kernel module may pin its own target (the Hopper GEMM needs PTX ISA
    // 8.3); the pipeline appends the default one after it. Use the first.
    if (objects.empty() || (objects.size() != 1 && !abis.count(name)))
      return err("internal error: kernel " + name + " has " +
                 Twine(objects.size()) + " objects");
    auto obj = cast<gpu::ObjectAttr>(objects[0]);
    GpuKernelBinary k;
    k.ptx = obj.getObject().getValue().str();
    if (auto it = abis.find(name); it != abis.end()) {
      k.abiAttr = it->second.first;
      k.abi = it->second.second;
    }

    SmallString<128> ptxPath(dir), cubinPath(dir), logPath(dir);
    sys::path::append(ptxPath, name + ".ptx");
    sys::path::append(cubinPath, name + ".cubin");
    sys::path::append(logPath, name + ".log");
    {
      std::error_code ec;
      raw_fd_ostream os(ptxPath, ec);
      if (ec)
        return err("cannot write " + ptxPath + ": " + ec.message());
      os << k.ptx;
    }
    std::string p = ptxPath.str().str(), c = cubinPath.str().str(),
                l = logPath.str().str();
    SmallVector<StringRef> argv = {*ptxas, "-arch=sm_90a", "-O3", "-v",
                                   p,      "-o",           c};
    std::optional<StringRef> redirects[] = {std::nullopt, StringRef(l),
                                            StringRef(l)};
    std::string errMsg;
    int rc = sys::ExecuteAndWait(*ptxas, argv, std::nullopt, redirects, 0, 0,
                                 &errMsg);
    ErrorOr<std::unique_ptr<MemoryBuffer>> log = MemoryBuffer::getFile(logPath);
    std::string logText = log ? (*log)->getBuffer().str() : std::string();
    if (rc != 0)
      return err("ptxas rejected kernel " + name + " (exit " + Twine(rc) +
                 "): " + errMsg + "\n" + logText);
    ErrorOr<std::unique_ptr<MemoryBuffer>> cubin =
        MemoryBuffer::getFile(cubinPath);
    if (!cubin)
      return err("ptxas wrote no cubin for " + name);
    k.cubin.assign((*cubin)->getBufferStart(), (*cubin)->getBufferEnd());
    k.registers = firstNumber(logText, "Used ([0-9]+) registers");
    k.sharedMemBytes = firstNumber(logText, "([0-9]+) bytes smem");
    k.stackBytes = firstNumber(logText, "([0-9]+) bytes stack frame");
    k.spillBytes = firstNumber(logText, "([0-9]+) bytes spill stores") +
                   firstNumber(logText, "([0-9]+) bytes spill loads");
    out[name] = std::move(k);
    sys::fs::remove(ptxPath);
    sys::fs::remove(cubinPath);
    sys::fs::remove(logPath);
  }
  sys::fs::remove(dir);
  return out;
}
