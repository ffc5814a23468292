//===- Autodiff.cpp - Reverse-mode differentiation of colossus graphs -----===//
//
// The backward graph is built at the dialect level: every op has a
// vector-Jacobian rule that emits dialect ops (most of them the *_grad ops),
// so the backward pass is fused and compiled like the forward one.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"

namespace colossus {
#define GEN_PASS_DEF_COLOSSUSAUTODIFF
#include "colossus/Compiler/Passes.h.inc"
} // namespace colossus

using namespace mlir;
using namespace colossus;

namespace {

constexpr const char *kParamAttr = "colossus.param";

/// Values that carry an adjoint: float tensors.
bool isDifferentiable(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && isa<FloatType>(t.getElementType());
}

/// Adjoints crossing a call boundary: float vectors and matrices (and the
/// scalar loss); rank-3 KV caches are per-step state.
bool crossesCalls(Value v) {
  return isDifferentiable(v) &&
         cast<RankedTensorType>(v.getType()).getRank() <= 2;
}

class Differentiator {
public:
  Differentiator(ModuleOp module, bool inlineCalls)
      : module(module), table(module), inlineCalls(inlineCalls) {}

  /// Builds `@<fn>_grad` (top level) or `@<fn>_vjp` (callee).
  FailureOr<func::FuncOp> buildGrad(func::FuncOp fn);
  FailureOr<func::FuncOp> getOrBuildVjp(func::FuncOp callee);

private:
  /// Runs the reverse sweep over `ops` (already cloned into the new
  /// function) given the adjoints of some values in `adj`.
  LogicalResult reverse(OpBuilder &b, ArrayRef<Operation *> ops,
                        llvm::DenseMap<Value, Value> &adj);
  LogicalResult vjp(OpBuilder &b, Operation *op,
                    llvm::DenseMap<Value, Value> &adj);
  LogicalResult accumulate(OpBuilder &b, Location loc, Value v, Value g,
                           llvm::DenseMap<Value, Value> &adj);

  /// Clones `body`'s ops (not its terminator) at `b` under `map`; with
  /// inlineCalls, a call is replaced by the callee's ops, recursively, and
  /// its results mapped to the callee's returned values.
  LogicalResult cloneForward(OpBuilder &b, Block &body, IRMapping &map,
                             SmallVectorImpl<Operation *> &fwd);

