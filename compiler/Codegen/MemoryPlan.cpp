//===- MemoryPlan.cpp - Step program and static memory plan ---------------===//
#include "colossus/Compiler/MemoryPlan.h"
#include "colossus/Compiler/ImportModel.h"
#include "colossus/Compiler/KernelEmitter.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"

#include <map>
#include <set>

using namespace mlir;
using namespace colossus;
using llvm::Error;
using llvm::Expected;

namespace {

Error err(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

class Planner {
public:
  explicit Planner(ModuleOp m) : module(m) {}
  Expected<StepPlan> run(StringRef stepName);

private:
  unsigned addBuffer(PlannedBuffer b) {
    plan.buffers.push_back(std::move(b));
    return plan.buffers.size() - 1;
  }
  static PlannedBuffer bufferFor(Type t, std::string name, BufferKind kind) {
    auto rt = cast<RankedTensorType>(t);
    PlannedBuffer b;
    b.name = std::move(name);
    b.kind = kind;
    Type e = rt.getElementType();
    b.dtype = e.isInteger(32) ? PlannedBuffer::DType::I32
              : e.isBF16()    ? PlannedBuffer::DType::BF16
              : e.isF16()     ? PlannedBuffer::DType::F16
                              : PlannedBuffer::DType::F32;
    b.shape.assign(rt.getShape().begin(), rt.getShape().end());
    uint64_t n = e.getIntOrFloatBitWidth() / 8;
    for (int64_t d : rt.getShape())
      n *= static_cast<uint64_t>(d);
    b.size = n;
    return b;
  }
  Error walkBody(Block &body, llvm::DenseMap<Value, unsigned> &env,
                 const std::string &scope, bool isStep);
  Error bindOutputs(func::ReturnOp ret, llvm::DenseMap<Value, unsigned> &env);
  static Value inPlaceLogits(FusionOp fusion, unsigned i);
  func::FuncOp step;
  int launchCount = 0;
  bool updating = false;
  /// The update step's parameter buffers by name.
  std::map<std::string, unsigned> paramByName;
  std::vector<PlannedLaunch> *launchOut = &plan.launches;

public:
  Expected<StepPlan> runTrain();
  Expected<StepPlan> pack();

private:
  Error planUpdate();

  ModuleOp module;
  StepPlan plan;
  unsigned callCount = 0;
};

/// The logits operand of the fusion when its result `i` is the dlogits of a
/// cross_entropy_rows that may overwrite them: an activation read by this
/// fusion only.
Value Planner::inPlaceLogits(FusionOp fusion, unsigned i) {
  auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
  Value y = yield.getValues()[i];
  auto rows = y.getDefiningOp<CrossEntropyRowsOp>();
  if (!rows || y != rows.getDlogits())
    return Value();
  auto arg = dyn_cast<BlockArgument>(rows.getLogits());
  if (!arg)
    return Value();
  Value logits = fusion.getInputs()[arg.getArgNumber()];
  if (!logits.hasOneUse())
    return Value();
  auto fused = logits.getDefiningOp<FusionOp>();
  if (!fused)
    return Value();
  return logits;
}

Error Planner::walkBody(Block &body, llvm::DenseMap<Value, unsigned> &env,
                        const std::string &scope, bool isStep) {
  for (Operation &op : body) {
    if (auto fusion = dyn_cast<FusionOp>(op)) {
      auto kernel = fusion.getKernelAttr();
      if (!kernel)
        return err("internal error: a colossus.fusion has no kernel");
      PlannedLaunch launch;
      launch.kernel = kernel.getValue().str();
      int index = launchCount++;
      for (Value in : fusion.getInputs()) {
        auto it = env.find(in);
        if (it == env.end())
          return err("internal error: an input of " + launch.kernel +
                     " has no buffer");
        launch.args.push_back(it->second);
        plan.buffers[it->second].lastUse = index;
      }
      auto yield = cast<YieldOp>(fusion.getBody().front().getTerminator());
      for (auto [i, res] : llvm::enumerate(fusion.getResults())) {
        unsigned buf;
        if (auto cv = yield.getValues()[i].getDefiningOp<ConvertOp>();
            cv && updating) {
          // Mixed precision: the new master weights rounded to the bf16
          // parameter overwrite the parameter buffer of the same name.
          Value master = cv.getX();
          if (auto a = master.getDefiningOp<AdamwOp>())
            master = a.getParam();
          auto arg = dyn_cast<BlockArgument>(master);
          unsigned mb = arg ? launch.args[arg.getArgNumber()] : ~0u;
          if (mb == ~0u || plan.buffers[mb].kind != BufferKind::Master ||
              !paramByName.count(plan.buffers[mb].name))
            return err("internal error: a conversion in the update step is "
                       "not of an updated master weight");
          buf = paramByName[plan.buffers[mb].name];
        } else if (auto adamw =
                       yield.getValues()[i].getDefiningOp<AdamwOp>()) {
          // In place: the new parameter and moments overwrite the old ones.
          Value operand = adamw->getOperand(
              cast<OpResult>(yield.getValues()[i]).getResultNumber() == 0
                  ? 0
                  : cast<OpResult>(yield.getValues()[i]).getResultNumber() + 1);
          auto arg = dyn_cast<BlockArgument>(operand);
          if (!arg)
            return err("internal error: adamw on a computed parameter");
          buf = launch.args[arg.getArgNumber()];
        } else if (auto cw =
                       yield.getValues()[i].getDefiningOp<CacheWriteOp>()) {
          // In place: the updated cache is the cache buffer.
          auto arg = dyn_cast<BlockArgument>(cw.getCache());
          if (!arg)
            return err("internal error: cache_write on a computed cache");
          buf = launch.args[arg.getArgNumber()];
        } else if (Value logits = inPlaceLogits(fusion, i);
                   logits &&
                   plan.buffers[env.lookup(logits)].kind == BufferKind::Arena) {
          // In place: dlogits overwrite the logits that nothing else reads
          // (the kernel reads each element before writing it), so the step
          // holds one vocabulary-sized buffer.
          buf = env.lookup(logits);
        } else {
          buf = addBuffer(bufferFor(
              res.getType(), scope + launch.kernel + ".out" + std::to_string(i),
              BufferKind::Arena));
          plan.buffers[buf].defLaunch = index;
          plan.buffers[buf].lastUse = index;
        }
        launch.args.push_back(buf);
        env[res] = buf;
      }
      // A kernel that needs scratch memory (the sm_90a global_norm's
      // partial sums) gets an arena buffer of its own after the results; a
      // second kernel of the fusion runs right after with the same
      // arguments (docs/kernels.md).
      auto then = fusion->getAttrOfType<StringAttr>(kattrs::kThenKernel);
      if (auto bytes =
              fusion->getAttrOfType<IntegerAttr>(kattrs::kScratchBytes)) {
        PlannedBuffer s;
        s.name = scope + launch.kernel + ".scratch";
        s.kind = BufferKind::Arena;
        s.dtype = PlannedBuffer::DType::F32;
        s.size = static_cast<uint64_t>(bytes.getInt());
        s.shape = {bytes.getInt() / 4};
        s.defLaunch = index;
        s.lastUse = index;
        launch.args.push_back(addBuffer(std::move(s)));
      }
      if (then) {
        int second = launchCount++;
        for (unsigned a : launch.args)
          plan.buffers[a].lastUse = std::max(plan.buffers[a].lastUse, second);
        PlannedLaunch next;
        next.kernel = then.getValue().str();
        next.args = launch.args;
        launchOut->push_back(std::move(launch));
        launchOut->push_back(std::move(next));
        continue;
      }
      launchOut->push_back(std::move(launch));
      continue;
    }
    if (auto call = dyn_cast<func::CallOp>(op)) {
      auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
      if (!callee || callee.isExternal())
        return err("call to unknown function " + call.getCallee());
      llvm::DenseMap<Value, unsigned> inner;
      for (auto [arg, operand] :
           llvm::zip(callee.getArguments(), call.getOperands())) {
        auto it = env.find(operand);
        if (it == env.end())
          return err("internal error: an operand of the call to " +
                     call.getCallee() + " has no buffer");
        inner[arg] = it->second;
      }
      std::string innerScope = "call" + std::to_string(callCount++) + "/";
      if (Error e = walkBody(callee.getBody().front(), inner, innerScope,
                             /*isStep=*/false))
        return e;
      auto ret = cast<func::ReturnOp>(callee.getBody().front().getTerminator());
      for (auto [res, operand] :
           llvm::zip(call.getResults(), ret.getOperands())) {
        auto it = inner.find(operand);
        if (it == inner.end())
          return err("internal error: a result of " + call.getCallee() +
                     " has no buffer");
        env[res] = it->second;
      }
      continue;
    }
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      // Values returned by a layer stay alive until their users in the
      // caller; liveness is extended there. The step's own results become
      // its output buffers.
      if (isStep)
        if (Error e = bindOutputs(ret, env))
          return e;
      continue;
    }
    return err("cannot plan op '" + op.getName().getStringRef() +
               "' outside a fusion (run colossus-fuse first)");
  }
  return Error::success();
}

Error Planner::bindOutputs(func::ReturnOp ret,
                           llvm::DenseMap<Value, unsigned> &env) {
  std::set<unsigned> seen;
  for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
    auto it = env.find(v);
    if (it == env.end())
      return err("internal error: a result of the step has no buffer");
    PlannedBuffer &b = plan.buffers[it->second];
    if ((!plan.grads || updating) && i > 0)
      continue; // the updated KV caches / parameters are their own buffers
    if (updating) {
      if (b.kind != BufferKind::Arena)
        return err("internal error: the gradient norm has no buffer");
      b.kind = BufferKind::Output;
      b.name = "grad_norm";
      plan.gradNorm = it->second;
      continue;
    }
    if (b.kind != BufferKind::Arena || !seen.insert(it->second).second)
      return err("internal error: step result " + llvm::Twine(i) +
                 " is not a buffer of its own");
    b.kind = BufferKind::Output;
    if (i == 0) {
      b.name = plan.grads ? "loss" : "logits";
      (plan.grads ? plan.loss : plan.logits) = it->second;
      continue;
    }
    auto name = step.getResultAttrOfType<StringAttr>(i, attrs::kParam);
    if (!name)
      return err("result " + llvm::Twine(i) + " of @" + step.getSymName() +
                 " names no parameter");
    b.name = "grad:" + name.str();
    plan.gradOutputs.push_back({name.str(), it->second});
  }
  return Error::success();
}

