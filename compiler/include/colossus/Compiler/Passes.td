//===- Passes.td - Colossus compiler passes ----------------*- tablegen -*-===//
#ifndef COLOSSUS_COMPILER_PASSES_TD
#define COLOSSUS_COMPILER_PASSES_TD

include "mlir/Pass/PassBase.td"

def ColossusFuse : Pass<"colossus-fuse", "mlir::func::FuncOp"> {
  let summary = "Group colossus ops into colossus.fusion kernels";
  let description = [{
    Forms one `colossus.fusion` region per kernel:
    - `gemm`: a `linear` (or two linears feeding a `swiglu`, sharing their
      input) with its epilogue: bias, activation (`gelu`, `silu`), residual
      `add`;
    - `norm`: `rms_norm` / `layer_norm`, with a residual `add` feeding it
      (the sum is also a result);
    - `attention`: one `attention` op (QK^T, mask, softmax, PV; GQA);
    - `cache_write`: both cache writes of a layer that share positions;
    - `rope`, `embedding`, `softmax`, `elementwise`: the op with the chain of
      elementwise ops that only it feeds;
    - `loss_grad` + `loss`: a `cross_entropy` and a `cross_entropy_grad` of
      the same logits and targets become `cross_entropy_rows` (one row kernel
      for the per-row loss terms and dlogits) and `row_sum` (the loss).
    `positions` and `slice` are views: they are cloned into every group that
    reads them and never form a kernel of their own.
  }];
  let dependentDialects = ["::colossus::ColossusDialect"];
}

def ColossusKernelize : Pass<"colossus-kernelize", "mlir::ModuleOp"> {
  let summary = "Generate a loop-nest kernel for every colossus.fusion";
  let description = [{
    For every `colossus.fusion` in the module, emits a kernel on memrefs
    (scf loops, memref loads and stores, arith and math) and records its
    symbol in the fusion's `kernel` attribute. With `target=cpu` the kernels
    are `func.func`s in a nested module `@kernels` that loop over the whole
    active region; with `target=sm_90a` they are `gpu.func` kernels in a
    `gpu.module @kernels` where each thread computes one (row, column) pair.
    Every kernel takes the buffers of the fusion's inputs and results, then
    the step extents `nb`, `nt`, `pos0` (see docs/artifact-format.md).
  }];
  let options = [
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "Code generation target: cpu or sm_90a">,
    Option<"blockDim", "block-dim", "unsigned", /*default=*/"128",
           "Threads per block for sm_90a kernels">,
    Option<"hopperGemm", "hopper-gemm", "bool", /*default=*/"false",
           "sm_90a: compile bf16 GEMM groups into the TMA + wgmma kernel "
           "(experimental; the runtime cannot launch it yet)">,
    Option<"hopperAttention", "hopper-attention", "bool", /*default=*/"false",
           "sm_90a: compile bf16 attention groups (head_dim 64 or 128) into "
           "the TMA + wgmma FlashAttention-style kernel (experimental, "
           "never run on a GPU)">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect",
    "::mlir::gpu::GPUDialect", "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect", "::mlir::nvgpu::NVGPUDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::LLVM::LLVMDialect"
  ];
}

def ColossusAutodiff : Pass<"colossus-autodiff", "mlir::ModuleOp"> {
  let summary = "Build the backward graph of a loss function (reverse mode)";
  let description = [{
    For the function named by `func`, whose first result is a scalar loss
    (`tensor<f32>`), adds `@<func>_grad` with the same arguments returning the
    loss followed by the gradient of every argument carrying a
    `colossus.param` attribute, in argument order (grad results carry the
    same `colossus.param` name).

    The backward graph is built at the dialect level by each op's
    vector-Jacobian rule (docs/autodiff.md); adjoints of a value used several
    times are summed with `colossus.add`. A `func.call` is differentiated by a
    generated `@<callee>_vjp(args..., d_results...) -> d_args...` that
    recomputes the callee's forward pass from its arguments (activation
    recomputation per layer) and then runs its backward: one vjp function
    per distinct layer function, called once per layer in reverse order.
    KV-cache arguments and results (rank 3) carry no adjoint across calls.

    With `recompute=none` the calls of the loss function are inlined into
    `@<func>_grad` before the reverse sweep: the backward reads the
    activations of the forward pass (kept alive until their last use)
    instead of recomputing them, and no vjp function is built.
  }];
  let options = [
    Option<"funcName", "func", "std::string", /*default=*/"\"loss\"",
           "The loss function to differentiate">,
    Option<"recompute", "recompute", "std::string", /*default=*/"\"layer\"",
           "Activations of called layers: 'layer' (recompute each layer's "
           "forward in its vjp) or 'none' (inline the calls and keep the "
           "forward activations)">,
  ];
  let dependentDialects = ["::colossus::ColossusDialect",
                           "::mlir::func::FuncDialect"];
}

#endif // COLOSSUS_COMPILER_PASSES_TD
