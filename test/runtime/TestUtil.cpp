//===- TestUtil.cpp - Helpers of the runtime tests ------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/ArtifactChecksum.h"
#include "colossus/runtime/Weights.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

namespace colossus::test {

std::vector<uint8_t> buildArtifact(const ArtifactSpec &spec) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.ForceDefaults(true);

  std::vector<flatbuffers::Offset<schema::Kernel>> kernels;
  for (const KernelSpec &k : spec.kernels) {
    auto name = fbb.CreateString(k.name);
    auto kind = fbb.CreateString("test");
    auto ops = fbb.CreateVectorOfStrings({"test_op"});
    auto ptx = fbb.CreateString(k.ptx);
    auto cubin = fbb.CreateVector(k.cubin);
    flatbuffers::Offset<flatbuffers::Vector<uint32_t>> grid, block;
    if (!k.grid.empty()) {
      grid = fbb.CreateVector(k.grid);
      block = fbb.CreateVector(k.block);
    }
    flatbuffers::Offset<
        flatbuffers::Vector<flatbuffers::Offset<schema::TensorMap>>>
        maps;
    if (!k.tensorMaps.empty()) {
      std::vector<flatbuffers::Offset<schema::TensorMap>> v;
      for (const TensorMapSpec &t : k.tensorMaps)
        v.push_back(schema::CreateTensorMap(
            fbb, t.arg, t.dataType, t.rank, fbb.CreateVector(t.globalDim),
            fbb.CreateVector(t.globalStrides), fbb.CreateVector(t.boxDim),
            fbb.CreateVector(t.elementStrides), t.interleave, t.swizzle,
            t.l2Promotion, t.oobFill));
      maps = fbb.CreateVector(v);
    }
    schema::KernelBuilder kb(fbb);
    kb.add_name(name);
    kb.add_kind(kind);
    kb.add_fused_ops(ops);
    kb.add_rows(k.rows);
    kb.add_fixed_rows(k.fixedRows);
    kb.add_cols(k.cols);
    kb.add_num_args(k.numArgs);
    kb.add_block_dim(k.blockDim);
    kb.add_shared_mem_bytes(k.sharedMemBytes);
    kb.add_ptx(ptx);
    kb.add_cubin(cubin);
    if (!k.grid.empty()) {
      kb.add_grid(grid);
      kb.add_block(block);
    }
    if (!k.tensorMaps.empty())
      kb.add_tensor_maps(maps);
    kernels.push_back(kb.Finish());
  }
  std::vector<flatbuffers::Offset<schema::Buffer>> buffers;
  for (const BufferSpec &b : spec.buffers)
    buffers.push_back(
        schema::CreateBuffer(fbb, fbb.CreateString(b.name), b.kind, b.dtype,
                             fbb.CreateVector(b.shape), b.offset, b.size));
  std::vector<flatbuffers::Offset<schema::Param>> params;
  for (const ParamSpec &p : spec.params)
    params.push_back(schema::CreateParam(fbb, fbb.CreateString(p.hfName),
                                         fbb.CreateVector(p.shape), p.buffer,
                                         p.init, p.initStd));
  std::vector<flatbuffers::Offset<schema::Step>> steps;
  for (const StepSpec &s : spec.steps) {
    std::vector<flatbuffers::Offset<schema::Launch>> launches;
    for (const LaunchSpec &l : s.launches)
      launches.push_back(
          schema::CreateLaunch(fbb, l.kernel, fbb.CreateVector(l.args)));
    std::vector<flatbuffers::Offset<schema::NamedBuffer>> grads;
    for (const auto &[name, buffer] : s.grads)
      grads.push_back(
          schema::CreateNamedBuffer(fbb, fbb.CreateString(name), buffer));
    steps.push_back(schema::CreateStep(
        fbb, fbb.CreateString(s.name), fbb.CreateVector(launches), s.tokens,
        s.logits, s.kind, s.targets, s.loss, fbb.CreateVector(grads), s.hyper,
        s.gradNorm));
  }
  auto model = schema::CreateModelInfo(
      fbb, fbb.CreateString("llama"), fbb.CreateString("tiny-test"), spec.vocab,
      /*hidden_size=*/8, /*num_layers=*/1, /*num_heads=*/1,
      /*num_kv_heads=*/1, /*head_dim=*/8, /*max_position_embeddings=*/16,
      /*bos=*/1, /*eos=*/2);
  auto producer = fbb.CreateString("colossus-runtime-tests");
  auto kernelsOff = fbb.CreateVector(kernels);
  auto cpuObject = fbb.CreateVector(spec.cpuObject);
  auto buffersOff = fbb.CreateVector(buffers);
  auto paramsOff = fbb.CreateVector(params);
  auto stepsOff = fbb.CreateVector(steps);
  flatbuffers::Offset<schema::Optimizer> optimizerOff;
  if (spec.optimizer)
    optimizerOff = schema::CreateOptimizer(
        fbb, spec.optimizer->beta1, spec.optimizer->beta2, spec.optimizer->eps,
        spec.optimizer->weightDecay);
  schema::ArtifactBuilder ab(fbb);
  ab.add_schema_version(spec.schemaVersion);
  ab.add_producer(producer);
  ab.add_target(spec.target);
  ab.add_model(model);
  ab.add_batch(spec.batch);
  ab.add_seq(spec.seq);
  ab.add_kernels(kernelsOff);
  ab.add_cpu_object(cpuObject);
  ab.add_buffers(buffersOff);
  ab.add_arena_bytes(spec.arenaBytes);
  ab.add_params(paramsOff);
  ab.add_steps(stepsOff);
  ab.add_checksum(0);
  if (spec.optimizer)
    ab.add_optimizer(optimizerOff);
  schema::FinishArtifactBuffer(fbb, ab.Finish());
  std::vector<uint8_t> bytes(fbb.GetBufferPointer(),
                             fbb.GetBufferPointer() + fbb.GetSize());
  if (spec.stampChecksum && !stampArtifactChecksum(bytes.data(), bytes.size()))
    throw std::runtime_error("buildArtifact: no checksum field");
  return bytes;
}

