//===- ImportModel.cpp - Model description to colossus IR -----------------===//
//
// Emits the forward step of a model as colossus ops. All layers of a family
// share one private layer function, so the kernels generated for it are
// compiled once however many layers the model has.
//
//===----------------------------------------------------------------------===//
#include "colossus/Compiler/ImportModel.h"
#include "colossus/Dialect/Colossus/IR/ColossusOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <cmath>

using namespace mlir;
using namespace colossus;

namespace {

struct ParamSpec {
  std::string name; // HF name (layer params: suffix after the layer prefix)
  SmallVector<int64_t> shape;
  const char *init;
};

class Importer {
public:
  Importer(MLIRContext *ctx, const ModelConfig &c, StringRef file,
           int64_t batch, int64_t seq, bool train, Precision precision)
      : ctx(ctx), c(c), b(ctx), batch(batch), seq(seq), train(train),
        fileLoc(FileLineColLoc::get(ctx, file, 1, 1)) {
    f32 = b.getF32Type();
    act = precision == Precision::BF16 ? Type(b.getBF16Type()) : f32;
    i32 = b.getI32Type();
    T = batch * seq;
  }

  OwningOpRef<ModuleOp> run();

private:
  Location loc(StringRef name) {
    return NameLoc::get(b.getStringAttr(name), fileLoc);
  }
  RankedTensorType mat(int64_t r, int64_t cols) {
    return RankedTensorType::get({r, cols}, act);
  }
  RankedTensorType tensorOf(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, act);
  }
  RankedTensorType cacheType() {
    return RankedTensorType::get({batch, seq, c.numKvHeads * c.headDim}, act);
  }

  std::vector<ParamSpec> layerParams() const;
  std::string layerPrefix(int64_t i) const {
    return c.family == ModelFamily::Llama
               ? "model.layers." + std::to_string(i) + "."
               : "h." + std::to_string(i) + ".";
  }
  func::FuncOp beginLayerFunc(ModuleOp m, StringRef name);
  func::FuncOp buildLlamaLayer(ModuleOp m);
  func::FuncOp buildGPT2Layer(ModuleOp m);
  Value rope(Value x, Value pos, StringRef name);
  Value attention(Value q, Value k, Value v, Value pos);

  MLIRContext *ctx;
  const ModelConfig &c;
  OpBuilder b;
  int64_t batch, seq, T;
  bool train;
  Location fileLoc;
  Type f32, i32;
  Type act; // parameters, activations, caches: f32 or bf16
};

std::vector<ParamSpec> Importer::layerParams() const {
  int64_t d = c.hiddenSize, f = c.intermediateSize;
  int64_t q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  if (c.family == ModelFamily::Llama)
    return {{"input_layernorm.weight", {d}, "ones"},
            {"self_attn.q_proj.weight", {q, d}, "normal"},
            {"self_attn.k_proj.weight", {kv, d}, "normal"},
            {"self_attn.v_proj.weight", {kv, d}, "normal"},
            {"self_attn.o_proj.weight", {d, q}, "normal"},
            {"post_attention_layernorm.weight", {d}, "ones"},
            {"mlp.gate_proj.weight", {f, d}, "normal"},
            {"mlp.up_proj.weight", {f, d}, "normal"},
            {"mlp.down_proj.weight", {d, f}, "normal"}};
  return {{"ln_1.weight", {d}, "ones"},
          {"ln_1.bias", {d}, "zeros"},
          {"attn.c_attn.weight", {d, 3 * d}, "normal"},
          {"attn.c_attn.bias", {3 * d}, "zeros"},
          {"attn.c_proj.weight", {d, d}, "normal"},
          {"attn.c_proj.bias", {d}, "zeros"},
          {"ln_2.weight", {d}, "ones"},
          {"ln_2.bias", {d}, "zeros"},
          {"mlp.c_fc.weight", {d, f}, "normal"},
          {"mlp.c_fc.bias", {f}, "zeros"},
          {"mlp.c_proj.weight", {f, d}, "normal"},
          {"mlp.c_proj.bias", {d}, "zeros"}};
}

Value Importer::rope(Value x, Value pos, StringRef name) {
  RopeScaling scaling = c.ropeScaling == "llama3"   ? RopeScaling::llama3
                        : c.ropeScaling == "linear" ? RopeScaling::linear
                                                    : RopeScaling::none;
  auto op = b.create<RopeOp>(loc(name), x, pos, b.getI64IntegerAttr(c.headDim),
                             b.getF64FloatAttr(c.ropeTheta),
                             RopeLayoutAttr::get(ctx, RopeLayout::rotate_half),
                             RopeScalingAttr::get(ctx, scaling),
                             b.getF64FloatAttr(c.ropeFactor),
                             b.getF64FloatAttr(c.ropeLowFreqFactor),
                             b.getF64FloatAttr(c.ropeHighFreqFactor),
                             b.getI64IntegerAttr(c.ropeOriginalMaxPositions),
                             /*inverse=*/BoolAttr());
  return op.getResult();
}

