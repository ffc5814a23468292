//===- ColossusOps.cpp - Colossus dialect ops -----------------------------===//
//
// Result-type inference and verifiers. Shapes are static capacities; a
// dynamic dimension is accepted where it cannot be checked.
//
//===----------------------------------------------------------------------===//
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace colossus;

namespace {
RankedTensorType rt(Value v) { return cast<RankedTensorType>(v.getType()); }

bool dimsMatch(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

LogicalResult sameShapeAndElem(Operation *op, Value a, Value b, StringRef aName,
                               StringRef bName) {
  RankedTensorType ta = rt(a), tb = rt(b);
  if (ta.getElementType() != tb.getElementType())
    return op->emitOpError()
           << aName << " and " << bName << " must have the same element type";
  if (ta.getRank() != tb.getRank())
    return op->emitOpError()
           << aName << " and " << bName << " must have the same rank";
  for (int64_t i = 0; i < ta.getRank(); ++i)
    if (!dimsMatch(ta.getDimSize(i), tb.getDimSize(i)))
      return op->emitOpError()
             << aName << " and " << bName << " differ in dimension " << i
             << " (" << ta.getDimSize(i) << " vs " << tb.getDimSize(i) << ")";
  return success();
}

/// Result types are inferred while the custom form is parsed, before the
/// operand types are verified: check the ranks the inference relies on.
LogicalResult inferRank(std::optional<Location> loc, StringRef opName,
                        StringRef operand, Value v, int64_t rank) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getRank() == rank)
    return success();
  return emitOptionalError(loc, "'", opName, "' op ", operand, " must be a ",
                           rank, "-D tensor, got ", t);
}

LogicalResult vectorMatches(Operation *op, Value mat, Value vec,
                            StringRef vecName) {
  if (rt(vec).getElementType() != rt(mat).getElementType())
    return op->emitOpError()
           << vecName << " must have the element type of the input";
  if (!dimsMatch(rt(vec).getDimSize(0), rt(mat).getDimSize(1)))
    return op->emitOpError()
           << vecName << " has " << rt(vec).getDimSize(0)
           << " elements but the input rows have " << rt(mat).getDimSize(1);
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// positions
//===----------------------------------------------------------------------===//

LogicalResult PositionsOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  types.push_back(RankedTensorType::get(
      {static_cast<int64_t>(adaptor.getRows())}, IntegerType::get(ctx, 32)));
  return success();
}

//===----------------------------------------------------------------------===//
// embedding
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(
          inferRank(loc, getOperationName(), "table", adaptor.getTable(), 2)) ||
      failed(inferRank(loc, getOperationName(), "ids", adaptor.getIds(), 1)))
    return failure();
  auto table = cast<RankedTensorType>(adaptor.getTable().getType());
  auto ids = cast<RankedTensorType>(adaptor.getIds().getType());
  types.push_back(RankedTensorType::get(
      {ids.getDimSize(0), table.getDimSize(1)}, table.getElementType()));
  return success();
}

LogicalResult EmbeddingOp::verify() { return success(); }

//===----------------------------------------------------------------------===//
// norms
//===----------------------------------------------------------------------===//

LogicalResult RmsNormOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location>,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  return success();
}

LogicalResult RmsNormOp::verify() {
  if (!(getEps().convertToDouble() >= 0))
    return emitOpError("eps must be non-negative");
  return vectorMatches(*this, getX(), getWeight(), "weight");
}

LogicalResult LayerNormOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  return success();
}

LogicalResult LayerNormOp::verify() {
  if (!(getEps().convertToDouble() >= 0))
    return emitOpError("eps must be non-negative");
  if (failed(vectorMatches(*this, getX(), getWeight(), "weight")))
    return failure();
  return vectorMatches(*this, getX(), getBias(), "bias");
}

