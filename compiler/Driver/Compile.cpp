//===- Compile.cpp - colossus-compile driver ------------------------------===//
//
// model file -> colossus graph -> fusion -> kernels -> cpu shared object or
// sm_90a PTX/cubin -> memory plan -> FlatBuffers artifact (+ JSON report).
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/Compile.h"
#include "colossus/Compiler/ArtifactWriter.h"
#include "colossus/Compiler/Backends.h"
#include "colossus/Compiler/ImportModel.h"
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Compiler/MemoryPlan.h"
#include "colossus/Compiler/ModelConfig.h"
#include "colossus/Compiler/Passes.h"
#include "colossus/Compiler/Roofline.h"
#include "colossus/Compiler/TrainStep.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/SourceMgr.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <map>

using namespace mlir;
using namespace colossus;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory cat("colossus-compile options");

cl::opt<std::string> modelPath(cl::Positional,
                               cl::desc("<model.json | graph.mlir>"),
                               cl::Required, cl::cat(cat));
cl::opt<std::string>
    targetOpt("target",
              cl::desc("Code generation target: cpu (x86-64 shared object) or "
                       "sm_90a (NVIDIA Hopper PTX + cubin)"),
              cl::init("cpu"), cl::cat(cat));
cl::opt<std::string> stepOpt("step",
                             cl::desc("Step to compile: forward (logits, "
                                      "KV cache), or train (a grads step: "
                                      "the loss of a batch and the gradient "
                                      "of every parameter)"),
                             cl::init("forward"), cl::cat(cat));
cl::opt<int64_t> batchOpt("batch", cl::desc("Batch capacity (sequences)"),
                          cl::init(1), cl::cat(cat));
cl::opt<int64_t> seqOpt("seq",
                        cl::desc("Sequence capacity: the longest context the "
                                 "artifact serves (default: min(model max "
                                 "positions, 2048))"),
                        cl::init(0), cl::cat(cat));
cl::opt<std::string> outputOpt("o",
                               cl::desc("Output file ('-' for stdout; default "
                                        "<model name>.colossus, or stdout for "
                                        "--emit other than artifact)"),
                               cl::value_desc("file"), cl::init(""),
                               cl::cat(cat));
cl::opt<std::string>
    emitOpt("emit",
            cl::desc("What to produce: graph (imported colossus IR), fused "
                     "(after colossus-fuse), kernels (loop-level kernels), "
                     "ptx (sm_90a PTX of every kernel), artifact (default); "
                     "for a .mlir graph input: fused, kernels, ptx or "
                     "cpu-object (the kernels' shared object)"),
            cl::init("artifact"), cl::cat(cat));
cl::opt<std::string> reportOpt("report",
                               cl::desc("Write a JSON report of the kernels "
                                        "and the memory plan to this file"),
                               cl::value_desc("file.json"), cl::init(""),
                               cl::cat(cat));
cl::opt<std::string> ptxasOpt("ptxas",
                              cl::desc("ptxas to assemble sm_90a kernels with "
                                       "(default: PATH, /usr/local/cuda/bin)"),
                              cl::init(""), cl::cat(cat));
cl::opt<double> beta1Opt("adam-beta1",
                         cl::desc("--step=train: AdamW beta1 (default 0.9)"),
                         cl::init(0.9), cl::cat(cat));
cl::opt<double> beta2Opt("adam-beta2",
                         cl::desc("--step=train: AdamW beta2 (default 0.95)"),
                         cl::init(0.95), cl::cat(cat));
cl::opt<double> epsOpt("adam-eps",
                       cl::desc("--step=train: AdamW eps (default 1e-8)"),
                       cl::init(1e-8), cl::cat(cat));
cl::opt<double> weightDecayOpt(
    "weight-decay",
    cl::desc("--step=train: AdamW decoupled weight decay for parameters of "
             "rank >= 2 (default 0.1)"),
    cl::init(0.1), cl::cat(cat));
cl::opt<std::string> precisionOpt(
    "precision",
    cl::desc("Element type of parameters, activations and KV caches: f32 or "
             "bf16 (kernels compute in f32 and round on store; logits, the "
             "loss, gradients of parameters, f32 master weights and the "
             "optimizer state stay f32). Default: bf16 for sm_90a, f32 for "
             "cpu"),
    cl::init(""), cl::cat(cat));
