//===- Artifact.cpp - Loading and validating a .colossus artifact ---------===//

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/ArtifactChecksum.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace colossus {

const char *deviceKindName(DeviceKind kind) {
  return kind == DeviceKind::Cpu ? "cpu" : "cuda";
}

std::optional<DeviceKind> parseDeviceKind(std::string_view name) {
  if (name == "cpu")
    return DeviceKind::Cpu;
  if (name == "cuda")
    return DeviceKind::Cuda;
  return std::nullopt;
}

DeviceKind deviceForTarget(schema::Target target) {
  return target == schema::Target::sm_90a ? DeviceKind::Cuda : DeviceKind::Cpu;
}

std::string targetName(schema::Target target) {
  switch (target) {
  case schema::Target::cpu:
    return "cpu";
  case schema::Target::sm_90a:
    return "sm_90a";
  }
  return strCat("unknown(", static_cast<int>(target), ")");
}

namespace {

Expected<std::vector<uint8_t>> readWholeFile(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeError(path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return makeError(path, ": cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return makeError(path, ": not a regular file");
  }
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(st.st_size));
  } catch (const std::exception &) {
    ::close(fd);
    return makeError(path, ": cannot allocate ", st.st_size,
                     " bytes to read the file");
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      return makeError(path, ": read error: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

/// a * b, or nullopt on overflow.
std::optional<uint64_t> mulU64(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    return std::nullopt;
  return r;
}

const char *kindName(schema::BufferKind kind) {
  const char *name = schema::EnumNameBufferKind(kind);
  return name && *name ? name : "unknown";
}

std::string bufferLabel(const schema::Artifact &a, uint32_t index) {
  const auto *buffer = a.buffers()->Get(index);
  std::string label = strCat("buffers[", index, "]");
  if (buffer->name())
    label += strCat(" '", buffer->name()->str(), "'");
  return label;
}

/// Element count of a shape; nullopt for a negative dim or on overflow.
std::optional<uint64_t>
elementCount(const flatbuffers::Vector<int64_t> *shape) {
  uint64_t n = 1;
  if (!shape)
    return n;
  for (int64_t d : *shape) {
    if (d < 0)
      return std::nullopt;
    auto m = mulU64(n, static_cast<uint64_t>(d));
    if (!m)
      return std::nullopt;
    n = *m;
  }
  return n;
}

/// Check 6 for a grads step (docs/artifact-format.md, "Grads steps"): its
/// targets, loss and per-parameter gradient buffers. The tokens buffer and
/// the params are already checked.
Status checkGradsStep(
    const schema::Artifact &a, const std::string &n, uint32_t s,
    const std::unordered_map<std::string_view, uint32_t> &paramByName) {
  const schema::Step *step = a.steps()->Get(s);
  const uint32_t numBuf = a.buffers() ? a.buffers()->size() : 0;
  const uint32_t numParams = a.params() ? a.params()->size() : 0;
  const std::string label = strCat("steps[", s, "]");
  auto describe = [&](const schema::Buffer *b) {
    return strCat(kindName(b->kind()), ", ", schema::EnumNameDType(b->dtype()));
  };

  // targets: an i32 input buffer of its own, the size of the tokens buffer.
  if (step->targets() >= numBuf)
    return makeError(n, ": ", label, ".targets = ", step->targets(),
                     " is out of range (", numBuf, " buffers)");
  if (step->targets() == step->tokens())
    return makeError(n, ": ", label, ".targets = ", step->targets(),
                     " is also ", label,
                     ".tokens; the targets need a buffer of their own");
  const schema::Buffer *tok = a.buffers()->Get(step->tokens());
  const schema::Buffer *tgt = a.buffers()->Get(step->targets());
  if (tgt->kind() != schema::BufferKind::input ||
      tgt->dtype() != schema::DType::i32)
    return makeError(
        n, ": ", label, ".targets: ", bufferLabel(a, step->targets()),
        " must be an i32 input buffer (it is ", describe(tgt), ")");
  if (tgt->size() != tok->size())
    return makeError(n, ": ", label,
                     ".targets: ", bufferLabel(a, step->targets()), " has ",
                     tgt->size(), " bytes, the tokens buffer ",
                     bufferLabel(a, step->tokens()), " has ", tok->size(),
                     " (both hold batch * seq i32)");

  // loss: an f32 output buffer holding at least one value.
  if (step->loss() >= numBuf)
    return makeError(n, ": ", label, ".loss = ", step->loss(),
                     " is out of range (", numBuf, " buffers)");
  const schema::Buffer *loss = a.buffers()->Get(step->loss());
  if (loss->kind() != schema::BufferKind::output ||
      loss->dtype() != schema::DType::f32)
    return makeError(n, ": ", label, ".loss: ", bufferLabel(a, step->loss()),
                     " must be an f32 output buffer (it is ", describe(loss),
                     ")");
  if (loss->size() < 4)
    return makeError(n, ": ", label, ".loss: ", bufferLabel(a, step->loss()),
                     " has ", loss->size(), " bytes, one f32 value needs 4");

  // grads: one f32 output buffer per Param, named by its hf_name.
  std::vector<int64_t> gradOfParam(numParams, -1);
  std::unordered_map<uint32_t, uint32_t> gradOfBuffer; // buffer -> grads[g]
  const uint32_t numGrads = step->grads() ? step->grads()->size() : 0;
  for (uint32_t g = 0; g < numGrads; ++g) {
    const schema::NamedBuffer *grad = step->grads()->Get(g);
    std::string gl = strCat(label, ".grads[", g, "]");
    if (!grad->name() || grad->name()->size() == 0)
      return makeError(n, ": ", gl, " has no name");
    gl += strCat(" '", grad->name()->str(), "'");
    auto it = paramByName.find(grad->name()->string_view());
    if (it == paramByName.end())
      return makeError(n, ": ", gl,
                       " names no parameter (no params[i]."
                       "hf_name is '",
                       grad->name()->str(), "')");
    const uint32_t p = it->second;
    if (gradOfParam[p] >= 0)
      return makeError(n, ": ", gl, " repeats ", label, ".grads[",
                       gradOfParam[p], "] (one gradient per parameter)");
    gradOfParam[p] = g;
    if (grad->buffer() >= numBuf)
      return makeError(n, ": ", gl, ".buffer = ", grad->buffer(),
                       " is out of range (", numBuf, " buffers)");
    const schema::Buffer *b = a.buffers()->Get(grad->buffer());
    if (b->kind() != schema::BufferKind::output ||
        b->dtype() != schema::DType::f32)
      return makeError(n, ": ", gl, ": ", bufferLabel(a, grad->buffer()),
                       " must be an f32 output buffer (it is ", describe(b),
                       ")");
    if (grad->buffer() == step->loss())
      return makeError(n, ": ", gl, ": ", bufferLabel(a, grad->buffer()),
                       " is also ", label, ".loss");
    auto [other, fresh] = gradOfBuffer.emplace(grad->buffer(), g);
    if (!fresh)
      return makeError(n, ": ", gl, ": ", bufferLabel(a, grad->buffer()),
                       " is also the buffer of ", label, ".grads[",
                       other->second, "]");
    // Gradients are f32 whatever the parameter's dtype (a bf16 parameter's
    // gradient reaches its f32 master weights).
    const schema::Param *param = a.params()->Get(p);
    const uint64_t want = Artifact::numElements(param->shape()) * 4;
    if (b->size() != want)
      return makeError(n, ": ", gl, ": ", bufferLabel(a, grad->buffer()),
                       " has ", b->size(), " bytes, the parameter's f32 "
                       "gradient (shape ",
                       Artifact::shapeString(param->shape()), ") needs ",
                       want);
    if (b->shape() && b->shape()->size() > 0) {
      bool same =
          param->shape() && param->shape()->size() == b->shape()->size();
      for (flatbuffers::uoffset_t d = 0; same && d < b->shape()->size(); ++d)
        same = b->shape()->Get(d) == param->shape()->Get(d);
      if (!same)
        return makeError(n, ": ", gl, ": ", bufferLabel(a, grad->buffer()),
                         " has shape ", Artifact::shapeString(b->shape()),
                         ", the parameter's is ",
                         Artifact::shapeString(param->shape()));
    }
  }
  for (uint32_t p = 0; p < numParams; ++p)
    if (gradOfParam[p] < 0)
      return makeError(n, ": ", label, ".grads: no gradient for params[", p,
                       "] '", a.params()->Get(p)->hf_name()->str(),
                       "' (a grads step has one per parameter)");
  return Status::success();
}

/// Check 6 for an update step (docs/artifact-format.md, "Update steps"): its
/// hyper input and grad_norm output. Its launches are checked with every
/// step's; the grads step, Artifact.optimizer and the opt_state buffers after
/// all steps (checkTrainingState).
Status checkUpdateStep(const schema::Artifact &a, const std::string &n,
                       uint32_t s) {
  const schema::Step *step = a.steps()->Get(s);
  const uint32_t numBuf = a.buffers() ? a.buffers()->size() : 0;
  const std::string label = strCat("steps[", s, "]");
  auto describe = [&](const schema::Buffer *b) {
    return strCat(kindName(b->kind()), ", ", schema::EnumNameDType(b->dtype()));
  };
  if (step->hyper() >= numBuf)
    return makeError(n, ": ", label, ".hyper = ", step->hyper(),
                     " is out of range (", numBuf, " buffers)");
  const schema::Buffer *hyper = a.buffers()->Get(step->hyper());
  if (hyper->kind() != schema::BufferKind::input ||
      hyper->dtype() != schema::DType::f32)
    return makeError(n, ": ", label, ".hyper: ", bufferLabel(a, step->hyper()),
                     " must be an f32 input buffer (it is ", describe(hyper),
                     ")");
  if (hyper->size() != 20)
    return makeError(n, ": ", label, ".hyper: ", bufferLabel(a, step->hyper()),
                     " has ", hyper->size(),
                     " bytes, f32[5] [lr, 1 - beta1^t, 1 - beta2^t, "
                     "max_grad_norm, grad_scale] needs 20 (an artifact of an "
                     "older colossus-compile: compile it again)");
  if (step->grad_norm() >= numBuf)
    return makeError(n, ": ", label, ".grad_norm = ", step->grad_norm(),
                     " is out of range (", numBuf, " buffers)");
  const schema::Buffer *gn = a.buffers()->Get(step->grad_norm());
  if (gn->kind() != schema::BufferKind::output ||
      gn->dtype() != schema::DType::f32)
    return makeError(n, ": ", label,
                     ".grad_norm: ", bufferLabel(a, step->grad_norm()),
                     " must be an f32 output buffer (it is ", describe(gn),
                     ")");
  if (gn->size() < 4)
    return makeError(n, ": ", label,
                     ".grad_norm: ", bufferLabel(a, step->grad_norm()),
                     " has ", gn->size(), " bytes, one f32 value needs 4");
  return Status::success();
}

/// With an update step: a grads step, Artifact.optimizer, and for every
/// Param the f32 opt_state buffers "<hf_name>.exp_avg" and
/// "<hf_name>.exp_avg_sq" of the param's size.
Status checkTrainingState(const schema::Artifact &a, const std::string &n,
                          uint32_t updateIndex, bool hasGrads) {
  const std::string label = strCat("steps[", updateIndex, "]");
  if (!hasGrads)
    return makeError(n, ": ", label,
                     " is an update step but the artifact has no grads step "
                     "(the update reads the grads step's gradients)");
  if (!a.optimizer())
    return makeError(n, ": ", label,
                     " is an update step but the artifact has no optimizer "
                     "table (Artifact.optimizer: beta1, beta2, eps, "
                     "weight_decay)");
  const schema::Optimizer &o = *a.optimizer();
  auto inUnit = [](float x) { return x >= 0.0f && x < 1.0f; };
  if (!inUnit(o.beta1()) || !inUnit(o.beta2()))
    return makeError(n, ": optimizer: beta1 = ", o.beta1(), ", beta2 = ",
                     o.beta2(), ": each must be in [0, 1)");
  if (!(o.eps() >= 0.0f) || !(o.weight_decay() >= 0.0f) ||
      !std::isfinite(o.eps()) || !std::isfinite(o.weight_decay()))
    return makeError(n, ": optimizer: eps = ", o.eps(), ", weight_decay = ",
                     o.weight_decay(), ": each must be finite and >= 0");
  const uint32_t numBuf = a.buffers() ? a.buffers()->size() : 0;
  std::unordered_map<std::string_view, uint32_t> optByName;
  for (uint32_t b = 0; b < numBuf; ++b) {
    const schema::Buffer *buf = a.buffers()->Get(b);
    if (buf->kind() != schema::BufferKind::opt_state)
      continue;
    if (!buf->name() || buf->name()->size() == 0)
      return makeError(n, ": buffers[", b,
                       "] is an opt_state buffer without a name (opt_state "
                       "buffers are named <hf_name>.exp_avg / .exp_avg_sq)");
    if (buf->dtype() != schema::DType::f32)
      return makeError(n, ": ", bufferLabel(a, b),
                       ": an opt_state buffer must be f32 (it is ",
                       schema::EnumNameDType(buf->dtype()), ")");
    auto [it, fresh] = optByName.emplace(buf->name()->string_view(), b);
    if (!fresh)
      return makeError(n, ": ", bufferLabel(a, b), " repeats the name of ",
                       bufferLabel(a, it->second),
                       " (opt_state buffers are found by name)");
  }
  const uint32_t numParams = a.params() ? a.params()->size() : 0;
  for (uint32_t p = 0; p < numParams; ++p) {
    const schema::Param *param = a.params()->Get(p);
    const schema::Buffer *pb = a.buffers()->Get(param->buffer());
    // AdamW runs on f32 weights: the parameter, or its f32 master copy.
    if (pb->dtype() != schema::DType::f32 && param->master() < 0)
      return makeError(n, ": params[", p, "] '", param->hf_name()->str(),
                       "' is ", schema::EnumNameDType(pb->dtype()),
                       " with no f32 master weights (Param.master), which "
                       "an update step needs");
    const uint64_t f32Bytes = Artifact::numElements(param->shape()) * 4;
    for (const char *suffix : {".exp_avg", ".exp_avg_sq"}) {
      std::string want = param->hf_name()->str() + suffix;
      auto it = optByName.find(want);
      if (it == optByName.end())
        return makeError(n, ": params[", p, "] '", param->hf_name()->str(),
                         "': no opt_state buffer named '", want,
                         "' (an update step needs exp_avg and exp_avg_sq "
                         "for every parameter)");
      const schema::Buffer *ob = a.buffers()->Get(it->second);
      if (ob->size() != f32Bytes)
        return makeError(n, ": ", bufferLabel(a, it->second), " has ",
                         ob->size(), " bytes, the f32 state of params[", p,
                         "] (shape ", Artifact::shapeString(param->shape()),
                         ") needs ", f32Bytes);
    }
  }
  return Status::success();
}

/// Bytes per element of a CUtensorMap data type (0: unknown).
uint64_t tensorMapElementBytes(schema::TensorMapDataType t) {
  using T = schema::TensorMapDataType;
  switch (t) {
  case T::uint8:
    return 1;
  case T::uint16:
  case T::float16:
  case T::bfloat16:
    return 2;
  case T::uint32:
  case T::int32:
  case T::float32:
  case T::float32_ftz:
  case T::tfloat32:
  case T::tfloat32_ftz:
    return 4;
  case T::uint64:
  case T::int64:
  case T::float64:
    return 8;
  }
  return 0;
}

/// Whether a buffer of dtype `d` may be described by a map of type `t`.
bool tensorMapTypeFits(schema::DType d, schema::TensorMapDataType t) {
  using T = schema::TensorMapDataType;
  switch (d) {
  case schema::DType::f32:
    return t == T::float32 || t == T::float32_ftz || t == T::tfloat32 ||
           t == T::tfloat32_ftz;
  case schema::DType::f16:
    return t == T::float16;
  case schema::DType::bf16:
    return t == T::bfloat16;
  case schema::DType::i32:
    return t == T::int32;
  }
  return false;
}

/// The launch shape (grid, block) and tensor maps of an sm_90a kernel, on
/// their own (cuTensorMapEncodeTiled's documented limits).
Status checkKernelLaunchAbi(const schema::Kernel &kernel, const std::string &n,
                            const std::string &label) {
  const bool hasShape = kernel.grid() || kernel.block();
  if (!hasShape && !kernel.tensor_maps())
    return Status::success();
  if (!kernel.grid() || kernel.grid()->size() != 3 || !kernel.block() ||
      kernel.block()->size() != 3)
    return makeError(n, ": ", label,
                     ": grid and block must both have 3 entries (a kernel "
                     "with tensor_maps needs them)");
  static const uint32_t gridMax[3] = {0x7fffffffu, 65535u, 65535u};
  static const uint32_t blockMax[3] = {1024u, 1024u, 64u};
  static const char *axis[3] = {"x", "y", "z"};
  uint64_t threads = 1;
  for (uint32_t i = 0; i < 3; ++i) {
    uint32_t g = kernel.grid()->Get(i), b = kernel.block()->Get(i);
    if (g < 1 || g > gridMax[i])
      return makeError(n, ": ", label, ": grid.", axis[i], " = ", g,
                       " is not in [1, ", gridMax[i], "]");
    if (b < 1 || b > blockMax[i])
      return makeError(n, ": ", label, ": block.", axis[i], " = ", b,
                       " is not in [1, ", blockMax[i], "]");
    threads *= b;
  }
  if (threads > 1024)
    return makeError(n, ": ", label, ": block has ", threads,
                     " threads, more than 1024");
  if (threads != kernel.block_dim())
    return makeError(n, ": ", label, ": block has ", threads,
                     " threads but block_dim = ", kernel.block_dim());
  if (!kernel.tensor_maps())
    return Status::success();
  std::vector<bool> seen(kernel.num_args(), false);
  for (uint32_t m = 0; m < kernel.tensor_maps()->size(); ++m) {
    const schema::TensorMap *t = kernel.tensor_maps()->Get(m);
    const std::string tl = strCat(label, ".tensor_maps[", m, "]");
    if (t->arg() >= kernel.num_args())
      return makeError(n, ": ", tl, ".arg = ", t->arg(),
                       " is out of range (num_args = ", kernel.num_args(), ")");
    if (seen[t->arg()])
      return makeError(n, ": ", tl, ".arg = ", t->arg(),
                       " has another tensor map");
    seen[t->arg()] = true;
    const uint64_t elem = tensorMapElementBytes(t->data_type());
    if (elem == 0)
      return makeError(n, ": ", tl, ": unknown data_type ",
                       static_cast<int>(t->data_type()));
    if (static_cast<uint32_t>(t->interleave()) >
            static_cast<uint32_t>(schema::TensorMapInterleave::MAX) ||
        static_cast<uint32_t>(t->swizzle()) >
            static_cast<uint32_t>(schema::TensorMapSwizzle::MAX) ||
        static_cast<uint32_t>(t->l2_promotion()) >
            static_cast<uint32_t>(schema::TensorMapL2Promotion::MAX) ||
        static_cast<uint32_t>(t->oob_fill()) >
            static_cast<uint32_t>(schema::TensorMapOobFill::MAX))
      return makeError(n, ": ", tl,
                       ": unknown interleave, swizzle, l2_promotion or "
                       "oob_fill value");
    const uint32_t rank = t->rank();
    if (rank < 1 || rank > 5)
      return makeError(n, ": ", tl, ".rank = ", rank, " is not in [1, 5]");
    auto size = [](const auto *v) { return v ? v->size() : 0u; };
    if (size(t->global_dim()) != rank || size(t->box_dim()) != rank ||
        size(t->element_strides()) != rank ||
        size(t->global_strides()) != rank - 1)
      return makeError(n, ": ", tl,
                       ": global_dim, box_dim and "
                       "element_strides need rank = ",
                       rank, " entries, global_strides rank - 1");
    for (uint32_t d = 0; d < rank; ++d) {
      uint64_t g = t->global_dim()->Get(d);
      if (g < 1 || g > (uint64_t(1) << 32))
        return makeError(n, ": ", tl, ".global_dim[", d, "] = ", g,
                         " is not in [1, 2^32]");
      uint32_t box = t->box_dim()->Get(d);
      if (box < 1 || box > 256 || box > g)
        return makeError(n, ": ", tl, ".box_dim[", d, "] = ", box,
                         " is not in [1, min(256, global_dim[", d, "] = ", g,
                         ")]");
      uint32_t es = t->element_strides()->Get(d);
      if (es < 1 || es > 8)
        return makeError(n, ": ", tl, ".element_strides[", d, "] = ", es,
                         " is not in [1, 8]");
    }
    // Strides: multiples of 16 bytes below 2^40, each dimension's rows no
    // narrower than the dimension below (dense or padded, never
    // overlapping).
    uint64_t below = t->global_dim()->Get(0) * elem;
    for (uint32_t d = 0; d + 1 < rank; ++d) {
      uint64_t st = t->global_strides()->Get(d);
      if (st % 16 != 0 || st >= (uint64_t(1) << 40) || st < below)
        return makeError(n, ": ", tl, ".global_strides[", d, "] = ", st,
                         " must be a multiple of 16 below 2^40 and at least ",
                         below, " bytes");
      auto next = mulU64(st, t->global_dim()->Get(d + 1));
      if (!next)
        return makeError(n, ": ", tl, ": the tensor is too large");
      below = *next;
    }
    const uint64_t innerBox = t->box_dim()->Get(0) * elem;
    if (t->interleave() == schema::TensorMapInterleave::none) {
      if (innerBox % 16 != 0)
        return makeError(n, ": ", tl,
                         ": box_dim[0] * element size = ", innerBox,
                         " bytes is not a multiple of 16");
      static const uint64_t span[4] = {0, 32, 64, 128};
      uint32_t sw = static_cast<uint32_t>(t->swizzle());
      if (sw != 0 && innerBox > span[sw])
        return makeError(n, ": ", tl,
                         ": box_dim[0] * element size = ", innerBox,
                         " bytes exceeds the ", span[sw], "-byte swizzle span");
    }
  }
  return Status::success();
}

/// A launch's bindings of a kernel's tensor maps: the buffer bound to each
/// map's argument has the map's element type, holds the whole described
/// tensor, is 16-byte aligned, and (when it has a shape) has the map's
/// dimensions (innermost first).
Status checkLaunchTensorMaps(const schema::Artifact &a,
                             const schema::Kernel &kernel,
                             const schema::Launch &launch, const std::string &n,
                             const std::string &ll) {
  if (!kernel.tensor_maps())
    return Status::success();
  for (uint32_t m = 0; m < kernel.tensor_maps()->size(); ++m) {
    const schema::TensorMap *t = kernel.tensor_maps()->Get(m);
    const uint32_t bi = launch.args()->Get(t->arg());
    const schema::Buffer *b = a.buffers()->Get(bi);
    const std::string what = strCat(
        ll, ".args[", t->arg(), "] (kernels[", launch.kernel(), "] '",
        kernel.name()->str(), "'.tensor_maps[", m, "]): ", bufferLabel(a, bi));
    if (!tensorMapTypeFits(b->dtype(), t->data_type()))
      return makeError(n, ": ", what, " is ", schema::EnumNameDType(b->dtype()),
                       ", the tensor map's data_type is ",
                       schema::EnumNameTensorMapDataType(t->data_type()));
    const uint32_t rank = t->rank();
    const uint64_t last = t->global_dim()->Get(rank - 1);
    const uint64_t rowBytes = rank == 1 ? tensorMapElementBytes(t->data_type())
                                        : t->global_strides()->Get(rank - 2);
    auto extent = mulU64(rowBytes, last);
    if (!extent || *extent > b->size())
      return makeError(n, ": ", what, " has ", b->size(),
                       " bytes, the tensor map describes ",
                       extent ? strCat(*extent) : std::string("more"));
    if (b->kind() == schema::BufferKind::arena && b->offset() % 16 != 0)
      return makeError(n, ": ", what, ": arena offset ", b->offset(),
                       " is not 16-byte aligned");
    if (b->shape() && b->shape()->size() > 0) {
      bool same = b->shape()->size() == rank;
      for (uint32_t d = 0; same && d < rank; ++d)
        same = b->shape()->Get(rank - 1 - d) >= 0 &&
               static_cast<uint64_t>(b->shape()->Get(rank - 1 - d)) ==
                   t->global_dim()->Get(d);
      if (!same) {
        std::string dims;
        for (uint32_t d = 0; d < rank; ++d)
          dims += strCat(d ? ", " : "", t->global_dim()->Get(rank - 1 - d));
        return makeError(
            n, ": ", what, " has shape ", Artifact::shapeString(b->shape()),
            ", the tensor map's global_dim is [", dims, "] (outermost first)");
      }
    }
  }
  return Status::success();
}

} // namespace

uint64_t Artifact::numElements(const flatbuffers::Vector<int64_t> *shape) {
  return elementCount(shape).value_or(0);
}

std::string Artifact::shapeString(const flatbuffers::Vector<int64_t> *shape) {
  std::string s = "[";
  if (shape)
    for (flatbuffers::uoffset_t i = 0; i < shape->size(); ++i)
      s += strCat(i ? ", " : "", shape->Get(i));
  return s + "]";
}

Expected<std::unique_ptr<Artifact>>
Artifact::loadFile(const std::string &path, std::optional<DeviceKind> device) {
  auto bytes = readWholeFile(path);
  if (!bytes)
    return bytes.error();
  return loadBuffer(std::move(bytes).value(), path, device);
}

Expected<std::unique_ptr<Artifact>>
Artifact::loadBuffer(std::vector<uint8_t> bytes, const std::string &name,
                     std::optional<DeviceKind> device) {
  std::unique_ptr<Artifact> artifact(new Artifact(std::move(bytes), name));
  COLOSSUS_RETURN_IF_ERROR(artifact->verify(device));
  return artifact;
}

Status Artifact::verify(std::optional<DeviceKind> device) {
  const uint8_t *data = bytes_.data();
  const size_t size = bytes_.size();

  // 1. Identifier.
  if (size < 8 ||
      !flatbuffers::BufferHasIdentifier(data, schema::ArtifactIdentifier()))
    return makeError(name_, ": not a Colossus artifact (",
                     size < 8 ? strCat("only ", size, " bytes")
                              : std::string("no 'CLSS' identifier at offset 4"),
                     ")");

  // 2. FlatBuffers verifier.
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return makeError(name_, ": corrupt or truncated (", size,
                     " bytes is over the FlatBuffers size limit)");
  flatbuffers::Verifier verifier(data, size, /*max_depth=*/64,
                                 /*max_tables=*/1u << 24);
  if (!schema::VerifyArtifactBuffer(verifier))
    return makeError(name_,
                     ": corrupt or truncated (FlatBuffers verification "
                     "failed; ",
                     size, " bytes)");
  root_ = schema::GetArtifact(data);

  // 3. Schema version.
  if (root_->schema_version() != kSchemaVersion)
    return makeError(name_, ": artifact schema version ",
                     root_->schema_version(), ", this runtime reads ",
                     kSchemaVersion);

  // 4. Checksum.
  uint64_t stored = 0;
  if (!readArtifactChecksum(data, size, stored))
    return makeError(name_, ": checksum mismatch (the checksum field is "
                            "absent)");
  uint64_t computed = artifactChecksum(data, size);
  if (stored != computed) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "stored 0x%016llx, computed 0x%016llx",
                  static_cast<unsigned long long>(stored),
                  static_cast<unsigned long long>(computed));
    return makeError(name_, ": checksum mismatch (", buf, ")");
  }

  // 5. Target vs device.
  if (device)
    COLOSSUS_RETURN_IF_ERROR(checkDevice(*device));

  // 6. Internal consistency.
  return checkConsistency();
}

Status Artifact::checkDevice(DeviceKind device) const {
  schema::Target t = root_->target();
  if (t != schema::Target::cpu && t != schema::Target::sm_90a)
    return makeError(name_, ": unknown target ", targetName(t));
  if (deviceForTarget(t) != device)
    return makeError(name_, ": artifact compiled for target ", targetName(t),
                     " runs on the ", deviceKindName(deviceForTarget(t)),
                     " device, not on the ", deviceKindName(device),
                     " device (recompile with --target=",
                     device == DeviceKind::Cpu ? "cpu" : "sm_90a", ")");
  return Status::success();
}

uint32_t Artifact::numBuffers() const {
  return root_->buffers() ? root_->buffers()->size() : 0;
}
uint32_t Artifact::numKernels() const {
  return root_->kernels() ? root_->kernels()->size() : 0;
}
uint32_t Artifact::numParams() const {
  return root_->params() ? root_->params()->size() : 0;
}

const schema::Step *Artifact::findStep(schema::StepKind kind) const {
  if (!root_->steps())
    return nullptr;
  for (const schema::Step *step : *root_->steps())
    if (step->kind() == kind)
      return step;
  return nullptr;
}

const schema::Step *Artifact::findStep(std::string_view stepName) const {
  if (!root_->steps())
    return nullptr;
  for (const schema::Step *step : *root_->steps())
    if (step->name() && step->name()->string_view() == stepName)
      return step;
  return nullptr;
}

Status Artifact::checkConsistency() const {
  const schema::Artifact &a = *root_;
  const std::string &n = name_;
  const uint32_t numBuf = numBuffers();
  const uint32_t numKer = numKernels();
  const bool gpu = a.target() == schema::Target::sm_90a;

  if (a.batch() < 1 || a.batch() > (int64_t(1) << 20))
    return makeError(n, ": batch = ", a.batch(), " is out of range");
  if (a.seq() < 1 || a.seq() > (int64_t(1) << 30))
    return makeError(n, ": seq = ", a.seq(), " is out of range");
  if (!a.model())
    return makeError(n, ": model info is missing");
  if (a.model()->vocab_size() < 1 || a.model()->vocab_size() > (1 << 30))
    return makeError(n, ": model.vocab_size = ", a.model()->vocab_size(),
                     " is out of range");

  // Buffers.
  for (uint32_t i = 0; i < numBuf; ++i) {
    const schema::Buffer *b = a.buffers()->Get(i);
    uint32_t kind = static_cast<uint32_t>(b->kind());
    if (kind > static_cast<uint32_t>(schema::BufferKind::MAX))
      return makeError(n, ": ", bufferLabel(a, i), ": unknown kind ",
                       static_cast<int>(b->kind()));
    if (b->kind() == schema::BufferKind::arena &&
        (b->offset() > a.arena_bytes() ||
         b->size() > a.arena_bytes() - b->offset()))
      return makeError(n, ": ", bufferLabel(a, i), ": arena range [",
                       b->offset(), ", ", b->offset(), " + ", b->size(),
                       ") does not fit in arena_bytes = ", a.arena_bytes());
  }

  // Kernels.
  for (uint32_t k = 0; k < numKer; ++k) {
    const schema::Kernel *kernel = a.kernels()->Get(k);
    if (!kernel->name() || kernel->name()->size() == 0)
      return makeError(n, ": kernels[", k, "] has no name");
    std::string label =
        strCat("kernels[", k, "] '", kernel->name()->str(), "'");
    if (kernel->rows() != schema::RowExtent::tokens &&
        kernel->rows() != schema::RowExtent::fixed)
      return makeError(n, ": ", label, ": unknown row extent ",
                       static_cast<int>(kernel->rows()));
    if (kernel->rows() == schema::RowExtent::fixed && kernel->fixed_rows() < 0)
      return makeError(n, ": ", label, ": fixed_rows = ", kernel->fixed_rows(),
                       " is negative");
    if (kernel->cols() < 0)
      return makeError(n, ": ", label, ": cols = ", kernel->cols(),
                       " is negative");
    if (gpu) {
      if (kernel->block_dim() < 1 || kernel->block_dim() > 1024)
        return makeError(n, ": ", label, ": block_dim = ", kernel->block_dim(),
                         " is not in [1, 1024]");
      if ((!kernel->cubin() || kernel->cubin()->size() == 0) &&
          (!kernel->ptx() || kernel->ptx()->size() == 0))
        return makeError(n, ": ", label, ": has neither cubin nor ptx");
      COLOSSUS_RETURN_IF_ERROR(checkKernelLaunchAbi(*kernel, n, label));
    } else if (kernel->grid() || kernel->block() || kernel->tensor_maps()) {
      return makeError(n, ": ", label,
                       ": grid, block and tensor_maps are for sm_90a kernels");
    }
  }

  // Params.
  for (uint32_t p = 0; p < numParams(); ++p) {
    const schema::Param *param = a.params()->Get(p);
    std::string label = strCat("params[", p, "]");
    if (!param->hf_name() || param->hf_name()->size() == 0)
      return makeError(n, ": ", label, " has no hf_name");
    label += strCat(" '", param->hf_name()->str(), "'");
    if (param->buffer() >= numBuf)
      return makeError(n, ": ", label, ".buffer = ", param->buffer(),
                       " is out of range (", numBuf, " buffers)");
    const schema::Buffer *b = a.buffers()->Get(param->buffer());
    if (b->kind() != schema::BufferKind::param ||
        (b->dtype() != schema::DType::f32 && b->dtype() != schema::DType::bf16))
      return makeError(n, ": ", label, ": ", bufferLabel(a, param->buffer()),
                       " must be an f32 or bf16 param buffer (it is ",
                       kindName(b->kind()), ", ",
                       schema::EnumNameDType(b->dtype()), ")");
    const uint64_t width = b->dtype() == schema::DType::bf16 ? 2 : 4;
    if (param->shape())
      for (int64_t d : *param->shape())
        if (d < 0)
          return makeError(n, ": ", label, ": shape ",
                           shapeString(param->shape()),
                           " has a negative dimension");
    auto elems = elementCount(param->shape());
    auto bytes = elems ? mulU64(*elems, width) : std::nullopt;
    if (!bytes)
      return makeError(n, ": ", label, ": shape ", shapeString(param->shape()),
                       " is too large");
    if (b->size() != *bytes)
      return makeError(n, ": ", label, ": shape ", shapeString(param->shape()),
                       " needs ", *bytes, " bytes of ",
                       schema::EnumNameDType(b->dtype()), " but ",
                       bufferLabel(a, param->buffer()), ".size = ", b->size());
    uint32_t init = static_cast<uint32_t>(param->init());
    if (init > static_cast<uint32_t>(schema::ParamInit::MAX))
      return makeError(n, ": ", label, ": unknown init ", init);
    // Mixed precision: a bf16 parameter updated by the update step has f32
    // master weights of the same shape.
    if (param->master() >= 0) {
      const auto m = static_cast<uint32_t>(param->master());
      if (m >= numBuf)
        return makeError(n, ": ", label, ".master = ", param->master(),
                         " is out of range (", numBuf, " buffers)");
      const schema::Buffer *mb = a.buffers()->Get(m);
      if (mb->kind() != schema::BufferKind::master ||
          mb->dtype() != schema::DType::f32 || mb->size() != *elems * 4)
        return makeError(n, ": ", label, ".master: ", bufferLabel(a, m),
                         " must be an f32 master buffer of ", *elems * 4,
                         " bytes (it is ", kindName(mb->kind()), ", ",
                         schema::EnumNameDType(mb->dtype()), ", ", mb->size(),
                         " bytes)");
    } else if (param->master() != -1) {
      return makeError(n, ": ", label, ".master = ", param->master(),
                       " (-1: none, or a buffer index)");
    }
  }
  // Steps and launches (after the params: grads steps refer to them).
  if (a.steps()) {
    // hf_name -> params index (the first one when a name repeats).
    std::unordered_map<std::string_view, uint32_t> paramByName;
    for (uint32_t p = 0; p < numParams(); ++p)
      paramByName.emplace(a.params()->Get(p)->hf_name()->string_view(), p);
    const uint64_t tokensBytes =
        static_cast<uint64_t>(a.batch()) * static_cast<uint64_t>(a.seq()) * 4;
    std::optional<uint32_t>
        stepOfKind[static_cast<size_t>(schema::StepKind::MAX) + 1];
    for (uint32_t s = 0; s < a.steps()->size(); ++s) {
      const schema::Step *step = a.steps()->Get(s);
      std::string label = strCat("steps[", s, "]");
      uint32_t kind = static_cast<uint32_t>(step->kind());
      if (kind > static_cast<uint32_t>(schema::StepKind::MAX))
        return makeError(n, ": ", label, ": unknown step kind ",
                         static_cast<int>(step->kind()),
                         " (this runtime knows forward, grads and update)");
      if (stepOfKind[kind])
        return makeError(n, ": ", label, " is a second ",
                         schema::EnumNameStepKind(step->kind()),
                         " step (steps[", *stepOfKind[kind],
                         "] is one); an artifact has at most one step of "
                         "each kind");
      stepOfKind[kind] = s;
      const bool isGrads = step->kind() == schema::StepKind::grads;
      if (step->kind() == schema::StepKind::update) {
        COLOSSUS_RETURN_IF_ERROR(checkUpdateStep(a, n, s));
      } else {
      if (step->tokens() >= numBuf)
        return makeError(n, ": ", label, ".tokens = ", step->tokens(),
                         " is out of range (", numBuf, " buffers)");
      if (!isGrads && step->logits() >= numBuf)
        return makeError(n, ": ", label, ".logits = ", step->logits(),
                         " is out of range (", numBuf, " buffers)");
      const schema::Buffer *tok = a.buffers()->Get(step->tokens());
      if (tok->kind() != schema::BufferKind::input ||
          tok->dtype() != schema::DType::i32)
        return makeError(
            n, ": ", label, ".tokens: ", bufferLabel(a, step->tokens()),
            " must be an i32 input buffer (it is ", kindName(tok->kind()), ", ",
            schema::EnumNameDType(tok->dtype()), ")");
      if (tok->size() < tokensBytes)
        return makeError(n, ": ", label,
                         ".tokens: ", bufferLabel(a, step->tokens()), " has ",
                         tok->size(), " bytes, batch * seq i32 needs ",
                         tokensBytes);
      if (isGrads) {
        COLOSSUS_RETURN_IF_ERROR(checkGradsStep(a, n, s, paramByName));
      } else {
        const schema::Buffer *lg = a.buffers()->Get(step->logits());
        if (lg->kind() != schema::BufferKind::output ||
            lg->dtype() != schema::DType::f32)
          return makeError(
              n, ": ", label, ".logits: ", bufferLabel(a, step->logits()),
              " must be an f32 output buffer (it is ", kindName(lg->kind()),
              ", ", schema::EnumNameDType(lg->dtype()), ")");
        auto lgBytes = mulU64(
            static_cast<uint64_t>(a.batch()) * static_cast<uint64_t>(a.seq()),
            static_cast<uint64_t>(a.model()->vocab_size()) * 4);
        if (!lgBytes || lg->size() < *lgBytes)
          return makeError(n, ": ", label,
                           ".logits: ", bufferLabel(a, step->logits()), " has ",
                           lg->size(),
                           " bytes, batch * seq * vocab_size f32 needs ",
                           lgBytes ? strCat(*lgBytes) : std::string("more"));
        if (lg->shape() && lg->shape()->size() > 0 &&
            lg->shape()->Get(lg->shape()->size() - 1) !=
                a.model()->vocab_size())
          return makeError(n, ": ", label,
                           ".logits: ", bufferLabel(a, step->logits()),
                           " has shape ", shapeString(lg->shape()),
                           ", its last dimension must be model.vocab_size = ",
                           a.model()->vocab_size());
      }
      }
      if (!step->launches())
        continue;
      for (uint32_t l = 0; l < step->launches()->size(); ++l) {
        const schema::Launch *launch = step->launches()->Get(l);
        std::string ll = strCat(label, ".launches[", l, "]");
        if (launch->kernel() >= numKer)
          return makeError(n, ": ", ll, ".kernel = ", launch->kernel(),
                           " is out of range (", numKer, " kernels)");
        const schema::Kernel *kernel = a.kernels()->Get(launch->kernel());
        uint32_t nargs = launch->args() ? launch->args()->size() : 0;
        if (nargs != kernel->num_args())
          return makeError(n, ": ", ll, " has ", nargs, " args, kernels[",
                           launch->kernel(), "] '", kernel->name()->str(),
                           "' takes num_args = ", kernel->num_args());
        for (uint32_t i = 0; i < nargs; ++i)
          if (launch->args()->Get(i) >= numBuf)
            return makeError(n, ": ", ll, ".args[", i,
                             "] = ", launch->args()->Get(i),
                             " is out of range (", numBuf, " buffers)");
        COLOSSUS_RETURN_IF_ERROR(
            checkLaunchTensorMaps(a, *kernel, *launch, n, ll));
      }
    }
    const uint32_t updateKind = static_cast<uint32_t>(schema::StepKind::update);
    if (stepOfKind[updateKind])
      COLOSSUS_RETURN_IF_ERROR(checkTrainingState(
          a, n, *stepOfKind[updateKind],
          stepOfKind[static_cast<uint32_t>(schema::StepKind::grads)]
              .has_value()));
  }
  return Status::success();
}

} // namespace colossus