Value Importer::attention(Value q, Value k, Value v, Value pos) {
  return b
      .create<AttentionOp>(
          loc("self_attn"), q, k, v, pos, b.getI64IntegerAttr(c.numHeads),
          b.getI64IntegerAttr(c.numKvHeads), b.getI64IntegerAttr(c.headDim),
          b.getF64FloatAttr(1.0 / std::sqrt(static_cast<double>(c.headDim))),
          b.getBoolAttr(true), b.getI64IntegerAttr(c.slidingWindow),
          /*save_lse=*/UnitAttr())
      .getResult();
}

/// A private layer function `(x, layer params..., k cache, v cache) ->
/// (x, k cache, v cache)` with the builder at the start of its body.
func::FuncOp Importer::beginLayerFunc(ModuleOp m, StringRef name) {
  SmallVector<Type> args = {mat(T, c.hiddenSize)};
  for (const ParamSpec &p : layerParams())
    args.push_back(tensorOf(p.shape));
  args.push_back(cacheType());
  args.push_back(cacheType());
  auto fnType =
      b.getFunctionType(args, {mat(T, c.hiddenSize), cacheType(), cacheType()});
  b.setInsertionPointToEnd(m.getBody());
  auto fn = b.create<func::FuncOp>(loc("layer"), name, fnType);
  fn.setPrivate();
  b.setInsertionPointToStart(fn.addEntryBlock());
  return fn;
}

func::FuncOp Importer::buildLlamaLayer(ModuleOp m) {
  func::FuncOp fn = beginLayerFunc(m, "llama_layer");
  auto a = fn.getBody().front().getArguments();
  Value x = a[0], inNorm = a[1], wq = a[2], wk = a[3], wv = a[4], wo = a[5],
        postNorm = a[6], wg = a[7], wu = a[8], wd = a[9], kc = a[10],
        vc = a[11];
  Value pos = b.create<PositionsOp>(loc("positions"), T);
  FloatAttr eps = b.getF64FloatAttr(c.normEps);
  Value h = b.create<RmsNormOp>(loc("input_layernorm"), x, inNorm, eps);
  Value q = b.create<LinearOp>(loc("self_attn.q_proj"), h, wq, Value());
  Value k = b.create<LinearOp>(loc("self_attn.k_proj"), h, wk, Value());
  Value v = b.create<LinearOp>(loc("self_attn.v_proj"), h, wv, Value());
  Value qr = rope(q, pos, "self_attn.rotary_emb");
  Value kr = rope(k, pos, "self_attn.rotary_emb");
  Value kc2 = b.create<CacheWriteOp>(loc("self_attn.k_cache"), kc, kr, pos);
  Value vc2 = b.create<CacheWriteOp>(loc("self_attn.v_cache"), vc, v, pos);
  Value att = attention(qr, kc2, vc2, pos);
  Value o = b.create<LinearOp>(loc("self_attn.o_proj"), att, wo, Value());
  Value x2 = b.create<AddOp>(loc("residual"), x, o);
  Value h2 =
      b.create<RmsNormOp>(loc("post_attention_layernorm"), x2, postNorm, eps);
  Value g = b.create<LinearOp>(loc("mlp.gate_proj"), h2, wg, Value());
  Value u = b.create<LinearOp>(loc("mlp.up_proj"), h2, wu, Value());
  Value s = b.create<SwigluOp>(loc("mlp.act_fn"), g, u);
  Value dn = b.create<LinearOp>(loc("mlp.down_proj"), s, wd, Value());
  Value x3 = b.create<AddOp>(loc("residual"), x2, dn);
  b.create<func::ReturnOp>(loc("layer"), ValueRange{x3, kc2, vc2});
  return fn;
}