//===----------------------------------------------------------------------===//
// linear
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "x", adaptor.getX(), 2)) ||
      failed(
          inferRank(loc, getOperationName(), "weight", adaptor.getWeight(), 2)))
    return failure();
  auto x = cast<RankedTensorType>(adaptor.getX().getType());
  auto w = cast<RankedTensorType>(adaptor.getWeight().getType());
  // While parsing, the custom parser keeps the attr-dict in the attribute
  // dictionary (the properties are filled from it only when the op is
  // created), and an omitted default-valued attribute is not set at all.
  BoolAttr transposeAttr = adaptor.getTransposeWAttr();
  if (!transposeAttr)
    if (DictionaryAttr attrs = adaptor.getAttributes())
      transposeAttr = attrs.getAs<BoolAttr>("transpose_w");
  bool transposeW = !transposeAttr || transposeAttr.getValue();
  int64_t n = transposeW ? w.getDimSize(0) : w.getDimSize(1);
  types.push_back(
      RankedTensorType::get({x.getDimSize(0), n}, x.getElementType()));
  return success();
}

LogicalResult LinearOp::verify() {
  RankedTensorType x = rt(getX()), w = rt(getWeight());
  // Mixed precision allows one pair of differing types: an f32 x (the loss
  // gradient) against a bf16 weight (the output projection); the result has
  // x's type.
  if (x.getElementType() != w.getElementType() &&
      !(x.getElementType().isF32() && w.getElementType().isBF16()))
    return emitOpError("x and weight must have the same element type (or "
                       "f32 x with a bf16 weight)");
  int64_t k = getTransposeW() ? w.getDimSize(1) : w.getDimSize(0);
  int64_t n = getTransposeW() ? w.getDimSize(0) : w.getDimSize(1);
  if (!dimsMatch(x.getDimSize(1), k))
    return emitOpError() << "contraction size mismatch: x has "
                         << x.getDimSize(1) << " columns, weight "
                         << (getTransposeW() ? "[N, K]" : "[K, N]")
                         << " has K = " << k;
  if (getBias()) {
    RankedTensorType b = rt(getBias());
    if (b.getElementType() != x.getElementType())
      return emitOpError("bias must have the element type of x");
    if (!dimsMatch(b.getDimSize(0), n))
      return emitOpError() << "bias has " << b.getDimSize(0)
                           << " elements but the output has " << n
                           << " columns";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// rope
//===----------------------------------------------------------------------===//

LogicalResult RopeOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                       Adaptor adaptor,
                                       SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  return success();
}

LogicalResult RopeOp::verify() {
  int64_t hd = getHeadDim();
  int64_t cols = rt(getX()).getDimSize(1);
  if (hd % 2 != 0)
    return emitOpError() << "head_dim must be even, got " << hd;
  if (!ShapedType::isDynamic(cols) && cols % hd != 0)
    return emitOpError() << "columns (" << cols
                         << ") must be a multiple of head_dim (" << hd << ")";
  if (!dimsMatch(rt(getPositions()).getDimSize(0), rt(getX()).getDimSize(0)))
    return emitOpError("positions must have one entry per row of x");
  // `!(v > 0)` rather than `v <= 0`: NaN is rejected too.
  if (!(getTheta().convertToDouble() > 0))
    return emitOpError("theta must be positive");
  if (getScaling() != RopeScaling::none && !(getFactor().convertToDouble() > 0))
    return emitOpError("scaling factor must be positive");
  if (getScaling() == RopeScaling::llama3) {
    double low = getLowFreqFactor().convertToDouble();
    double high = getHighFreqFactor().convertToDouble();
    if (!(low > 0))
      return emitOpError("llama3 scaling needs low_freq_factor > 0");
    if (!(high > low))
      return emitOpError("llama3 scaling needs high_freq_factor > "
                         "low_freq_factor");
    // The getter returns uint64_t: read the stored signed value.
    if (getOriginalMaxPositionAttr().getInt() <= 0)
      return emitOpError("llama3 scaling needs original_max_position > 0");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// cache_write
//===----------------------------------------------------------------------===//

LogicalResult CacheWriteOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location>,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getCache().getType());
  return success();
}

LogicalResult CacheWriteOp::verify() {
  RankedTensorType cache = rt(getCache()), x = rt(getX());
  if (cache.getElementType() != x.getElementType())
    return emitOpError("cache and x must have the same element type");
  if (!dimsMatch(cache.getDimSize(2), x.getDimSize(1)))
    return emitOpError() << "cache rows have " << cache.getDimSize(2)
                         << " elements but x rows have " << x.getDimSize(1);
  if (!dimsMatch(rt(getPositions()).getDimSize(0), x.getDimSize(0)))
    return emitOpError("positions must have one entry per row of x");
  return success();
}

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getQ().getType());
  // While parsing, the unit attribute is still in the attribute dictionary
  // (see LinearOp::inferReturnTypes).
  bool saveLse =
      adaptor.getSaveLseAttr() ||
      (adaptor.getAttributes() && adaptor.getAttributes().get("save_lse"));
  if (saveLse) {
    auto q = cast<RankedTensorType>(adaptor.getQ().getType());
    IntegerAttr h = adaptor.getNumHeadsAttr();
    if (!h && adaptor.getAttributes())
      h = adaptor.getAttributes().getAs<IntegerAttr>("num_heads");
    int64_t heads = h && h.getInt() > 0 ? h.getInt() : ShapedType::kDynamic;
    types.push_back(
        RankedTensorType::get({q.getDimSize(0), heads}, Float32Type::get(ctx)));
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  int64_t h = getNumHeads(), hkv = getNumKvHeads(), hd = getHeadDim();
  if (h % hkv != 0)
    return emitOpError() << "num_heads (" << h
                         << ") must be a multiple of num_kv_heads (" << hkv
                         << ")";
  RankedTensorType q = rt(getQ());
  if (!dimsMatch(q.getDimSize(1), h * hd))
    return emitOpError() << "q has " << q.getDimSize(1)
                         << " columns, expected num_heads * head_dim = "
                         << h * hd;
  if (failed(sameShapeAndElem(*this, getK(), getV(), "k", "v")))
    return failure();
  RankedTensorType k = rt(getK());
  if (k.getElementType() != q.getElementType())
    return emitOpError("q and k must have the same element type");
  if (!dimsMatch(k.getDimSize(2), hkv * hd))
    return emitOpError() << "k has " << k.getDimSize(2)
                         << " columns, expected num_kv_heads * head_dim = "
                         << hkv * hd;
  if (!dimsMatch(rt(getPositions()).getDimSize(0), q.getDimSize(0)))
    return emitOpError("positions must have one entry per row of q");
  // The getter returns uint64_t: read the stored signed value.
  if (getSlidingWindowAttr().getInt() < 0)
    return emitOpError("sliding_window must be >= 0");
  if (!(getScale().convertToDouble() > 0))
    return emitOpError("scale must be positive");
  if (getSaveLse() != static_cast<bool>(getLse()))
    return emitOpError("has an lse result if and only if save_lse is set");
  if (getLse() && (!dimsMatch(rt(getLse()).getDimSize(0), q.getDimSize(0)) ||
                   !dimsMatch(rt(getLse()).getDimSize(1), h)))
    return emitOpError("lse must be [rows of q, num_heads] (")
           << q.getDimSize(0) << "x" << h << ")";
  return success();
}

