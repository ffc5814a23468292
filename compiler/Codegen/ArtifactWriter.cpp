//===- ArtifactWriter.cpp - FlatBuffers artifact emission -----------------===//
#include "colossus/Compiler/ArtifactWriter.h"
#include "colossus/Compiler/HopperAttention.h"

#include "colossus/runtime/ArtifactChecksum.h"
#include "colossus/schema/colossus_generated.h"

#include "llvm/ADT/StringExtras.h"

#include <map>

using namespace colossus;
namespace fb = flatbuffers;
namespace s = colossus::schema;

namespace {
/// A bf16, 128-byte swizzled tensor map of `arg` over a row-major tensor
/// (`dims` innermost first, dense) read in boxes `box`.
TensorMapRecord bf16Map(int64_t arg, std::vector<uint64_t> dims,
                        std::vector<uint32_t> box) {
  TensorMapRecord t;
  t.arg = static_cast<unsigned>(arg);
  t.dataType = static_cast<uint8_t>(schema::TensorMapDataType::bfloat16);
  t.rank = static_cast<unsigned>(dims.size());
  uint64_t stride = 2;
  for (size_t d = 0; d + 1 < dims.size(); ++d) {
    stride *= dims[d];
    t.globalStrides.push_back(stride);
  }
  t.globalDim = std::move(dims);
  t.boxDim = std::move(box);
  t.elementStrides.assign(t.rank, 1);
  t.interleave = static_cast<uint8_t>(schema::TensorMapInterleave::none);
  t.swizzle = static_cast<uint8_t>(schema::TensorMapSwizzle::b128);
  t.l2Promotion = static_cast<uint8_t>(schema::TensorMapL2Promotion::b256);
  t.oobFill = static_cast<uint8_t>(schema::TensorMapOobFill::none);
  return t;
}

/// The launch ABI of the Hopper attention forward (docs/hopper-attention.md
/// "Launch ABI") and of its backward kernels (`backward`, "Backward"): q
/// (and, backward, dout) [T, h*d] as 2-D maps read in [rows, 64] boxes, the
/// k and v caches [B, S, kvh*d] as 3-D maps read in [1, bn, 64] boxes. The
/// query rows per box are `bm` (forward) or `bq` (backward).
template <typename Number, typename Triple, typename Bad>
llvm::Error applyAttentionLaunchAbi(KernelRecord &k, Number &number,
                                    Triple &triple, Bad &bad, bool backward) {
  int64_t b, s, t, h, kvh, d, rows, bn, smem, qArg, kArg, vArg, doArg = -1;
  llvm::SmallVector<std::pair<const char *, int64_t *>> keys = {
      {"b", &b},
      {"s", &s},
      {"t", &t},
      {"h", &h},
      {"kvh", &kvh},
      {"d", &d},
      {backward ? "bq" : "bm", &rows},
      {"bn", &bn},
      {"dynamic_smem", &smem},
      {"q_arg", &qArg},
      {"k_arg", &kArg},
      {"v_arg", &vArg}};
  if (backward)
    keys.push_back({"dout_arg", &doArg});
  for (auto [key, out] : keys)
    if (llvm::Error e = number(key, *out))
      return e;
  if (llvm::Error e = triple("grid", k.grid))
    return e;
  if (llvm::Error e = triple("block", k.block))
    return e;
  if (b <= 0 || s <= 0 || t <= 0 || h <= 0 || kvh <= 0 || d % 64 != 0 ||
      d <= 0 || rows <= 0 || rows > 256 || bn <= 0 || bn > 256 || smem < 0)
    return bad("a value is out of range");
  llvm::SmallVector<int64_t> mapArgs = {qArg, kArg, vArg};
  if (backward)
    mapArgs.push_back(doArg);
  for (int64_t arg : mapArgs)
    if (arg < 0 || arg >= k.numArgs)
      return bad("a tensor-map argument is out of range");
  k.dynamicSmemBytes = static_cast<unsigned>(smem);
  k.blockDim = k.block[0] * k.block[1] * k.block[2];
  auto u64 = [](int64_t v) { return static_cast<uint64_t>(v); };
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  k.tensorMaps = {
      bf16Map(qArg, {u64(h * d), u64(t)}, {64, u32(rows)}),
      bf16Map(kArg, {u64(kvh * d), u64(s), u64(b)}, {64, u32(bn), 1}),
      bf16Map(vArg, {u64(kvh * d), u64(s), u64(b)}, {64, u32(bn), 1})};
  if (backward)
    k.tensorMaps.push_back(
        bf16Map(doArg, {u64(h * d), u64(t)}, {64, u32(rows)}));
  return llvm::Error::success();
}
} // namespace