func::FuncOp Importer::buildGPT2Layer(ModuleOp m) {
  func::FuncOp fn = beginLayerFunc(m, "gpt2_layer");
  auto a = fn.getBody().front().getArguments();
  Value x = a[0], ln1w = a[1], ln1b = a[2], attnW = a[3], attnB = a[4],
        projW = a[5], projB = a[6], ln2w = a[7], ln2b = a[8], fcW = a[9],
        fcB = a[10], fcProjW = a[11], fcProjB = a[12], kc = a[13], vc = a[14];
  int64_t d = c.hiddenSize;
  FloatAttr eps = b.getF64FloatAttr(c.normEps);
  Value pos = b.create<PositionsOp>(loc("positions"), T);
  Value h = b.create<LayerNormOp>(loc("ln_1"), x, ln1w, ln1b, eps);
  auto conv1d = [&](StringRef name, Value in, Value w, Value bias) -> Value {
    return b.create<LinearOp>(loc(name), in, w, bias, b.getBoolAttr(false));
  };
  Value qkv = conv1d("attn.c_attn", h, attnW, attnB);
  Value q = b.create<SliceOp>(loc("attn.q"), qkv, 0, d);
  Value k = b.create<SliceOp>(loc("attn.k"), qkv, d, d);
  Value v = b.create<SliceOp>(loc("attn.v"), qkv, 2 * d, d);
  Value kc2 = b.create<CacheWriteOp>(loc("attn.k_cache"), kc, k, pos);
  Value vc2 = b.create<CacheWriteOp>(loc("attn.v_cache"), vc, v, pos);
  Value att = attention(q, kc2, vc2, pos);
  Value o = conv1d("attn.c_proj", att, projW, projB);
  Value x2 = b.create<AddOp>(loc("residual"), x, o);
  Value h2 = b.create<LayerNormOp>(loc("ln_2"), x2, ln2w, ln2b, eps);
  Value fc = conv1d("mlp.c_fc", h2, fcW, fcB);
  Value act =
      b.create<GeluOp>(loc("mlp.act"), fc,
                       GeluApproxAttr::get(ctx, c.geluTanh ? GeluApprox::tanh
                                                           : GeluApprox::erf));
  Value mo = conv1d("mlp.c_proj", act, fcProjW, fcProjB);
  Value x3 = b.create<AddOp>(loc("residual"), x2, mo);
  b.create<func::ReturnOp>(loc("layer"), ValueRange{x3, kc2, vc2});
  return fn;
}