const std::vector<uint8_t> &tinyKernelsObject() {
  static const std::vector<uint8_t> bytes = readFile(COLOSSUS_TEST_KERNELS_SO);
  return bytes;
}

ArtifactSpec tinySpec() {
  const int64_t V = 8, S = 16, B = 1;
  ArtifactSpec s;
  s.batch = B;
  s.seq = S;
  s.vocab = V;
  s.cpuObject = tinyKernelsObject();
  for (const auto &[name, numArgs] :
       std::vector<std::pair<std::string, uint32_t>>{
           {"tiny_store_kv", 2}, {"tiny_embed", 4}, {"tiny_logits", 3}}) {
    KernelSpec k;
    k.name = name;
    k.numArgs = numArgs;
    s.kernels.push_back(k);
  }
  using K = schema::BufferKind;
  using D = schema::DType;
  s.buffers = {
      {"tokens", K::input, D::i32, {B * S}, 0, uint64_t(B * S * 4)},
      {"logits", K::output, D::f32, {B * S, V}, 0, uint64_t(B * S * V * 4)},
      {"emb", K::param, D::f32, {V, V}, 0, uint64_t(V * V * 4)},
      {"bias", K::param, D::f32, {V}, 0, uint64_t(V * 4)},
      {"kv", K::state, D::f32, {B, S, 1}, 0, uint64_t(B * S * 4)},
      {"hid", K::arena, D::f32, {B * S, V}, 64, uint64_t(B * S * V * 4)},
  };
  s.arenaBytes = 64 + B * S * V * 4;
  s.params = {
      {"model.embed.weight", {V, V}, 2, schema::ParamInit::normal, 0.5f},
      {"model.bias", {V}, 3, schema::ParamInit::ones, 0.02f}};
  StepSpec step;
  step.launches = {{0, {0, 4}}, {1, {0, 2, 3, 5}}, {2, {5, 4, 1}}};
  step.tokens = 0;
  step.logits = 1;
  s.steps = {step};
  return s;
}