//===----------------------------------------------------------------------===//
// slice, softmax, elementwise
//===----------------------------------------------------------------------===//

LogicalResult SliceOp::inferReturnTypes(MLIRContext *,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "x", adaptor.getX(), 2)))
    return failure();
  auto x = cast<RankedTensorType>(adaptor.getX().getType());
  types.push_back(RankedTensorType::get(
      {x.getDimSize(0), static_cast<int64_t>(adaptor.getSize())},
      x.getElementType()));
  return success();
}

LogicalResult SliceOp::verify() {
  int64_t cols = rt(getX()).getDimSize(1);
  // The attributes are non-negative i64 (their getters return uint64_t);
  // compare without computing offset + size, which may overflow.
  auto offset = static_cast<int64_t>(getOffset());
  auto size = static_cast<int64_t>(getSize());
  if (!ShapedType::isDynamic(cols) && (size > cols || offset > cols - size))
    return emitOpError() << "offset " << offset << " + size " << size
                         << " exceeds the " << cols << " columns of x";
  return success();
}

#define COLOSSUS_SAME_TYPE_INFER(OP, FIRST)                                    \
  LogicalResult OP::inferReturnTypes(MLIRContext *, std::optional<Location>,   \
                                     Adaptor adaptor,                          \
                                     SmallVectorImpl<Type> &types) {           \
    types.push_back(adaptor.FIRST().getType());                                \
    return success();                                                          \
  }

COLOSSUS_SAME_TYPE_INFER(SoftmaxOp, getX)
COLOSSUS_SAME_TYPE_INFER(SiluOp, getX)
COLOSSUS_SAME_TYPE_INFER(GeluOp, getX)
COLOSSUS_SAME_TYPE_INFER(SwigluOp, getLhs)
COLOSSUS_SAME_TYPE_INFER(AddOp, getLhs)
COLOSSUS_SAME_TYPE_INFER(MulOp, getLhs)

