//===- Fuse.cpp - Form colossus.fusion kernels ----------------------------===//
//
// Greedy producer-to-consumer fusion in program order. A group starts at the
// first op not yet grouped (its *root*, which names the kernel kind) and
// grows by:
//   - absorbing a consumer that reads a group value at the same (row, column)
//     index (elementwise ops, the `x` of cache_write), when the consumer's
//     iteration space equals the group's;
//   - pulling in a not-yet-grouped producer of such a consumer when that
//     producer is computable per element (linear, embedding, rope,
//     elementwise) and its own operands are already available: this is how
//     gate and up projections meet in one dual-GEMM kernel, and how GPT-2's
//     token and position embeddings meet;
//   - absorbing sibling cache writes, so that a layer's keys and values are
//     stored by one kernel.
// Norms, softmax and attention need whole rows (or the whole context) and
// form groups of their own; two row groups take the conversion of their
// result (AdamW's bf16 parameter copy, the loss kernel's bf16 dlogits). Views
// (positions, slice) are cloned into every group that reads them. A group is
// emitted at the position of its last op; an absorption is refused when a value
// of the group has a user outside it that would then come before the group.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"

namespace colossus {
#define GEN_PASS_DEF_COLOSSUSFUSE
#include "colossus/Compiler/Passes.h.inc"
} // namespace colossus

using namespace mlir;
using namespace colossus;

namespace {

/// Splat tensor constants (such as d loss / d loss = 1) are views too.
bool isSplatConstant(Operation *op) {
  auto c = dyn_cast<arith::ConstantOp>(op);
  auto attr = c ? dyn_cast<SplatElementsAttr>(c.getValue()) : nullptr;
  return attr && attr.getElementType().isF32();
}

bool isView(Operation *op) {
  return isa<PositionsOp, SliceOp, PadColumnsOp, CacheReadOp>(op) ||
         isSplatConstant(op);
}

/// A view that something other than a colossus op reads (a return, a call)
/// must be materialized by a kernel of its own.
bool escapes(Operation *op) {
  return llvm::any_of(op->getUsers(), [](Operation *u) {
    return !u->getDialect() || !isa<ColossusDialect>(u->getDialect());
  });
}

bool isElementwise(Operation *op) {
  return isa<AddOp, MulOp, SiluOp, GeluOp, SwigluOp, SiluGradOp, GeluGradOp,
             SwigluGradOp, ConvertOp>(op);
}

/// Ops whose value at one (row, column) is computable from their operands'
/// values without row-wide state.
bool isPointwiseComputable(Operation *op) {
  return isElementwise(op) || isa<LinearOp, EmbeddingOp, RopeOp>(op);
}

/// Ops that form a kernel of their own: they need whole rows, the whole
/// context, or a reduction over the rows.
bool isRowOp(Operation *op) {
  return isa<RmsNormOp, LayerNormOp, SoftmaxOp, AttentionOp, RmsNormGradOp,
             LayerNormGradOp, SoftmaxGradOp, CrossEntropyOp, CrossEntropyGradOp,
             LinearWeightGradOp, ColumnSumOp, EmbeddingGradOp, AttentionGradOp,
             AdamwOp, CrossEntropyRowsOp, RowSumOp>(op);
}

/// The (rows, columns) a kernel computing `op` iterates over.
std::pair<int64_t, int64_t> iterationSpace(Operation *op) {
  if (auto cw = dyn_cast<CacheWriteOp>(op)) {
    auto t = cast<RankedTensorType>(cw.getX().getType());
    return {t.getDimSize(0), t.getDimSize(1)};
  }
  auto t = cast<RankedTensorType>(op->getResult(0).getType());
  if (t.getRank() == 2)
    return {t.getDimSize(0), t.getDimSize(1)};
  if (t.getRank() == 0)
    return {1, 1};
  return {t.getDimSize(0), 1};
}

StringRef kindOf(Operation *root) {
  return llvm::TypeSwitch<Operation *, StringRef>(root)
      .Case<LinearOp>([](auto) { return "gemm"; })
      .Case<RmsNormOp, LayerNormOp>([](auto) { return "norm"; })
      .Case<AttentionOp>([](auto) { return "attention"; })
      .Case<RopeOp>([](auto) { return "rope"; })
      .Case<EmbeddingOp>([](auto) { return "embedding"; })
      .Case<SoftmaxOp>([](auto) { return "softmax"; })
      .Case<CacheWriteOp>([](auto) { return "cache_write"; })
      .Case<RmsNormGradOp, LayerNormGradOp>([](auto) { return "norm_grad"; })
      .Case<SoftmaxGradOp>([](auto) { return "softmax_grad"; })
      .Case<CrossEntropyOp, RowSumOp>([](auto) { return "loss"; })
      .Case<CrossEntropyGradOp, CrossEntropyRowsOp>(
          [](auto) { return "loss_grad"; })
      .Case<LinearWeightGradOp, ColumnSumOp, EmbeddingGradOp>(
          [](auto) { return "reduce"; })
      .Case<AttentionGradOp>([](auto) { return "attention_grad"; })
      .Case<AdamwOp>([](auto) { return "adamw"; })
      .Case<GlobalNormOp>([](auto) { return "global_norm"; })
      .Case<ClipHyperOp>([](auto) { return "clip"; })
      .Default([](auto) { return "elementwise"; });
}

struct Group {
  Operation *root;
  llvm::SetVector<Operation *> ops;
  Operation *last;
};

class Fuser {
public:
  explicit Fuser(Block &block) : block(block) {}
  void run();

private:
  /// A value is available to a group whose kernel runs after everything
  /// grouped so far when it is a block argument, the result of a grouped op,
  /// or a view over available values.
  bool available(Value v) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return true;
    if (isView(def))
      return llvm::all_of(def->getOperands(),
                          [&](Value o) { return available(o); });
    return groupOf.count(def);
  }