  ModuleOp module;
  SymbolTable table;
  bool inlineCalls;
  llvm::DenseMap<Operation *, func::FuncOp> vjps;
};

LogicalResult Differentiator::cloneForward(OpBuilder &b, Block &body,
                                           IRMapping &map,
                                           SmallVectorImpl<Operation *> &fwd) {
  for (Operation &op : body.without_terminator()) {
    auto call = dyn_cast<func::CallOp>(op);
    if (!inlineCalls || !call) {
      fwd.push_back(b.clone(op, map));
      continue;
    }
    auto callee = table.lookup<func::FuncOp>(call.getCallee());
    if (!callee || callee.isExternal())
      return call.emitOpError("calls an unknown function");
    if (!callee.getBody().hasOneBlock())
      return callee.emitOpError("not supported yet: differentiating a "
                                "function with control flow");
    Block &inner = callee.getBody().front();
    IRMapping innerMap;
    for (auto [arg, operand] :
         llvm::zip(inner.getArguments(), call.getOperands()))
      innerMap.map(arg, map.lookupOrDefault(operand));
    if (failed(cloneForward(b, inner, innerMap, fwd)))
      return failure();
    auto ret = cast<func::ReturnOp>(inner.getTerminator());
    for (auto [res, v] : llvm::zip(call.getResults(), ret.getOperands()))
      map.map(res, innerMap.lookupOrDefault(v));
  }
  return success();
}

LogicalResult Differentiator::accumulate(OpBuilder &b, Location loc, Value v,
                                         Value g,
                                         llvm::DenseMap<Value, Value> &adj) {
  if (!g || !isDifferentiable(v))
    return success();
  auto it = adj.find(v);
  if (it == adj.end()) {
    adj[v] = g;
    return success();
  }
  if (cast<RankedTensorType>(v.getType()).getRank() != 2)
    return emitError(loc) << "not supported yet: summing adjoints of a rank-"
                          << cast<RankedTensorType>(v.getType()).getRank()
                          << " value used more than once";
  // A tied embedding: the table's scatter gradient (the last adjoint, from
  // the embedding at the start of the forward) adds the adjoint so far (the
  // lm head's dW) itself, so no elementwise kernel sums the two
  // [vocab, D] gradients. The same sum, addend + scatter.
  if (auto eg = g.getDefiningOp<EmbeddingGradOp>();
      eg && !eg.getAddend() && g.use_empty() &&
      it->second.getType() == g.getType()) {
    eg.getAddendMutable().assign(it->second);
    it->second = g;
    return success();
  }
  it->second = b.create<AddOp>(loc, it->second, g);
  return success();
}

LogicalResult Differentiator::vjp(OpBuilder &b, Operation *op,
                                  llvm::DenseMap<Value, Value> &adj) {
  Location loc = op->getLoc();
  auto g = [&](unsigned i = 0) { return adj.lookup(op->getResult(i)); };
  auto acc = [&](Value v, Value grad) {
    return accumulate(b, loc, v, grad, adj);
  };

  if (auto o = dyn_cast<AddOp>(op)) {
    if (failed(acc(o.getLhs(), g())))
      return failure();
    return acc(o.getRhs(), g());
  }
  if (auto o = dyn_cast<MulOp>(op)) {
    if (failed(acc(o.getLhs(), b.create<MulOp>(loc, g(), o.getRhs()))))
      return failure();
    return acc(o.getRhs(), b.create<MulOp>(loc, g(), o.getLhs()));
  }
  if (auto o = dyn_cast<ConvertOp>(op)) {
    // The gradient is rounded to x's type. For the f32 logits of a bf16
    // model this is the bf16 dlogits of PyTorch's autocast: the loss and its
    // softmax stay f32, the stored gradient is bf16, so the output
    // projection's two backward GEMMs read bf16 operands (colossus-fuse
    // stores the rounded gradient from the loss kernel; docs/training.md).
    return acc(o.getX(), b.create<ConvertOp>(loc, g(),
                                             TypeAttr::get(getElementTypeOrSelf(
                                                 o.getX().getType()))));
  }
  if (auto o = dyn_cast<SiluOp>(op))
    return acc(o.getX(), b.create<SiluGradOp>(loc, o.getX(), g()));
  if (auto o = dyn_cast<GeluOp>(op))
    return acc(o.getX(), b.create<GeluGradOp>(loc, o.getX(), g(),
                                              o.getApproximateAttr()));
  if (auto o = dyn_cast<SwigluOp>(op)) {
    auto sg = b.create<SwigluGradOp>(loc, o.getLhs(), o.getRhs(), g());
    if (failed(acc(o.getLhs(), sg.getDgate())))
      return failure();
    return acc(o.getRhs(), sg.getDup());
  }
  if (auto o = dyn_cast<SoftmaxOp>(op))
    return acc(o.getX(), b.create<SoftmaxGradOp>(loc, o.getResult(), g()));
  if (auto o = dyn_cast<LinearOp>(op)) {
    bool tw = o.getTransposeW();
    // y = x W^T: dx = dy W, dW = dy^T x (and transposed for y = x W).
    Value dx = b.create<LinearOp>(loc, g(), o.getWeight(), Value(),
                                  b.getBoolAttr(!tw));
    if (failed(acc(o.getX(), dx)))
      return failure();
    Value dw =
        b.create<LinearWeightGradOp>(loc, o.getX(), g(), b.getBoolAttr(tw));
    if (failed(acc(o.getWeight(), dw)))
      return failure();
    if (o.getBias())
      return acc(o.getBias(), b.create<ColumnSumOp>(loc, g()));
    return success();
  }
  if (auto o = dyn_cast<RmsNormOp>(op)) {
    auto ng = b.create<RmsNormGradOp>(loc, o.getX(), o.getWeight(), g(),
                                      o.getEpsAttr());
    if (failed(acc(o.getX(), ng.getDx())))
      return failure();
    return acc(o.getWeight(), ng.getDweight());
  }
  if (auto o = dyn_cast<LayerNormOp>(op)) {
    auto ng = b.create<LayerNormGradOp>(loc, o.getX(), o.getWeight(), g(),
                                        o.getEpsAttr());
    if (failed(acc(o.getX(), ng.getDx())) ||
        failed(acc(o.getWeight(), ng.getDweight())))
      return failure();
    return acc(o.getBias(), ng.getDbias());
  }
  if (auto o = dyn_cast<RopeOp>(op)) {
    // A rotation's transpose is the rotation by the negated angle.
    auto r = cast<RopeOp>(b.clone(*op));
    r->setOperand(0, g());
    r.setInverse(!o.getInverse());
    return acc(o.getX(), r.getResult());
  }
  if (auto o = dyn_cast<SliceOp>(op)) {
    int64_t total = cast<RankedTensorType>(o.getX().getType()).getDimSize(1);
    return acc(o.getX(),
               b.create<PadColumnsOp>(loc, g(), o.getOffset(), total));
  }
  if (auto o = dyn_cast<EmbeddingOp>(op)) {
    int64_t vocab =
        cast<RankedTensorType>(o.getTable().getType()).getDimSize(0);
    return acc(o.getTable(),
               b.create<EmbeddingGradOp>(loc, o.getIds(), g(), Value(), vocab));
  }
  if (auto o = dyn_cast<CacheWriteOp>(op)) {
    // The cache's adjoint is f32 (attention_grad's dk, dv); the rows read
    // back take x's type.
    Value rows = b.create<CacheReadOp>(loc, g(), o.getPositions());
    Type e = getElementTypeOrSelf(o.getX().getType());
    if (getElementTypeOrSelf(rows.getType()) != e)
      rows = b.create<ConvertOp>(loc, rows, TypeAttr::get(e));
    return acc(o.getX(), rows);
  }
  if (auto o = dyn_cast<AttentionOp>(op)) {
    // FlashAttention-2: the (cloned or recomputed) forward attention also
    // produces its per-(row, head) log-sum-exp, which the backward reads
    // with the forward output instead of recomputing the softmax statistics.
    Value dout = g();
    if (!o.getSaveLse()) {
      OpBuilder fb(o);
      auto withLse = fb.create<AttentionOp>(
          loc, o.getQ(), o.getK(), o.getV(), o.getPositions(),
          o.getNumHeadsAttr(), o.getNumKvHeadsAttr(), o.getHeadDimAttr(),
          o.getScaleAttr(), o.getCausalAttr(), o.getSlidingWindowAttr(),
          fb.getUnitAttr());
      o.getResult().replaceAllUsesWith(withLse.getResult());
      // The adjoint map must not keep a key to the erased result.
      adj.erase(o.getResult());
      adj[withLse.getResult()] = dout;
      o.erase();
      o = withLse;
    }
    auto ag = b.create<AttentionGradOp>(
        loc, o.getQ(), o.getK(), o.getV(), o.getPositions(), dout,
        o.getResult(), o.getLse(), o.getNumHeadsAttr(), o.getNumKvHeadsAttr(),
        o.getHeadDimAttr(), o.getScaleAttr(), o.getCausalAttr(),
        o.getSlidingWindowAttr());
    // The gradients are f32. dq takes q's type (bf16 in a bf16 model); the
    // caches' adjoints stay f32 up to the cache_write rule, which converts
    // the rows it reads back.
    Value dq = ag.getDq();
    Type qe = getElementTypeOrSelf(o.getQ().getType());
    if (getElementTypeOrSelf(dq.getType()) != qe)
      dq = b.create<ConvertOp>(loc, dq, TypeAttr::get(qe));
    if (failed(acc(o.getQ(), dq)) || failed(acc(o.getK(), ag.getDk())))
      return failure();
    return acc(o.getV(), ag.getDv());
  }
  if (auto o = dyn_cast<CrossEntropyOp>(op))
    return acc(o.getLogits(),
               b.create<CrossEntropyGradOp>(loc, o.getLogits(), o.getTargets(),
                                            g(), o.getIgnoreIndexAttr()));
  if (auto call = dyn_cast<func::CallOp>(op)) {
    auto callee = table.lookup<func::FuncOp>(call.getCallee());
    if (!callee)
      return call.emitOpError("calls an unknown function");
    FailureOr<func::FuncOp> vjpFn = getOrBuildVjp(callee);
    if (failed(vjpFn))
      return failure();
    SmallVector<Value> operands(call.getOperands());
    for (Value r : call.getResults()) {
      if (!crossesCalls(r))
        continue;
      Value gr = adj.lookup(r);
      if (!gr)
        return call.emitOpError("not supported yet: a differentiable result "
                                "without an adjoint");
      operands.push_back(gr);
    }
    auto vcall = b.create<func::CallOp>(loc, *vjpFn, operands);
    unsigned k = 0;
    for (Value a : call.getOperands()) {
      if (!crossesCalls(a))
        continue;
      if (failed(acc(a, vcall.getResult(k++))))
        return failure();
    }
    return success();
  }
  if (isa<PositionsOp>(op))
    return success();
  return op->emitOpError("has no vector-Jacobian rule yet");
}

LogicalResult Differentiator::reverse(OpBuilder &b, ArrayRef<Operation *> ops,
                                      llvm::DenseMap<Value, Value> &adj) {
  for (Operation *op : llvm::reverse(ops)) {
    if (llvm::none_of(op->getResults(), [&](Value r) { return adj.count(r); }))
      continue;
    if (failed(vjp(b, op, adj)))
      return failure();
  }
  return success();
}

FailureOr<func::FuncOp> Differentiator::getOrBuildVjp(func::FuncOp callee) {
  if (auto it = vjps.find(callee); it != vjps.end())
    return it->second;
  if (!callee.getBody().hasOneBlock())
    return callee.emitOpError("not supported yet: differentiating a function "
                              "with control flow");
  FunctionType ft = callee.getFunctionType();
  SmallVector<Type> args(ft.getInputs());
  for (Type t : ft.getResults())
    if (auto rt = dyn_cast<RankedTensorType>(t);
        rt && isa<FloatType>(rt.getElementType()) && rt.getRank() <= 2)
      args.push_back(t);
  SmallVector<Type> results;
  for (Type t : ft.getInputs())
    if (auto rt = dyn_cast<RankedTensorType>(t);
        rt && isa<FloatType>(rt.getElementType()) && rt.getRank() <= 2)
      results.push_back(t);

  OpBuilder b(module.getContext());
  b.setInsertionPointAfter(callee);
  auto fn = b.create<func::FuncOp>(callee.getLoc(),
                                   (callee.getSymName() + "_vjp").str(),
                                   b.getFunctionType(args, results));
  fn.setPrivate();
  table.insert(fn);
  vjps[callee] = fn;
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);

