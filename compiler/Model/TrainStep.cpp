//===- TrainStep.cpp - The optimizer step of training ---------------------===//
#include "colossus/Compiler/TrainStep.h"
#include "colossus/Compiler/ImportModel.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace colossus;

LogicalResult colossus::buildUpdateStep(ModuleOp module, StringRef gradsFn,
                                        const OptimizerConfig &opt) {
  auto grads = module.lookupSymbol<func::FuncOp>(gradsFn);
  if (!grads)
    return module.emitError() << "no @" << gradsFn << " to build an update for";
  MLIRContext *ctx = module.getContext();
  OpBuilder b(ctx);
  Location loc = grads.getLoc();

  struct P {
    StringAttr name;
    StringAttr init;
    RankedTensorType type;
  };
  SmallVector<P> params;
  for (unsigned i = 0; i < grads.getNumArguments(); ++i)
    if (auto name = grads.getArgAttrOfType<StringAttr>(i, attrs::kParam))
      params.push_back(
          {name, grads.getArgAttrOfType<StringAttr>(i, attrs::kInit),
           cast<RankedTensorType>(grads.getArgument(i).getType())});

  auto hyperTy = RankedTensorType::get({5}, b.getF32Type());
  SmallVector<Type> args = {hyperTy};
  SmallVector<DictionaryAttr> argAttrs;
  auto dict = [&](StringRef key, StringAttr value) {
    NamedAttrList l;
    l.append(key, value);
    return l.getDictionary(ctx);
  };
  argAttrs.push_back(dict(attrs::kInput, b.getStringAttr("hyper")));
  // Per parameter: the weights AdamW updates (the parameter itself, or for a
  // bf16 parameter its f32 master copy), the gradient, the two moments, and
  // for a bf16 parameter the parameter, rewritten from the new master.
  struct Slots {
    unsigned weights, grad, m, v;
    int lowPrecision = -1;
  };
  SmallVector<Slots> slots;
  for (const P &p : params) {
    auto f32Ty = RankedTensorType::get(p.type.getShape(), b.getF32Type());
    bool mixed = !p.type.getElementType().isF32();
    Slots sl;
    NamedAttrList wa;
    wa.append(mixed ? attrs::kMaster : attrs::kParam, p.name);
    if (p.init)
      wa.append(attrs::kInit, p.init);
    sl.weights = args.size();
    args.push_back(f32Ty);
    argAttrs.push_back(wa.getDictionary(ctx));
    sl.grad = args.size();
    args.push_back(f32Ty);
    argAttrs.push_back(dict("colossus.grad", p.name));
    sl.m = args.size();
    args.push_back(f32Ty);
    argAttrs.push_back(
        dict("colossus.opt_state", b.getStringAttr(p.name.str() + ".exp_avg")));
    sl.v = args.size();
    args.push_back(f32Ty);
    argAttrs.push_back(dict("colossus.opt_state",
                            b.getStringAttr(p.name.str() + ".exp_avg_sq")));
    if (mixed) {
      sl.lowPrecision = args.size();
      args.push_back(p.type);
      argAttrs.push_back(dict(attrs::kParam, p.name));
    }
    slots.push_back(sl);
  }
  SmallVector<Type> results = {RankedTensorType::get({1}, b.getF32Type())};
  for (int k = 0; k < 3; ++k)
    for (const P &p : params)
      results.push_back(RankedTensorType::get(p.type.getShape(), b.getF32Type()));
  for (const P &p : params)
    if (!p.type.getElementType().isF32())
      results.push_back(p.type);

  b.setInsertionPointToEnd(module.getBody());
  auto fn =
      b.create<func::FuncOp>(loc, "update", b.getFunctionType(args, results));
  for (auto [i, d] : llvm::enumerate(argAttrs))
    fn.setArgAttrs(i, d);
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  SmallVector<Value> gradValues;
  for (const Slots &sl : slots)
    gradValues.push_back(entry->getArgument(sl.grad));
  // hyper = [lr, 1 - beta1^t, 1 - beta2^t, max_norm, grad_scale]: the grad
  // buffers hold the sum of grad_scale^-1 micro-batch gradients; the norm,
  // clipping and AdamW see their mean without a pass that rescales them.
  Value norm = b.create<GlobalNormOp>(loc, entry->getArgument(0), gradValues);
  Value hyper = b.create<ClipHyperOp>(loc, entry->getArgument(0), norm);
  SmallVector<Value> newP, newM, newV, newLow;
  unsigned lowResult = 1 + 3 * params.size();
  for (auto [i, sl] : llvm::enumerate(slots)) {
    Value p = entry->getArgument(sl.weights),
          g = entry->getArgument(sl.grad), m = entry->getArgument(sl.m),
          v = entry->getArgument(sl.v);
    double wd = params[i].type.getRank() >= 2 ? opt.weightDecay : 0.0;
    auto a =
        b.create<AdamwOp>(loc, p, g, m, v, hyper, b.getF64FloatAttr(opt.beta1),
                          b.getF64FloatAttr(opt.beta2),
                          b.getF64FloatAttr(opt.eps), b.getF64FloatAttr(wd));
    newP.push_back(a.getNewParam());
    newM.push_back(a.getNewExpAvg());
    newV.push_back(a.getNewExpAvgSq());
    if (sl.lowPrecision >= 0) {
      newLow.push_back(b.create<ConvertOp>(
          loc, a.getNewParam(),
          TypeAttr::get(params[i].type.getElementType())));
      // Not colossus.param: that marks the grads step's gradient results.
      fn.setResultAttr(lowResult++, "colossus.param_copy", params[i].name);
    }
  }
  SmallVector<Value> rets = {norm};
  rets.append(newP);
  rets.append(newM);
  rets.append(newV);
  rets.append(newLow);
  b.create<func::ReturnOp>(loc, rets);
  return success();
}