cl::opt<std::string> recomputeOpt(
    "recompute",
    cl::desc("--step=train: activations of the layers: layer (recompute each "
             "layer's forward pass in the backward pass; default) or none "
             "(keep the forward activations for the backward pass)"),
    cl::init("layer"), cl::cat(cat));
cl::opt<bool> hopperGemmOpt(
    "hopper-gemm",
    cl::desc("sm_90a, experimental: compile bf16 GEMM groups that fit into "
             "the TMA + wgmma kernel (docs/hopper-gemm.md; checked on an "
             "H200 against the cpu and cuBLAS)"),
    cl::init(false), cl::cat(cat));
cl::opt<bool> hopperAttentionOpt(
    "hopper-attention",
    cl::desc("sm_90a, experimental: compile bf16 attention groups (head_dim "
             "64 or 128) into the TMA + wgmma FlashAttention-style kernel "
             "(docs/hopper-attention.md; checked on an H200 against the "
             "cpu and SDPA)"),
    cl::init(false), cl::cat(cat));
cl::opt<unsigned> blockDimOpt("block-dim",
                              cl::desc("Threads per block of sm_90a kernels"),
                              cl::init(128), cl::cat(cat));

int fail(const llvm::Twine &msg) {
  llvm::errs() << "colossus-compile: error: " << msg << "\n";
  return 1;
}

int writeText(llvm::function_ref<void(llvm::raw_ostream &)> fn) {
  std::string path = outputOpt.empty() ? "-" : outputOpt.getValue();
  std::string errMsg;
  auto out = openOutputFile(path, &errMsg);
  if (!out)
    return fail(errMsg);
  fn(out->os());
  out->keep();
  return 0;
}

/// Step totals of the roofline estimates, per device (rooflineDevices()).
struct RooflineTotals {
  double flops = 0, bytes = 0;
  std::vector<double> seconds = std::vector<double>(rooflineDevices().size());
};

/// The sm_90a performance estimates of one kernel for the report:
/// shared memory, theoretical occupancy at its block size, the compute pipe
/// its PTX uses and its roofline time on each device for `launches`
/// launches (the grads and update steps together in training). Adds the
/// kernel to `totals`.
void addGpuEstimates(llvm::json::Object &o, const KernelRecord &k, int launches,
                     RooflineTotals &totals) {
  // ptxas -v reports static shared memory; the launch requests the
  // artifact's shared_mem_bytes (0 for SIMT kernels) as dynamic shared
  // memory on top of it.
  unsigned staticSmem = k.gpu.sharedMemBytes;
  unsigned dynamicSmem = k.dynamicSmemBytes.value_or(0);
  o["static_shared_mem_bytes"] = staticSmem;
  o["dynamic_shared_mem_bytes"] = dynamicSmem;
  Occupancy occ =
      sm90Occupancy(k.blockDim, k.gpu.registers, staticSmem, dynamicSmem);
  o["occupancy"] = llvm::json::Object{
      {"blocks_per_sm", occ.blocksPerSM},
      {"active_warps_per_sm", occ.activeWarpsPerSM},
      {"fraction", occ.fraction},
      {"limiter", limiterName(occ.limiter)},
  };
  ComputePipe pipe = classifyPtx(k.gpu.ptx);
  o["compute_pipe"] = pipeName(pipe);
  llvm::json::Object est;
  est["launches"] = launches;
  for (auto [i, d] : llvm::enumerate(rooflineDevices())) {
    RooflineTime t =
        rooflineTime(k.flops, k.bytes, peakFlops(d, pipe), d.hbmBytesPerSecond);
    est[d.name] = llvm::json::Object{
        {"seconds_per_launch", t.seconds},
        {"seconds", t.seconds * launches},
        {"bound", t.memoryBound ? "memory" : "compute"},
    };
    totals.seconds[i] += t.seconds * launches;
  }
  o["roofline_estimate"] = std::move(est);
  totals.flops += k.flops * launches;
  totals.bytes += k.bytes * launches;
}