  /// Users outside `g` (plus `extra`) of values defined in `g` (plus
  /// `extra`) must all come after `lastOp`.
  bool externalUsersAfter(const Group &g, ArrayRef<Operation *> extra,
                          Operation *lastOp) {
    auto inGroup = [&](Operation *op) {
      return g.ops.contains(op) || llvm::is_contained(extra, op);
    };
    auto check = [&](Operation *op) {
      for (Value r : op->getResults())
        for (Operation *user : r.getUsers()) {
          Operation *u = block.findAncestorOpInBlock(*user);
          if (!u || inGroup(u))
            continue;
          if (isView(u)) {
            // A view is cloned into its consumers: check them instead.
            for (Operation *vu : u->getUsers()) {
              Operation *a = block.findAncestorOpInBlock(*vu);
              if (a && !inGroup(a) && !lastOp->isBeforeInBlock(a) &&
                  a != lastOp)
                return false;
            }
            continue;
          }
          if (!lastOp->isBeforeInBlock(u))
            return false;
        }
      return true;
    };
    for (Operation *op : g.ops)
      if (!check(op))
        return false;
    for (Operation *op : extra)
      if (!check(op))
        return false;
    return true;
  }

  Operation *later(Operation *a, Operation *b) {
    return a->isBeforeInBlock(b) ? b : a;
  }

  /// Tries to absorb consumer `u` (and pull its missing producers).
  bool tryAbsorb(Group &g, Operation *u);
  bool tryAbsorbSiblingCacheWrite(Group &g, CacheWriteOp cw);
  void grow(Group &g);
  void mergeResidualIntoNorms();
  void splitMultiSpaceOps();
  void fuseLossWithGrad();
  void materialize(Group &g);

  Block &block;
  /// Values indexed by parameter rows rather than token rows: gradients
  /// reduced over the tokens, and elementwise combinations of them (the
  /// sum of a tied embedding's two gradients).
  llvm::DenseSet<Value> weightShaped;
  llvm::DenseMap<Operation *, Group *> groupOf;
  std::vector<std::unique_ptr<Group>> groups;
};

bool Fuser::tryAbsorb(Group &g, Operation *u) {
  if (groupOf.count(u) || isView(u))
    return false;
  if (!isElementwise(u) && !isa<CacheWriteOp>(u))
    return false;
  if (iterationSpace(u) != iterationSpace(g.root))
    return false;
  // Operands: in the group, available, or a pullable producer.
  SmallVector<Operation *> pulled;
  for (OpOperand &operand : u->getOpOperands()) {
    Value v = operand.get();
    Operation *def = v.getDefiningOp();
    if (def && g.ops.contains(def))
      continue;
    // cache_write's x must be aligned; its cache and positions are inputs.
    if (available(v))
      continue;
    if (!def || groupOf.count(def) || !isPointwiseComputable(def) ||
        iterationSpace(def) != iterationSpace(g.root))
      return false;
    if (!llvm::all_of(def->getOperands(),
                      [&](Value o) { return available(o); }))
      return false;
    pulled.push_back(def);
  }
  SmallVector<Operation *> extra(pulled);
  extra.push_back(u);
  Operation *newLast = g.last;
  for (Operation *op : extra)
    newLast = later(newLast, op);
  if (!externalUsersAfter(g, extra, newLast))
    return false;
  for (Operation *op : extra) {
    g.ops.insert(op);
    groupOf[op] = &g;
  }
  g.last = newLast;
  return true;
}

