//===- CpuBackend.cpp - Kernels to an x86-64 shared object ----------------===//
#include "colossus/Compiler/Backends.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Triple.h"

using namespace mlir;
using namespace llvm;

namespace {

const char *kGemmTransform = R"mlir(
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(
      %root: !transform.any_op {transform.readonly}) {
    %mm = transform.structured.match ops{["linalg.generic"]} in %root
        : (!transform.any_op) -> !transform.any_op
    %tiled, %l0, %l1, %l2 = transform.structured.tile_using_for %mm
        tile_sizes [4, 8, 8]
        : (!transform.any_op)
          -> (!transform.any_op, !transform.any_op, !transform.any_op,
              !transform.any_op)
    transform.structured.vectorize %tiled vector_sizes [4, 8, 8]
        : !transform.any_op
    %f = transform.structured.match ops{["func.func"]} in %root
        : (!transform.any_op) -> !transform.any_op
    transform.apply_patterns to %f {
      transform.apply_patterns.vector.lower_masked_transfers
      transform.apply_patterns.vector.lower_contraction
      transform.apply_patterns.vector.lower_outerproduct
      transform.apply_patterns.vector.transfer_permutation_patterns
      transform.apply_patterns.vector.lower_transfer
    } : !transform.any_op
    transform.yield
  }
}
)mlir";

Error err(const Twine &msg) {
  return createStringError(inconvertibleErrorCode(), msg);
}

/// Adds `name(void **args, i64 nb, i64 nt, i64 pos0)` calling `name_impl`.
void addPackedEntry(ModuleOp m, LLVM::LLVMFuncOp impl, StringRef name,
                    unsigned numArgs) {
  OpBuilder b(m.getContext());
  b.setInsertionPointToEnd(m.getBody());
  mlir::Location loc = impl.getLoc();
  auto ptrTy = LLVM::LLVMPointerType::get(m.getContext());
  auto i64 = b.getI64Type();
  auto fnTy = LLVM::LLVMFunctionType::get(
      LLVM::LLVMVoidType::get(m.getContext()), {ptrTy, i64, i64, i64});
  auto fn = b.create<LLVM::LLVMFuncOp>(loc, name, fnTy);
  Block *entry = fn.addEntryBlock(b);
  b.setInsertionPointToStart(entry);
  SmallVector<mlir::Value> args;
  for (unsigned i = 0; i < numArgs; ++i) {
    mlir::Value gep =
        b.create<LLVM::GEPOp>(loc, ptrTy, ptrTy, entry->getArgument(0),
                              ArrayRef<LLVM::GEPArg>{int32_t(i)});
    args.push_back(b.create<LLVM::LoadOp>(loc, ptrTy, gep));
  }
  args.append(
      {entry->getArgument(1), entry->getArgument(2), entry->getArgument(3)});
  b.create<LLVM::CallOp>(loc, impl, mlir::ValueRange(args));
  b.create<LLVM::ReturnOp>(loc, ValueRange());
}

} // namespace