/// The step's roofline estimate: the sum of the kernels' estimates against
/// the floor max(FLOPs / dense BF16 tensor peak, bytes / HBM bandwidth).
llvm::json::Object rooflineStepJson(const RooflineTotals &totals,
                                    bool withUpdate) {
  llvm::json::Object r;
  r["note"] = "estimates from the kernels' FLOP and byte counts and "
              "datasheet peaks, not measurements";
  llvm::json::Array steps{"forward"};
  if (withUpdate)
    steps = llvm::json::Array{"grads", "update"};
  r["steps"] = std::move(steps);
  r["flops"] = totals.flops;
  r["bytes"] = totals.bytes;
  for (auto [i, d] : llvm::enumerate(rooflineDevices())) {
    RooflineTime floor = rooflineTime(totals.flops, totals.bytes,
                                      peakFlops(d, ComputePipe::TensorBf16),
                                      d.hbmBytesPerSecond);
    double sum = totals.seconds[i];
    r[d.name] = llvm::json::Object{
        {"peak_flops_fma_f32", d.fmaF32},
        {"peak_flops_tensor_bf16", d.tensorBf16},
        {"hbm_bytes_per_second", d.hbmBytesPerSecond},
        {"sum_of_kernel_estimates_seconds", sum},
        {"floor_seconds", floor.seconds},
        {"floor_bound", floor.memoryBound ? "memory" : "compute"},
        {"ratio", floor.seconds > 0 ? sum / floor.seconds : 0.0},
    };
  }
  return r;
}
/// Peak arena bytes of the train steps under the other --recompute mode
/// (for the report), or -1 when not computed.
int64_t otherModePeak = -1;

llvm::json::Value reportJson(const ModelConfig &c, bool gpu,
                             const std::vector<KernelRecord> &kernels,
                             const StepPlan &plan) {
  std::map<std::string, int> launchCount;
  for (const PlannedLaunch &l : plan.launches)
    launchCount[l.kernel]++;
  std::map<std::string, int> updateLaunchCount;
  for (const PlannedLaunch &l : plan.updateLaunches)
    updateLaunchCount[l.kernel]++;
  RooflineTotals roofline;
  llvm::json::Array ks;
  double totalFlops = 0, totalBytes = 0;
  for (const KernelRecord &k : kernels) {
    llvm::json::Object o;
    o["name"] = k.name;
    o["kind"] = k.kind;
    llvm::json::Array ops;
    for (const std::string &op : k.fusedOps)
      ops.push_back(op);
    o["fused_ops"] = std::move(ops);
    o["launches_per_step"] = launchCount[k.name];
    o["flops"] = k.flops;
    o["bytes"] = k.bytes;
    totalFlops += k.flops * launchCount[k.name];
    totalBytes += k.bytes * launchCount[k.name];
    if (gpu) {
      o["registers"] = k.gpu.registers;
      o["shared_mem_bytes"] = k.gpu.sharedMemBytes;
      o["spill_bytes"] = k.gpu.spillBytes;
      o["stack_bytes"] = k.gpu.stackBytes;
      o["block_dim"] = k.blockDim;
      o["ptx_bytes"] = static_cast<int64_t>(k.gpu.ptx.size());
      o["cubin_bytes"] = static_cast<int64_t>(k.gpu.cubin.size());
      addGpuEstimates(o, k, launchCount[k.name] + updateLaunchCount[k.name],
                      roofline);
    }
    ks.push_back(std::move(o));
  }
  uint64_t paramBytes = 0, stateBytes = 0;
  std::map<std::string, int64_t> arenaShapes;
  for (const PlannedBuffer &b : plan.buffers) {
    if (b.kind == BufferKind::Arena) {
      std::string key;
      for (int64_t d : b.shape)
        key += (key.empty() ? "" : "x") + std::to_string(d);
      arenaShapes[key.empty() ? "scalar" : key]++;
    }
    if (b.kind == BufferKind::Param)
      paramBytes += b.size;
    if (b.kind == BufferKind::State)
      stateBytes += b.size;
  }
  llvm::json::Object mem;
  mem["peak_bytes"] = static_cast<int64_t>(plan.arenaBytes);
  mem["arena_bytes"] = static_cast<int64_t>(plan.arenaBytes);
  mem["arena_bytes_without_reuse"] =
      static_cast<int64_t>(plan.arenaBytesWithoutReuse);
  mem["param_bytes"] = static_cast<int64_t>(paramBytes);
  mem["state_bytes"] = static_cast<int64_t>(stateBytes);
  mem["buffers"] = static_cast<int64_t>(plan.buffers.size());
  llvm::json::Object byShape;
  for (auto &[shape, n] : arenaShapes)
    byShape[shape] = n;
  mem["arena_buffers_by_shape"] = std::move(byShape);
  if (plan.grads) {
    // Both --recompute modes' peaks: the chosen one is this plan's.
    bool layer = recomputeOpt == "layer";
    mem["recompute"] = recomputeOpt.getValue();
    mem["peak_bytes_recompute_layer"] =
        layer ? static_cast<int64_t>(plan.arenaBytes) : otherModePeak;
    mem["peak_bytes_recompute_none"] =
        layer ? otherModePeak : static_cast<int64_t>(plan.arenaBytes);
  }
  llvm::json::Object r;
  r["model"] = c.name;
  r["family"] = c.family == ModelFamily::Llama ? "llama" : "gpt2";
  r["target"] = gpu ? "sm_90a" : "cpu";
  r["step"] = plan.grads ? "grads" : "forward";
  r["batch"] = batchOpt.getValue();
  r["seq"] = seqOpt.getValue();
  r["parameters"] = c.numParameters();
  r["launches_per_step"] = static_cast<int64_t>(plan.launches.size());
  r["flops_per_step"] = totalFlops;
  r["bytes_per_step"] = totalBytes;
  r["kernels"] = std::move(ks);
  if (gpu)
    r["roofline_estimate"] = rooflineStepJson(roofline, plan.hasUpdate);
  r["memory_plan"] = std::move(mem);
  return llvm::json::Value(std::move(r));
}