bool Fuser::tryAbsorbSiblingCacheWrite(Group &g, CacheWriteOp cw) {
  if (groupOf.count(cw))
    return false;
  if (iterationSpace(cw) != iterationSpace(g.root))
    return false;
  if (!llvm::all_of(cw->getOperands(), [&](Value o) {
        Operation *def = o.getDefiningOp();
        return (def && g.ops.contains(def)) || available(o);
      }))
    return false;
  Operation *newLast = later(g.last, cw);
  SmallVector<Operation *> extra = {cw};
  if (!externalUsersAfter(g, extra, newLast))
    return false;
  g.ops.insert(cw);
  groupOf[cw] = &g;
  g.last = newLast;
  return true;
}

void Fuser::grow(Group &g) {
  // Mixed precision: the bf16 copy of an AdamW-updated master weight is
  // written by the update's kernel (one pass over the parameter).
  if (auto adamw = dyn_cast<AdamwOp>(g.root)) {
    for (Operation *u : adamw.getNewParam().getUsers())
      if (auto cv = dyn_cast<ConvertOp>(u); cv && !groupOf.count(cv) &&
                                            cv->getBlock() == &block &&
                                            externalUsersAfter(g, {cv}, cv)) {
        g.ops.insert(cv);
        groupOf[cv] = &g;
        g.last = later(g.last, cv);
      }
    return;
  }
  // Mixed precision: the loss kernel stores the bf16 dlogits (the rounding
  // of the f32 gradient that autodiff puts before the output projection's
  // backward GEMMs) itself, so no f32 copy of the vocabulary-sized gradient
  // is written.
  if (auto rows = dyn_cast<CrossEntropyRowsOp>(g.root)) {
    Value dl = rows.getDlogits();
    auto cv =
        dl.hasOneUse() ? dyn_cast<ConvertOp>(*dl.user_begin()) : ConvertOp();
    if (cv && !groupOf.count(cv) && cv->getBlock() == &block &&
        getElementTypeOrSelf(cv.getType()).isBF16() &&
        externalUsersAfter(g, {cv}, later(g.last, cv.getOperation()))) {
      g.ops.insert(cv);
      groupOf[cv] = &g;
      g.last = later(g.last, cv);
    }
    return;
  }
  // A norm gradient's dx kernel takes the elementwise ops that consume dx,
  // such as the sum with the residual stream's adjoint (the norm backward
  // "with the residual"); its dweight kernel reduces over the rows and
  // takes nothing.
  bool normGradDx = isa<RmsNormGradOp, LayerNormGradOp>(g.root) &&
                    !g.root->getResult(0).use_empty();
  if (isRowOp(g.root) && !normGradDx)
    return;
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i < g.ops.size() && !changed; ++i) {
      Operation *op = g.ops[i];
      for (Value r : op->getResults())
        for (Operation *user : r.getUsers()) {
          Operation *u = block.findAncestorOpInBlock(*user);
          if (u && tryAbsorb(g, u)) {
            changed = true;
            break;
          }
        }
    }
    if (changed)
      continue;
    // Sibling cache writes.
    if (llvm::any_of(g.ops,
                     [](Operation *op) { return isa<CacheWriteOp>(op); }))
      for (Operation &op : block)
        if (auto cw = dyn_cast<CacheWriteOp>(op))
          if (tryAbsorbSiblingCacheWrite(g, cw)) {
            changed = true;
            break;
          }
  }
}