  // Recompute the forward pass from the arguments.
  IRMapping map;
  Block &body = callee.getBody().front();
  for (auto [from, to] : llvm::zip(body.getArguments(), entry->getArguments()))
    map.map(from, to);
  SmallVector<Operation *> fwd;
  for (Operation &op : body.without_terminator())
    fwd.push_back(b.clone(op, map));

  llvm::DenseMap<Value, Value> adj;
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  unsigned seed = ft.getNumInputs();
  for (Value r : ret.getOperands()) {
    if (!crossesCalls(r))
      continue;
    if (failed(accumulate(b, fn.getLoc(), map.lookup(r),
                          entry->getArgument(seed++), adj)))
      return failure();
  }
  if (failed(reverse(b, fwd, adj)))
    return failure();
  SmallVector<Value> grads;
  for (BlockArgument a : entry->getArguments().take_front(ft.getNumInputs())) {
    if (!crossesCalls(a))
      continue;
    Value gv = adj.lookup(a);
    if (!gv)
      return callee.emitOpError("not supported yet: argument ")
             << a.getArgNumber() << " does not reach the results";
    grads.push_back(gv);
  }
  b.create<func::ReturnOp>(fn.getLoc(), grads);
  // The gradients' types: a parameter's is f32 even when the parameter is
  // bf16 (its gradient is a sum over the rows, kept in f32).
  fn.setFunctionType(b.getFunctionType(args, ValueRange(grads).getTypes()));
  return fn;
}