LogicalResult SoftmaxOp::verify() { return success(); }
LogicalResult SiluOp::verify() { return success(); }
LogicalResult GeluOp::verify() { return success(); }
LogicalResult SwigluOp::verify() {
  return sameShapeAndElem(*this, getLhs(), getRhs(), "gate", "up");
}
LogicalResult AddOp::verify() {
  return sameShapeAndElem(*this, getLhs(), getRhs(), "lhs", "rhs");
}
LogicalResult MulOp::verify() {
  return sameShapeAndElem(*this, getLhs(), getRhs(), "lhs", "rhs");
}

LogicalResult ConvertOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location>,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &types) {
  auto x = dyn_cast<RankedTensorType>(adaptor.getX().getType());
  TypeAttr to = adaptor.getElementTypeAttr();
  if (!x || !to)
    return failure();
  types.push_back(x.clone(to.getValue()));
  return success();
}

LogicalResult ConvertOp::verify() { return success(); }

//===----------------------------------------------------------------------===//
// Training ops
//===----------------------------------------------------------------------===//

namespace {
LogicalResult rowsMatch(Operation *op, Value a, Value b, StringRef aName,
                        StringRef bName) {
  if (!dimsMatch(rt(a).getDimSize(0), rt(b).getDimSize(0)))
    return op->emitOpError()
           << aName << " and " << bName
           << " must have the same number of rows (" << rt(a).getDimSize(0)
           << " vs " << rt(b).getDimSize(0) << ")";
  return success();
}

/// While the custom form is parsed, an attribute written in the attr-dict is
/// in the attribute dictionary, not yet in the properties (see
/// LinearOp::inferReturnTypes): read it from either.
template <typename AttrT>
AttrT inherentAttr(AttrT fromProperties, DictionaryAttr attrs, StringRef name) {
  if (fromProperties)
    return fromProperties;
  return attrs ? attrs.getAs<AttrT>(name) : AttrT();
}

/// A result dimension taken from a positive-integer attribute. A missing or
/// non-positive value (rejected by the op's verifier, which runs after the
/// inference) becomes dynamic rather than an invalid tensor type.
int64_t dimFromAttr(IntegerAttr attr) {
  if (!attr || attr.getInt() <= 0)
    return ShapedType::kDynamic;
  return attr.getInt();
}
} // namespace

LogicalResult CrossEntropyOp::inferReturnTypes(MLIRContext *ctx,
                                               std::optional<Location>, Adaptor,
                                               SmallVectorImpl<Type> &types) {
  types.push_back(RankedTensorType::get({}, Float32Type::get(ctx)));
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  if (!rt(getLogits()).getElementType().isF32())
    return emitOpError("logits must be f32");
  return rowsMatch(*this, getLogits(), getTargets(), "logits", "targets");
}

LogicalResult
CrossEntropyGradOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                     Adaptor adaptor,
                                     SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getLogits().getType());
  return success();
}

LogicalResult CrossEntropyGradOp::verify() {
  if (!rt(getLogits()).getElementType().isF32())
    return emitOpError("logits must be f32");
  return rowsMatch(*this, getLogits(), getTargets(), "logits", "targets");
}

// Parameter gradients (linear_weight_grad, column_sum, the norms' weight and
// bias gradients, embedding_grad) are sums over the token rows: they are
// accumulated and stored in f32 whatever the activations' precision, so a
// bf16 model's gradients reach the f32 master weights unrounded.

LogicalResult
CrossEntropyRowsOp::inferReturnTypes(MLIRContext *ctx, std::optional<Location>,
                                     Adaptor adaptor,
                                     SmallVectorImpl<Type> &types) {
  auto logits = cast<RankedTensorType>(adaptor.getLogits().getType());
  types.push_back(
      RankedTensorType::get({logits.getDimSize(0)}, Float32Type::get(ctx)));
  types.push_back(logits);
  return success();
}

LogicalResult CrossEntropyRowsOp::verify() {
  return rowsMatch(*this, getLogits(), getTargets(), "logits", "targets");
}