/// A norm gradient's dx (per row) and its weight/bias gradients (sums over
/// rows) iterate differently, and so do attention_grad's dq (per query) and
/// dk, dv (per key): when both parts are used, a clone of the op serves the
/// second, so that each kernel computes only its part.
void Fuser::splitMultiSpaceOps() {
  SmallVector<Operation *> ops;
  for (Operation &op : block)
    if (isa<RmsNormGradOp, LayerNormGradOp, AttentionGradOp>(op))
      ops.push_back(&op);
  for (Operation *op : ops) {
    bool dxUsed = !op->getResult(0).use_empty();
    bool restUsed = llvm::any_of(op->getResults().drop_front(),
                                 [](Value r) { return !r.use_empty(); });
    if (!dxUsed || !restUsed)
      continue;
    OpBuilder b(op);
    b.setInsertionPointAfter(op);
    Operation *clone = b.clone(*op);
    for (unsigned i = 1; i < op->getNumResults(); ++i)
      op->getResult(i).replaceAllUsesWith(clone->getResult(i));
  }
}

/// Softmax cross entropy: the loss and its gradient of the same logits read
/// each logits row once, in one row kernel (`cross_entropy_rows`: per-row
/// loss terms and dlogits), followed by a cheap sum of the terms
/// (`row_sum`). The memory plan then writes dlogits over the logits.
void Fuser::fuseLossWithGrad() {
  SmallVector<CrossEntropyGradOp> grads;
  for (Operation &op : block)
    if (auto g = dyn_cast<CrossEntropyGradOp>(op))
      grads.push_back(g);
  for (CrossEntropyGradOp g : grads) {
    CrossEntropyOp ce;
    for (Operation *user : g.getLogits().getUsers())
      if (auto c = dyn_cast<CrossEntropyOp>(user);
          c && c->getBlock() == &block && c.getTargets() == g.getTargets() &&
          c.getIgnoreIndex() == g.getIgnoreIndex() && c->isBeforeInBlock(g))
        ce = c;
    // The loss moves to where the gradient is computed: its users must
    // come after that.
    if (!ce || llvm::any_of(ce->getUsers(), [&](Operation *user) {
          Operation *u = block.findAncestorOpInBlock(*user);
          return !u || !g->isBeforeInBlock(u);
        }))
      continue;
    OpBuilder b(g);
    auto rows =
        b.create<CrossEntropyRowsOp>(g.getLoc(), g.getLogits(), g.getTargets(),
                                     g.getDloss(), g.getIgnoreIndexAttr());
    auto sum = b.create<RowSumOp>(ce.getLoc(), rows.getTerms());
    g.getResult().replaceAllUsesWith(rows.getDlogits());
    ce.getResult().replaceAllUsesWith(sum.getResult());
    g.erase();
    ce.erase();
    // A bf16 step rounds dlogits: the conversion (it reads nothing else)
    // moves next to the row kernel, whose group then takes it (grow).
    Value dl = rows.getDlogits();
    if (dl.hasOneUse())
      if (auto cv = dyn_cast<ConvertOp>(*dl.user_begin());
          cv && cv->getBlock() == &block)
        cv->moveAfter(rows);
  }
}

/// Norm (+ residual add): a norm whose input is computed by a group of
/// elementwise ops only (typically the residual add, when no GEMM epilogue
/// took it) joins that group, which becomes a row kernel writing both the sum
/// and the normalized rows.
void Fuser::mergeResidualIntoNorms() {
  for (auto &gp : groups) {
    Group &n = *gp;
    if (n.ops.size() != 1 || !isa<RmsNormOp, LayerNormOp>(n.root))
      continue;
    Operation *producer = n.root->getOperand(0).getDefiningOp();
    if (!producer || !groupOf.count(producer))
      continue;
    Group &p = *groupOf[producer];
    if (&p == &n || !llvm::all_of(p.ops, isElementwise) ||
        iterationSpace(p.root) != iterationSpace(n.root))
      continue;
    // The norm's other operands must exist where the merged group runs.
    bool ok = llvm::all_of(n.root->getOperands().drop_front(), [&](Value v) {
      Operation *def = v.getDefiningOp();
      return !def || def->isBeforeInBlock(p.last);
    });
    if (!ok)
      continue;
    p.ops.insert(n.root);
    groupOf[n.root] = &p;
    p.root = n.root;
    p.last = n.root;
    n.ops.clear();
  }
}