llvm::Error colossus::applyLaunchAbi(KernelRecord &k) {
  if (k.gpu.abi.empty())
    return llvm::Error::success();
  std::map<std::string, std::string, std::less<>> kv;
  llvm::SmallVector<llvm::StringRef> items;
  llvm::StringRef(k.gpu.abi).split(items, ' ', -1, false);
  for (llvm::StringRef item : items) {
    auto [key, value] = item.split('=');
    kv[key.str()] = value.str();
  }
  auto bad = [&](const llvm::Twine &what) {
    return llvm::createStringError("internal error: kernel " + k.name +
                                   ": launch ABI '" + k.gpu.abi + "': " + what);
  };
  auto number = [&](llvm::StringRef key, int64_t &out) -> llvm::Error {
    auto it = kv.find(key);
    if (it == kv.end())
      return bad("no " + key);
    if (llvm::StringRef(it->second).getAsInteger(10, out))
      return bad(key + "=" + it->second + " is not an integer");
    return llvm::Error::success();
  };
  auto triple = [&](llvm::StringRef key,
                    std::vector<uint32_t> &out) -> llvm::Error {
    auto it = kv.find(key);
    if (it == kv.end())
      return bad("no " + key);
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(it->second).split(parts, ',');
    out.clear();
    for (llvm::StringRef p : parts) {
      uint32_t v = 0;
      if (p.getAsInteger(10, v) || v == 0)
        return bad(key + "=" + it->second + " is not 3 positive integers");
      out.push_back(v);
    }
    if (out.size() != 3)
      return bad(key + "=" + it->second + " is not 3 positive integers");
    return llvm::Error::success();
  };
  if (k.gpu.abiAttr == kHopperAttentionAbiAttr)
    return applyAttentionLaunchAbi(k, number, triple, bad, /*backward=*/false);
  if (k.gpu.abiAttr == kHopperAttentionBwdAbiAttr)
    return applyAttentionLaunchAbi(k, number, triple, bad, /*backward=*/true);
  // Comma-separated lists of integers (a_arg, b_arg, kparts).
  auto numbers = [&](llvm::StringRef key,
                     std::vector<int64_t> &out) -> llvm::Error {
    auto it = kv.find(key);
    if (it == kv.end())
      return bad("no " + key);
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(it->second).split(parts, ',');
    out.clear();
    for (llvm::StringRef p : parts) {
      int64_t v = 0;
      if (p.getAsInteger(10, v))
        return bad(key + "=" + it->second + " is not a list of integers");
      out.push_back(v);
    }
    return llvm::Error::success();
  };
  int64_t m, n, kk, bm, bn, bk, smem;
  for (auto [key, out] : {std::pair<const char *, int64_t *>{"m", &m},
                          {"n", &n},
                          {"k", &kk},
                          {"bm", &bm},
                          {"bn", &bn},
                          {"bk", &bk},
                          {"dynamic_smem", &smem}})
    if (llvm::Error e = number(key, *out))
      return e;
  std::vector<int64_t> aArgs, bArgs, kParts = {kk};
  if (llvm::Error e = numbers("a_arg", aArgs))
    return e;
  if (llvm::Error e = numbers("b_arg", bArgs))
    return e;
  if (kv.count("kparts"))
    if (llvm::Error e = numbers("kparts", kParts))
      return e;
  int64_t b2Arg = -1;
  if (kv.count("b2_arg"))
    if (llvm::Error e = number("b2_arg", b2Arg))
      return e;
  // Operand layouts (docs/hopper-gemm.md "Launch ABI"): k = K-contiguous
  // (A [M, K], B [N, K]), mn = M- or N-contiguous (A [K, M], B [K, N]).
  auto layout = [&](llvm::StringRef key, bool &mn) -> llvm::Error {
    auto it = kv.find(key);
    mn = false;
    if (it == kv.end() || it->second == "k")
      return llvm::Error::success();
    if (it->second != "mn")
      return bad(key + "=" + it->second + " is neither k nor mn");
    mn = true;
    return llvm::Error::success();
  };
  bool aMn = false, bMn = false;
  if (llvm::Error e = layout("a_layout", aMn))
    return e;
  if (llvm::Error e = layout("b_layout", bMn))
    return e;
  if (llvm::Error e = triple("grid", k.grid))
    return e;
  if (llvm::Error e = triple("block", k.block))
    return e;
  int64_t kSum = 0;
  for (int64_t p : kParts)
    kSum += p;
  auto argOk = [&](int64_t a) { return a >= 0 && a < k.numArgs; };
  if (m <= 0 || n <= 0 || kk <= 0 || bm <= 0 || bn <= 0 || bk <= 0 ||
      smem < 0 || aArgs.empty() || aArgs.size() != bArgs.size() ||
      aArgs.size() != kParts.size() || kSum != kk ||
      !llvm::all_of(aArgs, argOk) || !llvm::all_of(bArgs, argOk) ||
      !llvm::all_of(kParts, [](int64_t p) { return p > 0; }) ||
      (b2Arg != -1 && (!argOk(b2Arg) || aArgs.size() != 1)))
    return bad("a value is out of range");
  k.dynamicSmemBytes = static_cast<unsigned>(smem);
  k.blockDim = k.block[0] * k.block[1] * k.block[2];
  // bf16, row-major, 128-byte swizzle. A K-contiguous operand of `rows`
  // rows: globalDim {K, rows}, box {64, box rows}; an M/N-contiguous one
  // ([K, rows] in memory): globalDim {rows, K}, box {64, 64} (one 64-wide
  // slice of the tile per TMA load).
  k.tensorMaps.clear();
  auto map = [&](int64_t arg, bool mn, int64_t rows, int64_t kPart,
                 int64_t boxRows) -> llvm::Error {
    TensorMapRecord t;
    t.arg = static_cast<unsigned>(arg);
    t.dataType = static_cast<uint8_t>(schema::TensorMapDataType::bfloat16);
    t.rank = 2;
    uint64_t inner = static_cast<uint64_t>(mn ? rows : kPart);
    uint64_t outer = static_cast<uint64_t>(mn ? kPart : rows);
    t.globalDim = {inner, outer};
    t.globalStrides = {inner * 2};
    t.boxDim = {static_cast<uint32_t>(bk),
                static_cast<uint32_t>(mn ? 64 : boxRows)};
    t.elementStrides = {1, 1};
    t.interleave = static_cast<uint8_t>(schema::TensorMapInterleave::none);
    t.swizzle = static_cast<uint8_t>(schema::TensorMapSwizzle::b128);
    t.l2Promotion = static_cast<uint8_t>(schema::TensorMapL2Promotion::b256);
    t.oobFill = static_cast<uint8_t>(schema::TensorMapOobFill::none);
    // An argument used twice (the dual GEMM's shared A) has one map.
    for (const TensorMapRecord &o : k.tensorMaps) {
      if (o.arg != t.arg)
        continue;
      if (o.globalDim != t.globalDim || o.boxDim != t.boxDim)
        return bad("argument " + llvm::Twine(arg) +
                   " is two operands with different tensor maps");
      return llvm::Error::success();
    }
    k.tensorMaps.push_back(t);
    return llvm::Error::success();
  };
  for (size_t i = 0; i < aArgs.size(); ++i) {
    if (llvm::Error e = map(aArgs[i], aMn, m, kParts[i], bm))
      return e;
    if (llvm::Error e = map(bArgs[i], bMn, n, kParts[i], bn))
      return e;
  }
  if (b2Arg >= 0)
    if (llvm::Error e = map(b2Arg, bMn, n, kParts[0], bn))
      return e;
  return llvm::Error::success();
}

