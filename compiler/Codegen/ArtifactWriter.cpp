//===- ArtifactWriter.cpp - FlatBuffers artifact emission -----------------===//
#include "colossus/Compiler/ArtifactWriter.h"

#include "colossus/runtime/ArtifactChecksum.h"
#include "colossus/schema/colossus_generated.h"

#include <map>

using namespace colossus;
namespace fb = flatbuffers;
namespace s = colossus::schema;

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
    kb.add_shared_mem_bytes(in.gpu ? k.gpu.sharedMemBytes : 0);
    kb.add_registers(in.gpu ? k.gpu.registers : 0);
    kb.add_spill_bytes(in.gpu ? k.gpu.spillBytes : 0);
    kb.add_flops_per_token(k.flops / tokens);
    kb.add_bytes_per_token(k.bytes / tokens);
    if (in.gpu) {
      kb.add_ptx(ptx);
      kb.add_cubin(cubin);
    }
    kernels.push_back(kb.Finish());
  }

  std::vector<fb::Offset<s::Buffer>> buffers;
  std::vector<fb::Offset<s::Param>> params;
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
      params.push_back(s::CreateParam(b, b.CreateString(pb.name),
                                      b.CreateVector(pb.shape), i, init,
                                      0.02f));
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