LogicalResult RowSumOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location>, Adaptor,
                                         SmallVectorImpl<Type> &types) {
  types.push_back(RankedTensorType::get({}, Float32Type::get(ctx)));
  return success();
}

LogicalResult RowSumOp::verify() { return success(); }

LogicalResult
LinearWeightGradOp::inferReturnTypes(MLIRContext *ctx,
                                     std::optional<Location> loc,
                                     Adaptor adaptor,
                                     SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "x", adaptor.getX(), 2)) ||
      failed(inferRank(loc, getOperationName(), "dy", adaptor.getDy(), 2)))
    return failure();
  auto x = cast<RankedTensorType>(adaptor.getX().getType());
  auto dy = cast<RankedTensorType>(adaptor.getDy().getType());
  BoolAttr t = inherentAttr(adaptor.getTransposeWAttr(),
                            adaptor.getAttributes(), "transpose_w");
  bool transposeW = !t || t.getValue();
  SmallVector<int64_t> shape =
      transposeW ? SmallVector<int64_t>{dy.getDimSize(1), x.getDimSize(1)}
                 : SmallVector<int64_t>{x.getDimSize(1), dy.getDimSize(1)};
  types.push_back(RankedTensorType::get(shape, Float32Type::get(ctx)));
  return success();
}

LogicalResult LinearWeightGradOp::verify() {
  Type xe = rt(getX()).getElementType(), de = rt(getDy()).getElementType();
  if (xe != de && !(xe.isBF16() && de.isF32()))
    return emitOpError("x and dy must have the same element type (or bf16 x "
                       "with an f32 dy)");
  return rowsMatch(*this, getX(), getDy(), "x", "dy");
}

LogicalResult ColumnSumOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "x", adaptor.getX(), 2)))
    return failure();
  auto x = cast<RankedTensorType>(adaptor.getX().getType());
  types.push_back(
      RankedTensorType::get({x.getDimSize(1)}, Float32Type::get(ctx)));
  return success();
}

LogicalResult ColumnSumOp::verify() { return success(); }

/// The f32 form of a parameter's type (its gradient's type).
static Type f32Like(MLIRContext *ctx, Type t) {
  if (auto r = dyn_cast<RankedTensorType>(t))
    return r.clone(Float32Type::get(ctx));
  return t;
}

LogicalResult RmsNormGradOp::inferReturnTypes(MLIRContext *ctx,
                                              std::optional<Location>,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  types.push_back(f32Like(ctx, adaptor.getWeight().getType()));
  return success();
}

LogicalResult RmsNormGradOp::verify() {
  if (!(getEps().convertToDouble() >= 0))
    return emitOpError("eps must be non-negative");
  if (failed(vectorMatches(*this, getX(), getWeight(), "weight")))
    return failure();
  return sameShapeAndElem(*this, getX(), getDy(), "x", "dy");
}

LogicalResult LayerNormGradOp::inferReturnTypes(MLIRContext *ctx,
                                                std::optional<Location>,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getX().getType());
  types.push_back(f32Like(ctx, adaptor.getWeight().getType()));
  types.push_back(f32Like(ctx, adaptor.getWeight().getType()));
  return success();
}

LogicalResult LayerNormGradOp::verify() {
  if (!(getEps().convertToDouble() >= 0))
    return emitOpError("eps must be non-negative");
  if (failed(vectorMatches(*this, getX(), getWeight(), "weight")))
    return failure();
  return sameShapeAndElem(*this, getX(), getDy(), "x", "dy");
}

COLOSSUS_SAME_TYPE_INFER(SiluGradOp, getLhs)
COLOSSUS_SAME_TYPE_INFER(GeluGradOp, getX)
COLOSSUS_SAME_TYPE_INFER(SoftmaxGradOp, getY)
#undef COLOSSUS_SAME_TYPE_INFER

LogicalResult SiluGradOp::verify() { return success(); }
LogicalResult GeluGradOp::verify() { return success(); }
LogicalResult SoftmaxGradOp::verify() { return success(); }

LogicalResult SwigluGradOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location>,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getGate().getType());
  types.push_back(adaptor.getGate().getType());
  return success();
}

LogicalResult SwigluGradOp::verify() { return success(); }