/// Fusion and kernel generation, the stages every input goes through.
/// Returns an exit code when the command ends here (--emit=fused|kernels, or
/// an error); otherwise sets `kernels` to the generated kernels module.
std::optional<int> fuseAndKernelize(ModuleOp module, ModuleOp &kernels) {
  PassManager pm(module.getContext());
  if (failed(applyPassManagerCLOptions(pm)))
    return fail("bad pass manager options");
  pm.addNestedPass<func::FuncOp>(createColossusFuse());
  if (emitOpt != "fused") {
    ColossusKernelizeOptions kopts;
    kopts.target = targetOpt;
    kopts.blockDim = blockDimOpt;
    kopts.hopperGemm = hopperGemmOpt;
    kopts.hopperAttention = hopperAttentionOpt;
    pm.addPass(createColossusKernelize(kopts));
  }
  if (failed(pm.run(module)))
    return fail("compilation of " + modelPath + " failed");
  if (emitOpt == "fused")
    return writeText([&](llvm::raw_ostream &os) { module.print(os); });
  for (auto m : module.getOps<ModuleOp>())
    if (m.getSymName() == "kernels")
      kernels = m;
  if (!kernels)
    return fail("no kernels were generated");
  if (emitOpt == "kernels")
    return writeText([&](llvm::raw_ostream &os) { kernels.print(os); });
  return std::nullopt;
}

/// The train module's steps: @loss_grad (colossus-autodiff with the given
/// recompute mode) and @update.
LogicalResult buildTrainSteps(ModuleOp module, StringRef recompute,
                              const OptimizerConfig &opt) {
  MLIRContext *ctx = module.getContext();
  PassManager ad(ctx);
  ColossusAutodiffOptions aopts;
  aopts.recompute = recompute.str();
  ad.addPass(createColossusAutodiff(aopts));
  if (failed(ad.run(module)))
    return failure();
  if (auto loss = module.lookupSymbol<func::FuncOp>("loss"))
    loss.erase();
  PassManager clean(ctx);
  clean.addPass(mlir::createCanonicalizerPass());
  clean.addPass(mlir::createSymbolDCEPass());
  if (failed(clean.run(module)))
    return failure();
  return buildUpdateStep(module, "loss_grad", opt);
}