OwningOpRef<ModuleOp> Importer::run() {
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  ModuleOp m = *module;
  bool llama = c.family == ModelFamily::Llama;
  int64_t d = c.hiddenSize;

  NamedAttrList model;
  model.append("family", b.getStringAttr(llama ? "llama" : "gpt2"));
  model.append("name", b.getStringAttr(c.name));
  model.append("vocab_size", b.getI64IntegerAttr(c.vocabSize));
  model.append("hidden_size", b.getI64IntegerAttr(d));
  model.append("num_layers", b.getI64IntegerAttr(c.numLayers));
  model.append("num_heads", b.getI64IntegerAttr(c.numHeads));
  model.append("num_kv_heads", b.getI64IntegerAttr(c.numKvHeads));
  model.append("head_dim", b.getI64IntegerAttr(c.headDim));
  model.append("max_position_embeddings", b.getI64IntegerAttr(c.maxPositions));
  model.append("bos_token_id", b.getI64IntegerAttr(c.bosTokenId));
  model.append("eos_token_id", b.getI64IntegerAttr(c.eosTokenId));
  m->setAttr(attrs::kModel, model.getDictionary(ctx));
  m->setAttr(attrs::kBatch, b.getI64IntegerAttr(batch));
  m->setAttr(attrs::kSeq, b.getI64IntegerAttr(seq));

  func::FuncOp layer = llama ? buildLlamaLayer(m) : buildGPT2Layer(m);

  // The step function's arguments: tokens, parameters, then KV caches.
  SmallVector<Type> argTypes;
  SmallVector<NamedAttrList> argAttrs;
  auto addArg = [&](Type t, NamedAttrList attrsList) {
    argTypes.push_back(t);
    argAttrs.push_back(attrsList);
    return argTypes.size() - 1;
  };
  auto paramAttrs = [&](StringRef name, StringRef init) {
    NamedAttrList l;
    l.append(attrs::kParam, b.getStringAttr(name));
    l.append(attrs::kInit, b.getStringAttr(init));
    return l;
  };
  NamedAttrList tokAttrs;
  tokAttrs.append(attrs::kInput, b.getStringAttr("tokens"));
  size_t tokensArg = addArg(RankedTensorType::get({T}, i32), tokAttrs);
  size_t targetsArg = 0;
  if (train) {
    NamedAttrList targetAttrs;
    targetAttrs.append(attrs::kInput, b.getStringAttr("targets"));
    targetsArg = addArg(RankedTensorType::get({T}, i32), targetAttrs);
  }
  std::string embedName = llama ? "model.embed_tokens.weight" : "wte.weight";
  size_t embedArg =
      addArg(mat(c.vocabSize, d), paramAttrs(embedName, "normal"));
  size_t posEmbedArg = 0;
  if (!llama)
    posEmbedArg =
        addArg(mat(c.maxPositions, d), paramAttrs("wpe.weight", "normal"));
  std::vector<ParamSpec> ps = layerParams();
  SmallVector<SmallVector<size_t>> layerArgs(c.numLayers);
  for (int64_t i = 0; i < c.numLayers; ++i)
    for (const ParamSpec &p : ps)
      layerArgs[i].push_back(addArg(
          tensorOf(p.shape), paramAttrs(layerPrefix(i) + p.name, p.init)));
  size_t finalNormArg =
      addArg(tensorOf({d}),
             paramAttrs(llama ? "model.norm.weight" : "ln_f.weight", "ones"));
  size_t finalBiasArg = 0;
  if (!llama)
    finalBiasArg = addArg(tensorOf({d}), paramAttrs("ln_f.bias", "zeros"));
  size_t headArg = embedArg;
  if (!c.tieWordEmbeddings)
    headArg =
        addArg(mat(c.vocabSize, d), paramAttrs("lm_head.weight", "normal"));
  SmallVector<std::pair<size_t, size_t>> cacheArgs;
  for (int64_t i = 0; i < c.numLayers; ++i) {
    NamedAttrList k, v;
    k.append(attrs::kState,
             b.getStringAttr("kv_cache." + std::to_string(i) + ".k"));
    v.append(attrs::kState,
             b.getStringAttr("kv_cache." + std::to_string(i) + ".v"));
    size_t ka = addArg(cacheType(), k);
    size_t va = addArg(cacheType(), v);
    cacheArgs.push_back({ka, va});
  }

  // Forward: logits and the updated caches. Train: the mean token cross
  // entropy against the targets (the caches are per-step scratch).
  SmallVector<Type> resultTypes;
  if (train) {
    resultTypes.push_back(RankedTensorType::get({}, f32));
  } else {
    resultTypes.push_back(RankedTensorType::get({T, c.vocabSize}, f32));
    for (int64_t i = 0; i < c.numLayers; ++i) {
      resultTypes.push_back(cacheType());
      resultTypes.push_back(cacheType());
    }
  }
  b.setInsertionPointToEnd(m.getBody());
  StringRef fnName = train ? "loss" : "forward";
  auto fn = b.create<func::FuncOp>(loc(fnName), fnName,
                                   b.getFunctionType(argTypes, resultTypes));
  for (auto [i, l] : llvm::enumerate(argAttrs))
    fn.setArgAttrs(i, l.getDictionary(ctx));
  NamedAttrList outAttrs;
  outAttrs.append(attrs::kOutput, b.getStringAttr(train ? "loss" : "logits"));
  fn.setResultAttrs(0, outAttrs.getDictionary(ctx));

  Block *body = fn.addEntryBlock();
  b.setInsertionPointToStart(body);
  auto arg = [&](size_t i) { return body->getArgument(i); };
  Value x =
      b.create<EmbeddingOp>(loc(embedName), arg(embedArg), arg(tokensArg));
  if (!llama) {
    Value pos = b.create<PositionsOp>(loc("positions"), T);
    Value pe = b.create<EmbeddingOp>(loc("wpe.weight"), arg(posEmbedArg), pos);
    x = b.create<AddOp>(loc("embeddings"), x, pe);
  }
  SmallVector<Value> caches;
  for (int64_t i = 0; i < c.numLayers; ++i) {
    SmallVector<Value> operands = {x};
    for (size_t a : layerArgs[i])
      operands.push_back(arg(a));
    operands.push_back(arg(cacheArgs[i].first));
    operands.push_back(arg(cacheArgs[i].second));
    auto call =
        b.create<func::CallOp>(loc(layerPrefix(i) + "layer"), layer, operands);
    x = call.getResult(0);
    caches.push_back(call.getResult(1));
    caches.push_back(call.getResult(2));
  }
  Value h;
  if (llama)
    h = b.create<RmsNormOp>(loc("model.norm"), x, arg(finalNormArg),
                            b.getF64FloatAttr(c.normEps));
  else
    h = b.create<LayerNormOp>(loc("ln_f"), x, arg(finalNormArg),
                              arg(finalBiasArg), b.getF64FloatAttr(c.normEps));
  Value logits = b.create<LinearOp>(loc("lm_head"), h, arg(headArg), Value());
  if (act != f32)
    logits = b.create<ConvertOp>(loc("lm_head"), logits, TypeAttr::get(f32));
  if (train) {
    Value loss = b.create<CrossEntropyOp>(loc("loss"), logits, arg(targetsArg),
                                          IntegerAttr());
    b.create<func::ReturnOp>(loc("loss"), ValueRange{loss});
    return module;
  }
  SmallVector<Value> results = {logits};
  results.append(caches.begin(), caches.end());
  b.create<func::ReturnOp>(loc("forward"), results);
  return module;
}

} // namespace

OwningOpRef<ModuleOp> colossus::importModel(MLIRContext *ctx,
                                            const ModelConfig &config,
                                            StringRef file, int64_t batch,
                                            int64_t seq, bool train,
                                            Precision precision) {
  ctx->loadDialect<ColossusDialect, func::FuncDialect>();
  Importer imp(ctx, config, file, batch, seq, train, precision);
  return imp.run();
}