Expected<StepPlan> Planner::run(StringRef stepName) {
  step = module.lookupSymbol<func::FuncOp>(stepName);
  if (!step)
    return err("the module has no @" + stepName + " step function");
  plan.grads = stepName != "forward";
  llvm::DenseMap<Value, unsigned> env;
  for (BlockArgument arg : step.getArguments()) {
    DictionaryAttr attrs = step.getArgAttrDict(arg.getArgNumber());
    auto str = [&](const char *name) -> std::string {
      if (!attrs)
        return "";
      if (auto s = attrs.getAs<StringAttr>(name))
        return s.str();
      return "";
    };
    PlannedBuffer b;
    if (std::string p = str(attrs::kParam); !p.empty()) {
      b = bufferFor(arg.getType(), p, BufferKind::Param);
      b.init = str(attrs::kInit);
    } else if (std::string s = str(attrs::kState); !s.empty()) {
      b = bufferFor(arg.getType(), s, BufferKind::State);
    } else if (std::string in = str(attrs::kInput); !in.empty()) {
      b = bufferFor(arg.getType(), in, BufferKind::Input);
    } else {
      return err("argument " + llvm::Twine(arg.getArgNumber()) +
                 " of @forward is neither a parameter, a state nor an input");
    }
    unsigned id = addBuffer(std::move(b));
    env[arg] = id;
    if (plan.buffers[id].kind == BufferKind::Input)
      (plan.buffers[id].name == "targets" ? plan.targets : plan.tokens) = id;
  }
  if (Error e = walkBody(step.getBody().front(), env, "", /*isStep=*/true))
    return std::move(e);

  return pack();
}