LogicalResult EmbeddingGradOp::inferReturnTypes(MLIRContext *ctx,
                                                std::optional<Location> loc,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "dy", adaptor.getDy(), 2)))
    return failure();
  auto dy = cast<RankedTensorType>(adaptor.getDy().getType());
  // vocab_size is in the attr-dict of the custom form: not in the properties
  // while it is parsed, and possibly missing altogether.
  IntegerAttr vocab = inherentAttr(adaptor.getVocabSizeAttr(),
                                   adaptor.getAttributes(), "vocab_size");
  types.push_back(RankedTensorType::get({dimFromAttr(vocab), dy.getDimSize(1)},
                                        Float32Type::get(ctx)));
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  if (!dimsMatch(rt(getIds()).getDimSize(0), rt(getDy()).getDimSize(0)))
    return emitOpError("ids and dy must have the same number of rows");
  if (Value a = getAddend(); a && rt(a) != getType())
    return emitOpError("addend must have the result's type ")
           << getType() << ", got " << a.getType();
  return success();
}

LogicalResult CacheReadOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  if (failed(
          inferRank(loc, getOperationName(), "cache", adaptor.getCache(), 3)) ||
      failed(inferRank(loc, getOperationName(), "positions",
                       adaptor.getPositions(), 1)))
    return failure();
  auto cache = cast<RankedTensorType>(adaptor.getCache().getType());
  auto pos = cast<RankedTensorType>(adaptor.getPositions().getType());
  types.push_back(RankedTensorType::get(
      {pos.getDimSize(0), cache.getDimSize(2)}, cache.getElementType()));
  return success();
}

LogicalResult CacheReadOp::verify() { return success(); }

LogicalResult PadColumnsOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &types) {
  if (failed(inferRank(loc, getOperationName(), "x", adaptor.getX(), 2)))
    return failure();
  auto x = cast<RankedTensorType>(adaptor.getX().getType());
  types.push_back(RankedTensorType::get(
      {x.getDimSize(0), dimFromAttr(adaptor.getTotalAttr())},
      x.getElementType()));
  return success();
}

LogicalResult PadColumnsOp::verify() {
  int64_t cols = rt(getX()).getDimSize(1);
  int64_t offset = static_cast<int64_t>(getOffset());
  int64_t total = static_cast<int64_t>(getTotal());
  if (!ShapedType::isDynamic(cols) && (offset > total || cols > total - offset))
    return emitOpError() << "offset " << offset << " + " << cols
                         << " columns exceeds total " << total;
  return success();
}

// dq, dk and dv are sums over keys (queries) that the kernels accumulate in
// their output rows: f32, whatever the precision of q, k and v.
LogicalResult AttentionGradOp::inferReturnTypes(MLIRContext *ctx,
                                                std::optional<Location>,
                                                Adaptor adaptor,
                                                SmallVectorImpl<Type> &types) {
  types.push_back(f32Like(ctx, adaptor.getQ().getType()));
  types.push_back(f32Like(ctx, adaptor.getK().getType()));
  types.push_back(f32Like(ctx, adaptor.getV().getType()));
  return success();
}

LogicalResult AttentionGradOp::verify() {
  int64_t h = getNumHeads(), hkv = getNumKvHeads(), hd = getHeadDim();
  if (h % hkv != 0)
    return emitOpError() << "num_heads (" << h
                         << ") must be a multiple of num_kv_heads (" << hkv
                         << ")";
  if (!dimsMatch(rt(getQ()).getDimSize(1), h * hd))
    return emitOpError() << "q has " << rt(getQ()).getDimSize(1)
                         << " columns, expected num_heads * head_dim = "
                         << h * hd;
  if (failed(sameShapeAndElem(*this, getK(), getV(), "k", "v")) ||
      failed(sameShapeAndElem(*this, getQ(), getDout(), "q", "dout")))
    return failure();
  if (rt(getK()).getElementType() != rt(getQ()).getElementType())
    return emitOpError("q and k must have the same element type");
  if (!dimsMatch(rt(getK()).getDimSize(2), hkv * hd))
    return emitOpError() << "k has " << rt(getK()).getDimSize(2)
                         << " columns, expected num_kv_heads * head_dim = "
                         << hkv * hd;
  if (!dimsMatch(rt(getPositions()).getDimSize(0), rt(getQ()).getDimSize(0)))
    return emitOpError("positions must have one entry per row of q");
  if (!dimsMatch(rt(getLse()).getDimSize(0), rt(getQ()).getDimSize(0)) ||
      !dimsMatch(rt(getLse()).getDimSize(1), h))
    return emitOpError() << "lse must be [rows of q, num_heads] ("
                         << rt(getQ()).getDimSize(0) << "x" << h << ")";
  // The getter returns uint64_t: read the stored signed value.
  if (getSlidingWindowAttr().getInt() < 0)
    return emitOpError("sliding_window must be >= 0");
  if (!(getScale().convertToDouble() > 0))
    return emitOpError("scale must be positive");
  return success();
}

