//===- HopperCommon.cpp - Shared pieces of the sm_90a TMA + wgmma kernels -===//
#include "colossus/Compiler/HopperCommon.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;

namespace {
/// The dynamic shared memory symbol. The lowering of
/// gpu.dynamic_shared_memory reuses an existing zero-sized workgroup global
/// of its alignment (16 bytes); declaring it external keeps the NVPTX
/// backend from demoting it to a one-byte static variable.
constexpr const char *kSmemSymbol = "colossus_dynamic_smem";
constexpr int64_t kSmemSymbolAlign = 16;
} // namespace

void colossus::prepareHopperModule(gpu::GPUModuleOp module, OpBuilder &builder,
                                   Location loc) {
  MLIRContext *ctx = builder.getContext();
  ctx->getOrLoadDialect<nvgpu::NVGPUDialect>();
  ctx->getOrLoadDialect<NVVM::NVVMDialect>();
  ctx->getOrLoadDialect<LLVM::LLVMDialect>();
  ctx->getOrLoadDialect<vector::VectorDialect>();
  // The module's own target comes first among the lowering's objects (the
  // sm_90a backend uses the first): PTX ISA 8.3 for the tensor-map fence.
  module.setTargetsAttr(builder.getArrayAttr({NVVM::NVVMTargetAttr::get(
      ctx, /*optLevel=*/3, "nvptx64-nvidia-cuda", "sm_90a", "+ptx83")}));
  OpBuilder::InsertionGuard g(builder);
  builder.setInsertionPointToStart(module.getBody());
  auto smemTy = LLVM::LLVMArrayType::get(builder.getI8Type(), 0);
  LLVM::GlobalOp::create(builder, loc, smemTy, /*isConstant=*/false,
                         LLVM::Linkage::External, kSmemSymbol, Attribute(),
                         kSmemSymbolAlign,
                         static_cast<unsigned>(NVVM::NVVMMemorySpace::Shared));
}

gpu::GPUFuncOp
colossus::createHopperKernel(OpBuilder &builder, Location loc, StringRef name,
                             Block &body, TypeRange resultTypes,
                             llvm::function_ref<bool(unsigned)> isTensorMap,
                             int32_t threads) {
  auto ptrTy = LLVM::LLVMPointerType::get(builder.getContext());
  SmallVector<Type> argTypes;
  for (BlockArgument a : body.getArguments()) {
    if (isTensorMap(a.getArgNumber())) {
      argTypes.push_back(ptrTy);
      continue;
    }
    auto rt = cast<RankedTensorType>(a.getType());
    argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  }
  for (Type t : resultTypes) {
    auto rt = cast<RankedTensorType>(t);
    argTypes.push_back(MemRefType::get(rt.getShape(), rt.getElementType()));
  }
  Type i64 = builder.getI64Type();
  argTypes.append({i64, i64, i64});
  auto fn = gpu::GPUFuncOp::create(builder, loc, name,
                                   builder.getFunctionType(argTypes, {}));
  fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), builder.getUnitAttr());
  fn.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr({threads, 1, 1}));
  return fn;
}

void colossus::fenceTensorMap(OpBuilder &b, Location loc, Value ptr) {
  LLVM::InlineAsmOp::create(
      b, loc, TypeRange(), ValueRange{ptr},
      "fence.proxy.tensormap::generic.acquire.gpu [$0], 128;", "l",
      /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None, LLVM::AsmDialectAttr(),
      ArrayAttr());
}

nvgpu::TensorMapDescriptorType colossus::swizzled128TensorMap(MLIRContext *ctx,
                                                              MemRefType tile) {
  return nvgpu::TensorMapDescriptorType::get(
      ctx, tile, nvgpu::TensorMapSwizzleKind::SWIZZLE_128B,
      nvgpu::TensorMapL2PromoKind::L2PROMO_256B,
      nvgpu::TensorMapOOBKind::OOB_ZERO,
      nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
}

Value colossus::wgmmaDescriptor128B(OpBuilder &b, Location loc, Value addr,
                                    int64_t lbo, int64_t sbo) {
  auto c = [&](int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  };
  const int64_t hi = (int64_t(1) << 62) | (((sbo >> 4) & 0x3FFF) << 32) |
                     (((lbo >> 4) & 0x3FFF) << 16);
  Value start = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, addr, c(4)), c(0x3FFF));
  return arith::OrIOp::create(b, loc, start, c(hi));
}