/// `colossus-compile GRAPH.mlir`: the kernels of a hand-written graph (any
/// functions holding colossus ops), for compiler engineers and the op-level
/// numerics tests: --emit=fused|kernels|ptx, or --emit=cpu-object to write
/// the cpu shared object (kernels named <func>_<index>_<kind>).
int compileKernelsOnly(bool gpu) {
  static const char *emits[] = {"fused", "kernels", "ptx", "cpu-object"};
  if (!llvm::is_contained(emits, emitOpt.getValue()))
    return fail("a .mlir input takes --emit=fused, kernels, ptx or "
                "cpu-object");
  if (emitOpt == "cpu-object" && gpu)
    return fail("--emit=cpu-object needs --target=cpu");
  if (emitOpt == "ptx" && !gpu)
    return fail("--emit=ptx needs --target=sm_90a");
  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &ctx);
  OwningOpRef<ModuleOp> module =
      parseSourceFile<ModuleOp>(modelPath, sourceMgr, ParserConfig(&ctx));
  if (!module)
    return fail("cannot parse " + modelPath);
  ModuleOp kernels;
  if (std::optional<int> rc = fuseAndKernelize(*module, kernels))
    return *rc;
  if (gpu) {
    auto bins = buildGpuKernels(kernels, ptxasOpt);
    if (!bins)
      return fail(llvm::toString(bins.takeError()));
    // The SIMT kernels' launch (docs/artifact-format.md: a 1-D grid of
    // ceil(rows * cols / block_dim) blocks, rows the active tokens nb * nt
    // or fixed, no dynamic shared memory), for harnesses that run the PTX
    // without an artifact (test/ops/opcheck.py on a GPU).
    std::map<std::string, std::string> simt;
    kernels.walk([&](Operation *op) {
      if (!op->getAttrOfType<StringAttr>(kattrs::kKind))
        return;
      auto bd = op->getAttrOfType<IntegerAttr>(kattrs::kBlockDim);
      auto fr = op->getAttrOfType<IntegerAttr>(kattrs::kFixedRows);
      std::string line;
      llvm::raw_string_ostream ls(line);
      ls << "block_dim=" << (bd ? bd.getInt() : 0)
         << " cols=" << op->getAttrOfType<IntegerAttr>(kattrs::kCols).getInt()
         << " rows="
         << (fr ? std::to_string(fr.getInt()) : std::string("tokens"))
         << " num_args="
         << op->getAttrOfType<IntegerAttr>(kattrs::kNumArgs).getInt();
      simt[cast<SymbolOpInterface>(op).getName().str()] = line;
    });
    // A fusion with scratch memory (the sm_90a global_norm) takes one more
    // buffer after its results, and a second kernel runs right after it with
    // the same arguments (docs/kernels.md).
    module->walk([&](FusionOp fusion) {
      auto kernel = fusion.getKernelAttr();
      auto it = kernel ? simt.find(kernel.getValue().str()) : simt.end();
      if (it == simt.end())
        return;
      if (auto bytes =
              fusion->getAttrOfType<IntegerAttr>(kattrs::kScratchBytes))
        it->second += " scratch_bytes=" + std::to_string(bytes.getInt());
      if (auto then = fusion->getAttrOfType<StringAttr>(kattrs::kThenKernel))
        it->second += " then=" + then.getValue().str();
    });
    return writeText([&](llvm::raw_ostream &os) {
      for (auto &[name, k] : *bins) {
        os << "// ----- kernel " << name << " registers " << k.registers
           << " spill_bytes " << k.spillBytes << " -----\n";
        if (!k.abi.empty())
          os << "// " << k.abiAttr << " " << k.abi << "\n";
        else if (auto it = simt.find(name); it != simt.end())
          os << "// colossus.simt " << it->second << "\n";
        os << k.ptx << "\n";
      }
    });
  }
  auto so = buildCpuSharedObject(kernels);
  if (!so)
    return fail(llvm::toString(so.takeError()));
  if (outputOpt.empty() || outputOpt == "-")
    return fail("--emit=cpu-object needs -o FILE");
  std::string errMsg;
  auto out = openOutputFile(outputOpt, &errMsg);
  if (!out)
    return fail(errMsg);
  out->os().write(reinterpret_cast<const char *>(so->data()), so->size());
  out->keep();
  return 0;
}

} // namespace