std::vector<float> tinyReference(const std::vector<float> &emb,
                                 const std::vector<float> &bias,
                                 const std::vector<int32_t> &context,
                                 const std::vector<int32_t> &tokens,
                                 int64_t pos0) {
  const int V = 8;
  std::vector<float> kv(context.begin(), context.end());
  kv.resize(static_cast<size_t>(pos0), 0.0f);
  for (int32_t t : tokens)
    kv.push_back(static_cast<float>(t));
  std::vector<float> out;
  for (size_t t = 0; t < tokens.size(); ++t) {
    float sum = 0.0f;
    for (size_t q = 0; q <= static_cast<size_t>(pos0) + t; ++q)
      sum += kv[q];
    int64_t hot = static_cast<int64_t>(sum) % V;
    for (int v = 0; v < V; ++v) {
      float h = emb[tokens[t] * V + v] + bias[v];
      out.push_back(h + static_cast<float>(pos0) + (v == hot ? 2.5f : 0.0f));
    }
  }
  return out;
}

ArtifactSpec tinyGradsSpec() {
  const int64_t V = 8, S = 4, B = 2, R = B * S;
  ArtifactSpec s;
  s.batch = B;
  s.seq = S;
  s.vocab = V;
  s.cpuObject = tinyKernelsObject();
  KernelSpec xent;
  xent.name = "tiny_xent";
  xent.numArgs = 7;
  KernelSpec grad;
  grad.name = "tiny_xent_grad";
  grad.numArgs = 5;
  s.kernels = {xent, grad};
  using K = schema::BufferKind;
  using D = schema::DType;
  s.buffers = {
      {"tokens", K::input, D::i32, {R}, 0, uint64_t(R * 4)},
      {"targets", K::input, D::i32, {R}, 0, uint64_t(R * 4)},
      {"emb", K::param, D::f32, {V, V}, 0, uint64_t(V * V * 4)},
      {"bias", K::param, D::f32, {V}, 0, uint64_t(V * 4)},
      {"probs", K::arena, D::f32, {R, V}, 0, uint64_t(R * V * 4)},
      {"loss", K::output, D::f32, {}, 0, 4},
      {"grad.emb", K::output, D::f32, {V, V}, 0, uint64_t(V * V * 4)},
      {"grad.bias", K::output, D::f32, {V}, 0, uint64_t(V * 4)},
      {"probe", K::output, D::i32, {3}, 0, 12},
  };
  s.arenaBytes = R * V * 4;
  s.params = {
      {"model.embed.weight", {V, V}, 2, schema::ParamInit::normal, 0.5f},
      {"model.bias", {V}, 3, schema::ParamInit::ones, 0.02f}};
  StepSpec step;
  step.name = "grads";
  step.kind = schema::StepKind::grads;
  step.launches = {{0, {0, 1, 2, 3, 4, 5, 8}}, {1, {1, 0, 4, 6, 7}}};
  step.tokens = 0;
  step.logits = 0; // unused by a grads step
  step.targets = 1;
  step.loss = 5;
  step.grads = {{"model.bias", 7}, {"model.embed.weight", 6}};
  s.steps = {step};
  return s;
}

ArtifactSpec tinyTrainSpec() {
  const int64_t V = 8;
  ArtifactSpec s = tinyGradsSpec();
  KernelSpec adamw;
  adamw.name = "tiny_adamw";
  adamw.numArgs = 10;
  adamw.rows = schema::RowExtent::fixed;
  adamw.fixedRows = 1;
  adamw.cols = 1;
  s.kernels.push_back(adamw);
  using K = schema::BufferKind;
  using D = schema::DType;
  s.buffers.push_back({"model.embed.weight.exp_avg", K::opt_state, D::f32,
                       {V, V}, 0, uint64_t(V * V * 4)});
  s.buffers.push_back({"model.embed.weight.exp_avg_sq", K::opt_state, D::f32,
                       {V, V}, 0, uint64_t(V * V * 4)});
  s.buffers.push_back(
      {"model.bias.exp_avg", K::opt_state, D::f32, {V}, 0, uint64_t(V * 4)});
  s.buffers.push_back(
      {"model.bias.exp_avg_sq", K::opt_state, D::f32, {V}, 0, uint64_t(V * 4)});
  s.buffers.push_back({"hyper", K::input, D::f32, {5}, 0, 20});
  s.buffers.push_back({"grad_norm", K::output, D::f32, {1}, 0, 4});
  StepSpec update;
  update.name = "update";
  update.kind = schema::StepKind::update;
  update.launches = {{2, {6, 7, 2, 3, 9, 10, 11, 12, 13, 14}}};
  update.logits = 0;
  update.hyper = 13;
  update.gradNorm = 14;
  s.steps.push_back(update);
  s.optimizer = OptimizerSpec{};
  return s;
}