Expected<StepPlan> Planner::pack() {
  plan.arenaBytes = 0;
  plan.arenaBytesWithoutReuse = 0;
  // First-fit packing of arena buffers by live interval. Offsets are
  // 256-byte aligned (the arena itself is a 256-byte aligned device
  // allocation): the sm_90a kernels access every buffer by 16-byte vectors
  // and need at least 16 (docs/kernels.md).
  const uint64_t align = 256;
  static_assert(align % 16 == 0, "sm_90a kernels need 16-byte alignment");
  struct Placed {
    uint64_t offset, end;
    int first, last;
  };
  std::vector<Placed> placed;
  for (PlannedBuffer &b : plan.buffers) {
    if (b.kind != BufferKind::Arena)
      continue;
    uint64_t size = (b.size + align - 1) / align * align;
    plan.arenaBytesWithoutReuse += size;
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (const Placed &p : placed)
      if (!(p.last < b.defLaunch || b.lastUse < p.first))
        busy.push_back({p.offset, p.end});
    llvm::sort(busy);
    uint64_t offset = 0;
    for (auto [s, e] : busy) {
      if (offset + size <= s)
        break;
      offset = std::max(offset, e);
    }
    b.offset = offset;
    placed.push_back({offset, offset + size, b.defLaunch, b.lastUse});
    plan.arenaBytes = std::max(plan.arenaBytes, offset + size);
  }
  return std::move(plan);
}

} // namespace