std::vector<uint8_t> colossus::writeArtifact(const ArtifactInputs &in) {
  fb::FlatBufferBuilder b(1 << 20);
  b.ForceDefaults(true);
  const ModelConfig &c = *in.config;
  const StepPlan &plan = *in.plan;

  std::map<std::string, unsigned> kernelIndex;
  std::vector<fb::Offset<s::Kernel>> kernels;
  for (const KernelRecord &k : in.kernels) {
    kernelIndex[k.name] = kernels.size();
    std::vector<fb::Offset<fb::String>> ops;
    for (const std::string &op : k.fusedOps)
      ops.push_back(b.CreateString(op));
    double tokens = static_cast<double>(in.batch * in.seq);
    auto name = b.CreateString(k.name);
    auto kind = b.CreateString(k.kind);
    auto fused = b.CreateVector(ops);
    fb::Offset<fb::String> ptx;
    fb::Offset<fb::Vector<uint8_t>> cubin;
    fb::Offset<fb::Vector<uint32_t>> grid, block;
    fb::Offset<fb::Vector<fb::Offset<s::TensorMap>>> tensorMaps;
    if (in.gpu && !k.grid.empty()) {
      grid = b.CreateVector(k.grid);
      block = b.CreateVector(k.block);
      std::vector<fb::Offset<s::TensorMap>> maps;
      for (const TensorMapRecord &t : k.tensorMaps)
        maps.push_back(s::CreateTensorMap(
            b, t.arg, static_cast<s::TensorMapDataType>(t.dataType), t.rank,
            b.CreateVector(t.globalDim), b.CreateVector(t.globalStrides),
            b.CreateVector(t.boxDim), b.CreateVector(t.elementStrides),
            static_cast<s::TensorMapInterleave>(t.interleave),
            static_cast<s::TensorMapSwizzle>(t.swizzle),
            static_cast<s::TensorMapL2Promotion>(t.l2Promotion),
            static_cast<s::TensorMapOobFill>(t.oobFill)));
      tensorMaps = b.CreateVector(maps);
    }
    if (in.gpu) {
      ptx = b.CreateString(k.gpu.ptx);
      cubin = b.CreateVector(k.gpu.cubin);
    }
    s::KernelBuilder kb(b);
    kb.add_name(name);
    kb.add_kind(kind);
    kb.add_fused_ops(fused);
    kb.add_rows(k.fixedRows ? s::RowExtent::fixed : s::RowExtent::tokens);
    kb.add_fixed_rows(k.fixedRows);
    kb.add_cols(k.cols);
    kb.add_num_args(k.numArgs);
    kb.add_block_dim(in.gpu ? k.blockDim : 0);
    // The launch's dynamic shared memory: ptxas's figure (k.gpu) is the
    // static shared memory, which the cubin carries itself; passing it again
    // at launch would reserve it twice.
    kb.add_shared_mem_bytes(!in.gpu ? 0 : k.dynamicSmemBytes.value_or(0));
    kb.add_registers(in.gpu ? k.gpu.registers : 0);
    kb.add_spill_bytes(in.gpu ? k.gpu.spillBytes : 0);
    kb.add_flops_per_token(k.flops / tokens);
    kb.add_bytes_per_token(k.bytes / tokens);
    if (in.gpu) {
      kb.add_ptx(ptx);
      kb.add_cubin(cubin);
    }
    if (in.gpu && !k.grid.empty()) {
      kb.add_grid(grid);
      kb.add_block(block);
      kb.add_tensor_maps(tensorMaps);
    }
    kernels.push_back(kb.Finish());
  }

  std::vector<fb::Offset<s::Buffer>> buffers;
  std::vector<fb::Offset<s::Param>> params;
  std::map<std::string, int32_t> masterOf; // param name -> master buffer
  for (auto [i, pb] : llvm::enumerate(plan.buffers))
    if (pb.kind == BufferKind::Master)
      masterOf[pb.name] = static_cast<int32_t>(i);
  for (auto [i, pb] : llvm::enumerate(plan.buffers)) {
    auto name = b.CreateString(pb.name);
    auto shape = b.CreateVector(pb.shape);
    s::BufferKind kind = s::BufferKind::arena;
    switch (pb.kind) {
    case BufferKind::Param:
      kind = s::BufferKind::param;
      break;
    case BufferKind::State:
      kind = s::BufferKind::state;
      break;
    case BufferKind::Arena:
      kind = s::BufferKind::arena;
      break;
    case BufferKind::Input:
      kind = s::BufferKind::input;
      break;
    case BufferKind::Output:
      kind = s::BufferKind::output;
      break;
    case BufferKind::OptState:
      kind = s::BufferKind::opt_state;
      break;
    case BufferKind::Master:
      kind = s::BufferKind::master;
      break;
    }
    s::DType dtype = s::DType::f32;
    switch (pb.dtype) {
    case PlannedBuffer::DType::F32:
      break;
    case PlannedBuffer::DType::F16:
      dtype = s::DType::f16;
      break;
    case PlannedBuffer::DType::BF16:
      dtype = s::DType::bf16;
      break;
    case PlannedBuffer::DType::I32:
      dtype = s::DType::i32;
      break;
    }
    buffers.push_back(
        s::CreateBuffer(b, name, kind, dtype, shape, pb.offset, pb.size));
    if (pb.kind == BufferKind::Param) {
      s::ParamInit init = pb.init == "ones"    ? s::ParamInit::ones
                          : pb.init == "zeros" ? s::ParamInit::zeros
                                               : s::ParamInit::normal;
      auto master = masterOf.find(pb.name);
      params.push_back(s::CreateParam(
          b, b.CreateString(pb.name), b.CreateVector(pb.shape), i, init, 0.02f,
          master == masterOf.end() ? -1 : master->second));
    }
  }

  std::vector<fb::Offset<s::Launch>> launches;
  for (const PlannedLaunch &l : plan.launches)
    launches.push_back(
        s::CreateLaunch(b, kernelIndex.at(l.kernel), b.CreateVector(l.args)));
  std::vector<fb::Offset<s::NamedBuffer>> grads;
  for (const auto &[name, buf] : plan.gradOutputs)
    grads.push_back(s::CreateNamedBuffer(b, b.CreateString(name), buf));
  auto step = s::CreateStep(
      b, b.CreateString(plan.grads ? "grads" : "forward"),
      b.CreateVector(launches), plan.tokens, plan.grads ? 0 : plan.logits,
      plan.grads ? s::StepKind::grads : s::StepKind::forward, plan.targets,
      plan.loss, b.CreateVector(grads));

  std::vector<fb::Offset<s::Step>> steps = {step};
  if (plan.hasUpdate) {
    std::vector<fb::Offset<s::Launch>> upd;
    for (const PlannedLaunch &l : plan.updateLaunches)
      upd.push_back(
          s::CreateLaunch(b, kernelIndex.at(l.kernel), b.CreateVector(l.args)));
    auto name = b.CreateString("update");
    auto launchVec = b.CreateVector(upd);
    s::StepBuilder sb(b);
    sb.add_name(name);
    sb.add_launches(launchVec);
    sb.add_kind(s::StepKind::update);
    sb.add_hyper(plan.hyper);
    sb.add_grad_norm(plan.gradNorm);
    steps.push_back(sb.Finish());
  }
  fb::Offset<s::Optimizer> optimizer;
  if (in.optimizer)
    optimizer =
        s::CreateOptimizer(b, in.optimizer->beta1, in.optimizer->beta2,
                           in.optimizer->eps, in.optimizer->weightDecay);

  auto model = s::CreateModelInfo(
      b, b.CreateString(c.family == ModelFamily::Llama ? "llama" : "gpt2"),
      b.CreateString(c.name), c.vocabSize, c.hiddenSize, c.numLayers,
      c.numHeads, c.numKvHeads, c.headDim, c.maxPositions, c.bosTokenId,
      c.eosTokenId);

  auto producer = b.CreateString("colossus-compile 0.1.0");
  auto kernelVec = b.CreateVector(kernels);
  fb::Offset<fb::Vector<uint8_t>> cpuObject;
  if (!in.gpu)
    cpuObject = b.CreateVector(in.cpuObject);
  auto bufferVec = b.CreateVector(buffers);
  auto paramVec = b.CreateVector(params);
  auto stepVec = b.CreateVector(steps);

  s::ArtifactBuilder ab(b);
  ab.add_schema_version(1);
  ab.add_producer(producer);
  ab.add_target(in.gpu ? s::Target::sm_90a : s::Target::cpu);
  ab.add_model(model);
  ab.add_batch(in.batch);
  ab.add_seq(in.seq);
  ab.add_kernels(kernelVec);
  if (!in.gpu)
    ab.add_cpu_object(cpuObject);
  ab.add_buffers(bufferVec);
  ab.add_arena_bytes(plan.arenaBytes);
  ab.add_params(paramVec);
  ab.add_steps(stepVec);
  ab.add_checksum(0);
  if (in.optimizer)
    ab.add_optimizer(optimizer);
  b.Finish(ab.Finish(), s::ArtifactIdentifier());

  std::vector<uint8_t> bytes(b.GetBufferPointer(),
                             b.GetBufferPointer() + b.GetSize());
  colossus::stampArtifactChecksum(bytes.data(), bytes.size());
  return bytes;
}