FailureOr<func::FuncOp> Differentiator::buildGrad(func::FuncOp fn) {
  FunctionType ft = fn.getFunctionType();
  if (ft.getNumResults() < 1)
    return fn.emitOpError("must return the loss first");
  auto lossTy = dyn_cast<RankedTensorType>(ft.getResult(0));
  if (!lossTy || lossTy.getRank() != 0 || !lossTy.getElementType().isF32())
    return fn.emitOpError("must return the loss as tensor<f32> first, got ")
           << ft.getResult(0);
  if (!fn.getBody().hasOneBlock())
    return fn.emitOpError("not supported yet: control flow");

  SmallVector<unsigned> params;
  for (unsigned i = 0; i < ft.getNumInputs(); ++i)
    if (fn.getArgAttr(i, kParamAttr))
      params.push_back(i);
  if (params.empty())
    return fn.emitOpError("has no argument with a 'colossus.param' attribute");
  SmallVector<Type> results = {lossTy};
  for (unsigned i : params)
    results.push_back(ft.getInput(i));

  OpBuilder b(module.getContext());
  b.setInsertionPointAfter(fn);
  auto grad =
      b.create<func::FuncOp>(fn.getLoc(), (fn.getSymName() + "_grad").str(),
                             b.getFunctionType(ft.getInputs(), results));
  table.insert(grad);
  for (unsigned i = 0; i < ft.getNumInputs(); ++i)
    grad.setArgAttrs(i, fn.getArgAttrDict(i));
  for (auto [k, i] : llvm::enumerate(params))
    grad.setResultAttr(k + 1, kParamAttr, fn.getArgAttr(i, kParamAttr));
  Block *entry = grad.addEntryBlock();
  b.setInsertionPointToStart(entry);

  IRMapping map;
  Block &body = fn.getBody().front();
  for (auto [from, to] : llvm::zip(body.getArguments(), entry->getArguments()))
    map.map(from, to);
  SmallVector<Operation *> fwd;
  if (failed(cloneForward(b, body, map, fwd)))
    return failure();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value loss = map.lookup(ret.getOperand(0));

  // d loss / d loss = 1.
  Value one = b.create<arith::ConstantOp>(
      fn.getLoc(), DenseElementsAttr::get(lossTy, b.getF32FloatAttr(1.0)));
  llvm::DenseMap<Value, Value> adj;
  adj[loss] = one;
  if (failed(reverse(b, fwd, adj)))
    return failure();
  SmallVector<Value> outs = {loss};
  for (unsigned i : params) {
    Value gv = adj.lookup(entry->getArgument(i));
    if (!gv)
      return fn.emitOpError("not supported yet: parameter ")
             << fn.getArgAttr(i, kParamAttr)
             << " does not contribute to the loss";
    outs.push_back(gv);
  }
  b.create<func::ReturnOp>(fn.getLoc(), outs);
  grad.setFunctionType(
      b.getFunctionType(ft.getInputs(), ValueRange(outs).getTypes()));
  return grad;
}

struct ColossusAutodiffPass final
    : public colossus::impl::ColossusAutodiffBase<ColossusAutodiffPass> {
  using ColossusAutodiffBase::ColossusAutodiffBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fn = module.lookupSymbol<func::FuncOp>(funcName);
    if (!fn) {
      module.emitError() << "colossus-autodiff: no function @" << funcName;
      return signalPassFailure();
    }
    if (recompute != "layer" && recompute != "none") {
      module.emitError() << "colossus-autodiff: recompute=" << recompute
                         << ": expected 'layer' or 'none'";
      return signalPassFailure();
    }
    Differentiator d(module, /*inlineCalls=*/recompute == "none");
    if (failed(d.buildGrad(fn)))
      signalPassFailure();
  }
};

} // namespace