Expected<std::vector<uint8_t>> colossus::buildCpuSharedObject(ModuleOp kernels,
                                                              bool keepTemps) {
  MLIRContext *ctx = kernels.getContext();
  OwningOpRef<ModuleOp> m = ModuleOp::create(kernels.getLoc());
  for (Operation &op : kernels.getBody()->getOperations())
    m->getBody()->push_back(op.clone());

  // Kernel entry points keep their names; the bodies become name_impl.
  SmallVector<std::pair<std::string, unsigned>> entries;
  for (auto fn : llvm::make_early_inc_range(m->getOps<func::FuncOp>())) {
    std::string name = fn.getSymName().str();
    unsigned numArgs = fn.getNumArguments() - 3;
    if (failed(SymbolTable::replaceAllSymbolUses(
            fn, StringAttr::get(ctx, name + "_impl"), *m)))
      return err("cannot rename kernel " + name);
    SymbolTable::setSymbolName(fn, name + "_impl");
    fn.setPrivate();
    entries.push_back({name, numArgs});
  }

  // GEMM cores are linalg contractions: tile them (4 rows x 8 columns x 8
  // of k) and vectorize each tile with masks for the dynamic row count.
  {
    OwningOpRef<ModuleOp> script =
        parseSourceString<ModuleOp>(kGemmTransform, ctx);
    if (!script)
      return err("internal error: bad cpu GEMM transform script");
    Operation *lib = (*script)->clone();
    m->getBody()->push_back(lib);
    auto tpm = mlir::PassManager::on<ModuleOp>(ctx);
    if (failed(parsePassPipeline("transform-interpreter,canonicalize", tpm)))
      return err("internal error: bad cpu transform pipeline");
    LogicalResult r = tpm.run(*m);
    lib->erase();
    if (failed(r))
      return err("tiling and vectorizing the cpu GEMMs failed");
  }

  auto pm = mlir::PassManager::on<ModuleOp>(ctx);
  if (failed(parsePassPipeline(
          "func.func(lower-vector-mask,lower-vector-multi-reduction,"
          "arith-expand{include-bf16=true}),"
          "convert-vector-to-scf,convert-linalg-to-loops,"
          "convert-math-to-libm,expand-strided-metadata,lower-affine,"
          "convert-scf-to-cf,convert-cf-to-llvm,convert-vector-to-llvm,"
          "convert-math-to-llvm,finalize-memref-to-llvm,convert-ub-to-llvm,"
          "convert-arith-to-llvm,"
          "convert-index-to-llvm,"
          "convert-func-to-llvm{use-bare-ptr-memref-call-conv=1},"
          "reconcile-unrealized-casts",
          pm)))
    return err("internal error: bad cpu lowering pipeline");
  if (failed(pm.run(*m)))
    return err("lowering the cpu kernels to the LLVM dialect failed");

  for (auto [name, numArgs] : entries) {
    auto impl = m->lookupSymbol<LLVM::LLVMFuncOp>(name + "_impl");
    if (!impl)
      return err("internal error: lowered kernel " + name + " not found");
    addPackedEntry(*m, impl, name, numArgs);
  }

  LLVMInitializeX86TargetInfo();
  LLVMInitializeX86Target();
  LLVMInitializeX86TargetMC();
  LLVMInitializeX86AsmPrinter();
  llvm::Triple triple("x86_64-unknown-linux-gnu");
  std::string lookupErr;
  const llvm::Target *target = TargetRegistry::lookupTarget(triple, lookupErr);
  if (!target)
    return err("x86-64 target unavailable: " + lookupErr);
  TargetOptions opts;
  // x86-64-v2 (SSE4.2): the artifact runs on any x86-64 server CPU of the
  // last decade and does not depend on the machine that compiled it.
  std::unique_ptr<TargetMachine> tm(
      target->createTargetMachine(triple, "x86-64-v2", "", opts, Reloc::PIC_,
                                  std::nullopt, CodeGenOptLevel::Aggressive));

  LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*m, llvmCtx, "colossus_kernels");
  if (!llvmModule)
    return err("translation of the cpu kernels to LLVM IR failed");
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(triple);
  auto optimize = makeOptimizingTransformer(3, 0, tm.get());
  if (Error e = optimize(llvmModule.get()))
    return std::move(e);

  SmallString<0> objBytes;
  {
    raw_svector_ostream os(objBytes);
    legacy::PassManager cg;
    if (tm->addPassesToEmitFile(cg, os, nullptr, CodeGenFileType::ObjectFile))
      return err("x86-64 target cannot emit object files");
    cg.run(*llvmModule);
  }

  // Link into a shared object with the system C compiler driver.
  SmallString<128> dir;
  if (std::error_code ec = sys::fs::createUniqueDirectory("colossus-cpu", dir))
    return err("cannot create a temporary directory: " + ec.message());
  SmallString<128> objPath(dir), soPath(dir);
  sys::path::append(objPath, "kernels.o");
  sys::path::append(soPath, "kernels.so");
  {
    std::error_code ec;
    raw_fd_ostream out(objPath, ec);
    if (ec)
      return err("cannot write " + objPath + ": " + ec.message());
    out << objBytes;
  }
  ErrorOr<std::string> cc = sys::findProgramByName("cc");
  if (!cc)
    return err("no C compiler driver 'cc' on PATH to link the cpu kernels "
               "(install gcc or clang)");
  std::string objStr = objPath.str().str(), soStr = soPath.str().str();
  SmallVector<StringRef> argv = {*cc,
                                 "-shared",
                                 "-nostartfiles",
                                 "-Wl,--build-id=none",
                                 "-Wl,-z,noexecstack",
                                 "-o",
                                 soStr,
                                 objStr,
                                 "-lm"};
  std::string errMsg;
  int rc = sys::ExecuteAndWait(*cc, argv, std::nullopt, {}, 0, 0, &errMsg);
  if (rc != 0)
    return err("linking the cpu kernels failed (" + *cc + " exit " + Twine(rc) +
               ") " + errMsg);
  ErrorOr<std::unique_ptr<MemoryBuffer>> so = MemoryBuffer::getFile(soPath);
  if (!so)
    return err("cannot read " + soPath);
  std::vector<uint8_t> bytes((*so)->getBufferStart(), (*so)->getBufferEnd());
  if (!keepTemps) {
    sys::fs::remove(objPath);
    sys::fs::remove(soPath);
    sys::fs::remove(dir);
  }
  return bytes;
}