LogicalResult AdamwOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  types.push_back(adaptor.getParam().getType());
  types.push_back(adaptor.getParam().getType());
  types.push_back(adaptor.getParam().getType());
  return success();
}

LogicalResult AdamwOp::verify() {
  if (!rt(getParam()).getElementType().isF32())
    return emitOpError("parameters and optimizer state must be f32");
  if (rt(getHyper()).getDimSize(0) != 4)
    return emitOpError("hyper must hold 4 values: lr, 1 - beta1^t, "
                       "1 - beta2^t, grad_scale");
  double b1 = getBeta1().convertToDouble(), b2 = getBeta2().convertToDouble();
  if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1))
    return emitOpError("beta1 and beta2 must be in [0, 1)");
  if (!(getEps().convertToDouble() > 0))
    return emitOpError("eps must be positive");
  if (!(getWeightDecay().convertToDouble() >= 0))
    return emitOpError("weight_decay must be >= 0");
  return success();
}

LogicalResult GlobalNormOp::inferReturnTypes(MLIRContext *ctx,
                                             std::optional<Location>, Adaptor,
                                             SmallVectorImpl<Type> &types) {
  types.push_back(RankedTensorType::get({1}, Float32Type::get(ctx)));
  return success();
}

LogicalResult GlobalNormOp::verify() {
  if (rt(getHyper()).getDimSize(0) != 5)
    return emitOpError("hyper must hold 5 values: lr, 1 - beta1^t, "
                       "1 - beta2^t, max_norm, grad_scale");
  if (getTensors().empty())
    return emitOpError("needs at least one tensor");
  for (Value t : getTensors())
    if (!rt(t).getElementType().isF32())
      return emitOpError("tensors must be f32");
  return success();
}

LogicalResult ClipHyperOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location>, Adaptor,
                                            SmallVectorImpl<Type> &types) {
  types.push_back(RankedTensorType::get({4}, Float32Type::get(ctx)));
  return success();
}

LogicalResult ClipHyperOp::verify() {
  if (rt(getHyperIn()).getDimSize(0) != 5)
    return emitOpError("hyper_in must hold 5 values: lr, 1 - beta1^t, "
                       "1 - beta2^t, max_norm, grad_scale");
  if (rt(getNorm()).getDimSize(0) != 1)
    return emitOpError("norm must hold 1 value");
  return success();
}

//===----------------------------------------------------------------------===//
// fusion
//===----------------------------------------------------------------------===//

void FusionOp::getAsmBlockArgumentNames(Region &region,
                                        OpAsmSetValueNameFn setNameFn) {
  for (BlockArgument arg : region.getArguments())
    setNameFn(arg, "in");
}

LogicalResult FusionOp::verify() {
  Block &block = getBody().front();
  if (block.getNumArguments() != getInputs().size())
    return emitOpError() << "region has " << block.getNumArguments()
                         << " arguments but the op has " << getInputs().size()
                         << " inputs";
  for (auto [i, pair] :
       llvm::enumerate(llvm::zip(block.getArguments(), getInputs())))
    if (std::get<0>(pair).getType() != std::get<1>(pair).getType())
      return emitOpError() << "region argument " << i
                           << " type does not match input " << i;
  // The terminator is not verified yet (nested blocks are verified after
  // their op): the last op may be anything.
  auto yield = dyn_cast<YieldOp>(block.back());
  if (!yield)
    return emitOpError("region must end with colossus.yield");
  if (yield.getValues().getTypes() != getResultTypes())
    return emitOpError("yielded types do not match the results");
  if (getKind().empty())
    return emitOpError("kind must not be empty");
  return success();
}

#define GET_OP_CLASSES
#include "colossus/Dialect/Colossus/IR/ColossusOps.cpp.inc"