Error Planner::planUpdate() {
  auto upd = module.lookupSymbol<func::FuncOp>("update");
  if (!upd)
    return err("the module has no @update step function");
  std::map<std::string, unsigned> params, grads;
  for (auto [i, b] : llvm::enumerate(plan.buffers))
    if (b.kind == BufferKind::Param)
      params[b.name] = i;
  for (auto &[name, buf] : plan.gradOutputs)
    grads[name] = buf;
  llvm::DenseMap<Value, unsigned> env;
  for (BlockArgument arg : upd.getArguments()) {
    DictionaryAttr attrs = upd.getArgAttrDict(arg.getArgNumber());
    auto str = [&](const char *name) -> std::string {
      if (auto s = attrs ? attrs.getAs<StringAttr>(name) : StringAttr())
        return s.str();
      return "";
    };
    if (std::string p = str(attrs::kParam); !p.empty()) {
      if (!params.count(p))
        return err("@update: unknown parameter " + p);
      env[arg] = params[p];
    } else if (std::string g = str("colossus.grad"); !g.empty()) {
      if (!grads.count(g))
        return err("@update: no gradient of " + g);
      env[arg] = grads[g];
    } else if (std::string o = str("colossus.opt_state"); !o.empty()) {
      env[arg] = addBuffer(bufferFor(arg.getType(), o, BufferKind::OptState));
    } else if (std::string mw = str(attrs::kMaster); !mw.empty()) {
      if (!params.count(mw))
        return err("@update: master weights of unknown parameter " + mw);
      PlannedBuffer b = bufferFor(arg.getType(), mw, BufferKind::Master);
      b.init = str(attrs::kInit);
      env[arg] = addBuffer(std::move(b));
    } else if (str(attrs::kInput) == "hyper") {
      env[arg] = plan.hyper =
          addBuffer(bufferFor(arg.getType(), "hyper", BufferKind::Input));
    } else {
      return err("@update: argument " + llvm::Twine(arg.getArgNumber()) +
                 " is not a parameter, gradient, optimizer state or hyper");
    }
  }
  paramByName = params;
  step = upd;
  updating = true;
  launchOut = &plan.updateLaunches;
  plan.hasUpdate = true;
  return walkBody(upd.getBody().front(), env, "update/", /*isStep=*/true);
}

Expected<StepPlan> Planner::runTrain() {
  Expected<StepPlan> grads = run("loss_grad");
  if (!grads)
    return grads.takeError();
  plan = std::move(*grads);
  if (Error e = planUpdate())
    return std::move(e);
  return pack();
}

Expected<StepPlan> colossus::planTrainSteps(ModuleOp module) {
  Planner p(module);
  return p.runTrain();
}

Expected<StepPlan> colossus::planStep(ModuleOp module, StringRef stepName) {
  Planner p(module);
  return p.run(stepName);
}