void Fuser::materialize(Group &g) {
  // Ops in program order.
  SmallVector<Operation *> ops(g.ops.begin(), g.ops.end());
  llvm::sort(ops,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });

  // Inputs: operands defined outside the group, seen through views.
  llvm::SetVector<Value> inputs;
  llvm::SetVector<Operation *> views;
  std::function<void(Value)> collect = [&](Value v) {
    Operation *def = v.getDefiningOp();
    if (def && g.ops.contains(def))
      return;
    if (def && isView(def)) {
      for (Value o : def->getOperands())
        collect(o);
      views.insert(def);
      return;
    }
    inputs.insert(v);
  };
  for (Operation *op : ops)
    for (Value v : op->getOperands())
      collect(v);
  // Results: values used outside the group.
  SmallVector<Value> results;
  for (Operation *op : ops)
    for (Value r : op->getResults())
      if (llvm::any_of(r.getUsers(), [&](Operation *user) {
            Operation *u = block.findAncestorOpInBlock(*user);
            return !u || !g.ops.contains(u);
          }))
        results.push_back(r);

  OpBuilder b(g.last);
  b.setInsertionPointAfter(g.last);
  SmallVector<Type> resultTypes;
  for (Value r : results)
    resultTypes.push_back(r.getType());
  auto fusion = b.create<FusionOp>(g.root->getLoc(), resultTypes,
                                   b.getStringAttr(kindOf(g.root)),
                                   inputs.getArrayRef(), FlatSymbolRefAttr());
  // Elementwise work on parameter-shaped values runs over all their rows,
  // not over the step's active tokens.
  if (isElementwise(g.root) && weightShaped.count(g.root->getResult(0)))
    fusion->setAttr("colossus.fixed_rows",
                    b.getI64IntegerAttr(
                        cast<RankedTensorType>(g.root->getResult(0).getType())
                            .getDimSize(0)));
  Block *body = new Block();
  fusion.getBody().push_back(body);
  IRMapping map;
  for (Value in : inputs)
    map.map(in, body->addArgument(in.getType(), in.getLoc()));
  OpBuilder inner = OpBuilder::atBlockEnd(body);
  // Views in program order first (they only depend on inputs/other views).
  SmallVector<Operation *> viewOps(views.begin(), views.end());
  llvm::sort(viewOps,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  for (Operation *v : viewOps)
    inner.clone(*v, map);
  for (Operation *op : ops)
    inner.clone(*op, map);
  SmallVector<Value> yielded;
  for (Value r : results)
    yielded.push_back(map.lookup(r));
  inner.create<YieldOp>(g.root->getLoc(), yielded);
  for (auto [orig, repl] : llvm::zip(results, fusion.getResults()))
    orig.replaceAllUsesWith(repl);
  for (Operation *op : llvm::reverse(ops))
    op->erase();
}

void Fuser::run() {
  fuseLossWithGrad();
  splitMultiSpaceOps();
  for (Operation &op : block) {
    if (isa<LinearWeightGradOp, EmbeddingGradOp, ColumnSumOp>(op))
      weightShaped.insert(op.getResult(0));
    else if (isa<RmsNormGradOp, LayerNormGradOp>(op))
      for (Value r : op.getResults().drop_front())
        weightShaped.insert(r);
    else if (isElementwise(&op) && op.getNumOperands() > 0 &&
             llvm::all_of(op.getOperands(),
                          [&](Value v) { return weightShaped.count(v); }))
      for (Value r : op.getResults())
        weightShaped.insert(r);
  }
  SmallVector<Operation *> order;
  for (Operation &op : block)
    if (op.getDialect() && isa<ColossusDialect>(op.getDialect()) &&
        (!isView(&op) || escapes(&op)) && !isa<FusionOp>(op))
      order.push_back(&op);
  for (Operation *op : order) {
    if (groupOf.count(op))
      continue;
    auto g = std::make_unique<Group>();
    g->root = op;
    g->ops.insert(op);
    g->last = op;
    groupOf[op] = g.get();
    grow(*g);
    groups.push_back(std::move(g));
  }
  mergeResidualIntoNorms();
  for (auto &g : groups)
    if (!g->ops.empty())
      materialize(*g);
  // Views left without users (erasing one can free the view it read).
  for (bool erased = true; erased;) {
    erased = false;
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(block)))
      if (isView(&op) && op.use_empty()) {
        op.erase();
        erased = true;
      }
  }
}

struct ColossusFusePass final
    : public colossus::impl::ColossusFuseBase<ColossusFusePass> {
  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    for (Block &block : fn.getBody())
      Fuser(block).run();
  }
};

} // namespace