int colossus::compileMain(int argc, char **argv) {
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  cl::HideUnrelatedOptions(cat);
  cl::ParseCommandLineOptions(
      argc, argv,
      "colossus-compile: compile a transformer model description into a "
      "Colossus artifact\n\n"
      "  colossus-compile MODEL.json --target=cpu|sm_90a --step=forward "
      "--batch B --seq S -o OUT.colossus\n\n"
      "Exit codes: 0 success, 1 compile error, 2 usage error.\n");

  bool gpu;
  if (targetOpt == "cpu")
    gpu = false;
  else if (targetOpt == "sm_90a")
    gpu = true;
  else {
    llvm::errs() << "colossus-compile: error: --target=" << targetOpt
                 << ": unknown target (expected cpu or sm_90a)\n";
    return 2;
  }
  bool train = stepOpt == "train";
  if (stepOpt != "forward" && !train) {
    llvm::errs() << "colossus-compile: error: --step=" << stepOpt
                 << ": unknown step (expected forward or train)\n";
    return 2;
  }
  static const char *emits[] = {"graph", "fused",    "kernels",
                                "ptx",   "artifact", "cpu-object"};
  if (!llvm::is_contained(emits, emitOpt.getValue())) {
    llvm::errs() << "colossus-compile: error: --emit=" << emitOpt
                 << ": expected graph, fused, kernels, ptx or artifact\n";
    return 2;
  }
  if (emitOpt == "ptx" && !gpu)
    return fail("--emit=ptx needs --target=sm_90a");
  if (batchOpt < 1) {
    llvm::errs() << "colossus-compile: error: --batch must be >= 1\n";
    return 2;
  }
  if (precisionOpt.empty())
    precisionOpt = gpu ? "bf16" : "f32";
  if (precisionOpt != "f32" && precisionOpt != "bf16") {
    llvm::errs() << "colossus-compile: error: --precision=" << precisionOpt
                 << ": expected f32 or bf16\n";
    return 2;
  }
  Precision precision =
      precisionOpt == "bf16" ? Precision::BF16 : Precision::F32;

  if (llvm::StringRef(modelPath).ends_with(".mlir"))
    return compileKernelsOnly(gpu);
  if (emitOpt == "cpu-object")
    return fail("--emit=cpu-object takes a .mlir graph input");

  llvm::Expected<ModelConfig> config = readModelConfig(modelPath);
  if (!config)
    return fail(llvm::toString(config.takeError()));
  if (seqOpt == 0)
    seqOpt = std::min<int64_t>(config->maxPositions, 2048);
  if (seqOpt < 1) {
    llvm::errs() << "colossus-compile: error: --seq must be >= 1\n";
    return 2;
  }
  if (seqOpt > config->maxPositions)
    return fail("--seq " + llvm::Twine(seqOpt.getValue()) +
                " exceeds max_position_embeddings " +
                llvm::Twine(config->maxPositions) + " of " + modelPath);

  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();

  OwningOpRef<ModuleOp> module =
      importModel(&ctx, *config, modelPath, batchOpt, seqOpt, train, precision);
  if (failed(verify(*module)))
    return fail("internal error: the imported graph does not verify");
  if (recomputeOpt != "layer" && recomputeOpt != "none") {
    llvm::errs() << "colossus-compile: error: --recompute=" << recomputeOpt
                 << ": expected layer or none\n";
    return 2;
  }
  if (train) {
    OptimizerConfig opt;
    opt.beta1 = beta1Opt;
    opt.beta2 = beta2Opt;
    opt.eps = epsOpt;
    opt.weightDecay = weightDecayOpt;
    if (!(opt.beta1 >= 0 && opt.beta1 < 1) ||
        !(opt.beta2 >= 0 && opt.beta2 < 1) || !(opt.eps > 0) ||
        !(opt.weightDecay >= 0)) {
      llvm::errs() << "colossus-compile: error: AdamW needs 0 <= beta < 1, "
                      "eps > 0 and weight decay >= 0\n";
      return 2;
    }
    // The grads step: the loss and the gradient of every parameter
    // (colossus-autodiff); the loss function alone is not kept. Then the
    // update step.
    if (failed(buildTrainSteps(*module, recomputeOpt, opt)))
      return fail("building the train steps of " + modelPath + " failed");
    if (!reportOpt.empty() && emitOpt == "artifact") {
      // The report shows the peak of the other --recompute mode too: the
      // same steps built and planned from a fresh import.
      OwningOpRef<ModuleOp> other =
          importModel(&ctx, *config, modelPath, batchOpt, seqOpt, train,
                      precision);
      PassManager pm(&ctx);
      pm.addNestedPass<func::FuncOp>(createColossusFuse());
      ColossusKernelizeOptions kopts;
      kopts.target = targetOpt;
      kopts.blockDim = blockDimOpt;
      kopts.hopperGemm = hopperGemmOpt;
      kopts.hopperAttention = hopperAttentionOpt;
      pm.addPass(createColossusKernelize(kopts));
      if (failed(buildTrainSteps(*other, recomputeOpt == "layer" ? "none"
                                                                 : "layer",
                                 opt)) ||
          failed(pm.run(*other)))
        return fail("planning the other --recompute mode of " + modelPath +
                    " failed");
      llvm::Expected<StepPlan> otherPlan = planTrainSteps(*other);
      if (!otherPlan)
        return fail(llvm::toString(otherPlan.takeError()));
      otherModePeak = static_cast<int64_t>(otherPlan->arenaBytes);
    }
  }
  if (emitOpt == "graph")
    return writeText([&](llvm::raw_ostream &os) { module->print(os); });

  ModuleOp kernels;
  if (std::optional<int> rc = fuseAndKernelize(*module, kernels))
    return *rc;

  std::vector<KernelRecord> records;
  kernels.walk([&](Operation *op) {
    auto kind = op->getAttrOfType<StringAttr>(kattrs::kKind);
    if (!kind)
      return;
    KernelRecord k;
    k.name = cast<SymbolOpInterface>(op).getName().str();
    k.kind = kind.str();
    for (Attribute a : op->getAttrOfType<ArrayAttr>(kattrs::kFusedOps))
      k.fusedOps.push_back(cast<StringAttr>(a).str());
    k.cols = op->getAttrOfType<IntegerAttr>(kattrs::kCols).getInt();
    k.numArgs = op->getAttrOfType<IntegerAttr>(kattrs::kNumArgs).getInt();
    k.flops = op->getAttrOfType<FloatAttr>(kattrs::kFlops).getValueAsDouble();
    k.bytes = op->getAttrOfType<FloatAttr>(kattrs::kBytes).getValueAsDouble();
    if (auto bd = op->getAttrOfType<IntegerAttr>(kattrs::kBlockDim))
      k.blockDim = bd.getInt();
    if (auto fr = op->getAttrOfType<IntegerAttr>(kattrs::kFixedRows))
      k.fixedRows = fr.getInt();
    records.push_back(std::move(k));
  });

  llvm::Expected<StepPlan> plan =
      train ? planTrainSteps(*module) : planStep(*module, "forward");
  if (!plan)
    return fail(llvm::toString(plan.takeError()));

  ArtifactInputs in;
  in.gpu = gpu;
  in.config = &*config;
  in.batch = batchOpt;
  in.seq = seqOpt;
  in.plan = &*plan;
  if (train)
    in.optimizer = OptimizerConfig{beta1Opt, beta2Opt, epsOpt, weightDecayOpt};
  if (gpu) {
    auto bins = buildGpuKernels(kernels, ptxasOpt);
    if (!bins)
      return fail(llvm::toString(bins.takeError()));
    for (KernelRecord &k : records) {
      auto it = bins->find(k.name);
      if (it == bins->end())
        return fail("internal error: no PTX for kernel " + k.name);
      k.gpu = std::move(it->second);
    }
    if (emitOpt == "ptx")
      return writeText([&](llvm::raw_ostream &os) {
        for (const KernelRecord &k : records) {
          os << "// ----- kernel " << k.name << " -----\n";
          if (!k.gpu.abi.empty())
            os << "// " << k.gpu.abiAttr << " " << k.gpu.abi << "\n";
          os << k.gpu.ptx << "\n";
        }
      });
    // Kernels with a launch ABI (the Hopper GEMM) get their fixed launch
    // shape and tensor-map parameters recorded for the runtime.
    for (KernelRecord &k : records)
      if (llvm::Error e = applyLaunchAbi(k))
        return fail(llvm::toString(std::move(e)));
  } else {
    auto so = buildCpuSharedObject(kernels);
    if (!so)
      return fail(llvm::toString(so.takeError()));
    in.cpuObject = std::move(*so);
  }
  in.kernels = records;
  std::vector<uint8_t> bytes = writeArtifact(in);

  if (!reportOpt.empty()) {
    std::string errMsg;
    auto out = openOutputFile(reportOpt, &errMsg);
    if (!out)
      return fail(errMsg);
    out->os() << llvm::formatv("{0:2}",
                               reportJson(*config, gpu, records, *plan))
              << "\n";
    out->keep();
  }

  std::string path = outputOpt;
  if (path.empty())
    path = config->name + ".colossus";
  std::string errMsg;
  auto out = openOutputFile(path, &errMsg);
  if (!out)
    return fail(errMsg);
  out->os().write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
  out->keep();
  return 0;
}