TinyGrads tinyGradsReference(const std::vector<float> &emb,
                             const std::vector<float> &bias,
                             const std::vector<int32_t> &tokens,
                             const std::vector<int32_t> &targets) {
  const int V = 8;
  TinyGrads g;
  g.emb.assign(V * V, 0.0);
  g.bias.assign(V, 0.0);
  size_t count = 0;
  for (int32_t t : targets)
    count += t != -100;
  if (count == 0)
    return g;
  for (size_t r = 0; r < tokens.size(); ++r) {
    if (targets[r] == -100)
      continue;
    double z[V], mx = -1e300, se = 0.0;
    for (int v = 0; v < V; ++v) {
      z[v] = double(emb[tokens[r] * V + v]) + double(bias[v]);
      mx = std::max(mx, z[v]);
    }
    for (int v = 0; v < V; ++v)
      se += std::exp(z[v] - mx);
    g.loss += (mx + std::log(se) - z[targets[r]]) / double(count);
    for (int v = 0; v < V; ++v) {
      double d = (std::exp(z[v] - mx) / se - (v == targets[r] ? 1.0 : 0.0)) /
                 double(count);
      g.emb[tokens[r] * V + v] += d;
      g.bias[v] += d;
    }
  }
  return g;
}

namespace {
std::vector<uint8_t> floatBytes(const std::vector<float> &values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}
std::vector<uint8_t> halfBytes(const std::vector<float> &values, bool bf16) {
  std::vector<uint8_t> bytes;
  for (float v : values) {
    uint16_t h = bf16 ? floatToBfloat16(v) : floatToHalf(v);
    bytes.push_back(static_cast<uint8_t>(h & 0xff));
    bytes.push_back(static_cast<uint8_t>(h >> 8));
  }
  return bytes;
}
} // namespace

TensorData f32Tensor(const std::string &name, std::vector<int64_t> shape,
                     const std::vector<float> &values) {
  return {name, "F32", std::move(shape), floatBytes(values)};
}
TensorData f16Tensor(const std::string &name, std::vector<int64_t> shape,
                     const std::vector<float> &values) {
  return {name, "F16", std::move(shape), halfBytes(values, false)};
}
TensorData bf16Tensor(const std::string &name, std::vector<int64_t> shape,
                      const std::vector<float> &values) {
  return {name, "BF16", std::move(shape), halfBytes(values, true)};
}

std::vector<uint8_t> safetensorsBytes(const std::vector<TensorData> &tensors) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorData &t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8)
    text += ' ';
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const TensorData &t : tensors)
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

std::vector<float> testValues(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    // Multiples of 1/64 in [-2, 2): exact in f16 and bf16 as well.
    v[i] = static_cast<float>(static_cast<int>((x >> 8) % 256) - 128) / 64.0f;
  }
  return v;
}

TempDir::TempDir() {
  const char *tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/colossus-rt-test-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::string cmd = "rm -rf '" + path_ + "'";
  if (std::system(cmd.c_str()) != 0)
    std::fprintf(stderr, "warning: could not remove %s\n", path_.c_str());
}

void writeFile(const std::string &path, const std::vector<uint8_t> &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out)
    throw std::runtime_error("cannot write " + path);
}

void writeText(const std::string &path, const std::string &text) {
  writeFile(path, std::vector<uint8_t>(text.begin(), text.end()));
}

std::vector<uint8_t> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  std::ostringstream os;
  os << in.rdbuf();
  std::string s = os.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

CommandResult runCommand(const std::string &command) {
  TempDir dir;
  std::string out = dir.file("out"), err = dir.file("err");
  std::string full = command + " >'" + out + "' 2>'" + err + "'";
  int status = std::system(full.c_str());
  CommandResult r;
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto o = readFile(out), e = readFile(err);
  r.out.assign(o.begin(), o.end());
  r.err.assign(e.begin(), e.end());
  return r;
}

} // namespace colossus::test
