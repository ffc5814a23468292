//===- Session.cpp - Running a compiled model -----------------------------===//

#include "colossus/runtime/Session.h"
#include "colossus/runtime/Weights.h"

#include <chrono>

namespace colossus {

Expected<std::unique_ptr<Session>>
Session::create(const std::string &artifactPath,
                const SessionOptions &options) {
  auto artifact = Artifact::loadFile(artifactPath, options.device);
  if (!artifact)
    return artifact.error();
  return create(std::move(artifact).value(), options);
}

Expected<std::unique_ptr<Session>>
Session::create(std::unique_ptr<Artifact> artifact,
                const SessionOptions &options) {
  std::unique_ptr<Session> session(new Session());
  session->artifact_ = std::move(artifact);
  COLOSSUS_RETURN_IF_ERROR(session->init(options));
  return session;
}

Session::~Session() {
  if (device_) {
    (void)device_->synchronize();
    for (void *p : ownAllocations_)
      device_->free(p);
    device_->free(arena_);
  }
}

Status Session::init(const SessionOptions &options) {
  const Artifact &a = *artifact_;
  DeviceKind kind = options.device.value_or(deviceForTarget(a.target()));
  COLOSSUS_RETURN_IF_ERROR(a.checkDevice(kind));
  step_ = a.findStep("forward");
  if (!step_)
    return makeError(a.name(), ": the artifact has no step named 'forward'");

  auto device = createDevice(kind);
  if (!device)
    return device.error();
  device_ = std::move(device).value();
  COLOSSUS_RETURN_IF_ERROR(device_->loadKernels(a));
  COLOSSUS_RETURN_IF_ERROR(allocateBuffers());

  // Argument arrays of every launch, built once.
  if (step_->launches()) {
    for (const schema::Launch *launch : *step_->launches()) {
      PreparedLaunch p;
      p.kernel = launch->kernel();
      if (launch->args())
        for (uint32_t b : *launch->args())
          p.args.push_back(bufferPtrs_[b]);
      launches_.push_back(std::move(p));
    }
  }
  return fillParams(options.weights);
}

Status Session::allocateBuffers() {
  const schema::Artifact &a = artifact_->root();
  const std::string &n = artifact_->name();
  auto arena = device_->alloc(a.arena_bytes(), "the activation arena");
  if (!arena)
    return makeError(n, ": ", arena.message());
  arena_ = *arena;
  COLOSSUS_RETURN_IF_ERROR(device_->fillZero(arena_, a.arena_bytes()));

  uint32_t numBuffers = artifact_->numBuffers();
  bufferPtrs_.assign(numBuffers, nullptr);
  for (uint32_t i = 0; i < numBuffers; ++i) {
    const schema::Buffer *b = a.buffers()->Get(i);
    if (b->kind() == schema::BufferKind::arena) {
      bufferPtrs_[i] = static_cast<char *>(arena_) + b->offset();
      continue;
    }
    std::string what = strCat("buffers[", i, "]");
    if (b->name())
      what += strCat(" '", b->name()->str(), "'");
    auto p = device_->alloc(b->size(), what);
    if (!p)
      return makeError(n, ": ", p.message());
    ownAllocations_.push_back(*p);
    bufferPtrs_[i] = *p;
    if (b->kind() == schema::BufferKind::state)
      stateBuffers_.push_back(i);
    if (b->kind() != schema::BufferKind::param)
      COLOSSUS_RETURN_IF_ERROR(device_->fillZero(*p, b->size()));
  }
  return Status::success();
}

Status Session::fillParams(const WeightsSpec &weights) {
  const schema::Artifact &a = artifact_->root();
  std::unique_ptr<WeightSource> source;
  if (weights.kind == WeightsSpec::Kind::File) {
    auto opened = WeightSource::open(weights.path);
    if (!opened)
      return opened.error();
    source = std::move(opened).value();
  }
  std::vector<float> staging;
  for (uint32_t i = 0; i < artifact_->numParams(); ++i) {
    const schema::Param *param = a.params()->Get(i);
    const schema::Buffer *buffer = a.buffers()->Get(param->buffer());
    size_t count = static_cast<size_t>(buffer->size() / 4);
    void *dst = bufferPtrs_[param->buffer()];
    float *host = static_cast<float *>(device_->hostAddress(dst));
    if (!host && count) {
      staging.resize(count);
      host = staging.data();
    }
    if (source)
      COLOSSUS_RETURN_IF_ERROR(loadParam(*source, *param, host, count));
    else
      initParam(*param, weights.seed, i, host, count);
    if (host == staging.data() && count)
      COLOSSUS_RETURN_IF_ERROR(device_->copyToDevice(dst, host, count * 4));
  }
  return device_->synchronize();
}

Status Session::resetState() {
  const schema::Artifact &a = artifact_->root();
  for (uint32_t i : stateBuffers_)
    COLOSSUS_RETURN_IF_ERROR(
        device_->fillZero(bufferPtrs_[i], a.buffers()->Get(i)->size()));
  return Status::success();
}

Status Session::writeTokens(const int32_t *ids, size_t count) {
  if (count > static_cast<size_t>(artifact_->batch() * artifact_->seq()))
    return makeError("writeTokens: ", count, " tokens exceed batch * seq = ",
                     artifact_->batch() * artifact_->seq());
  return device_->copyToDevice(bufferPtrs_[step_->tokens()], ids,
                               count * sizeof(int32_t));
}

Status Session::runStep(int64_t nb, int64_t nt, int64_t pos0) {
  const int64_t B = artifact_->batch(), S = artifact_->seq();
  if (nb < 1 || nb > B || nt < 1 || nt > S || pos0 < 0 || pos0 + nt > S)
    return makeError("invalid active region nb = ", nb, ", nt = ", nt,
                     ", pos0 = ", pos0, " (batch = ", B, ", seq = ", S, ")");
  for (const PreparedLaunch &l : launches_)
    COLOSSUS_RETURN_IF_ERROR(
        device_->launch(l.kernel, l.args.data(), l.args.size(), nb, nt, pos0));
  return Status::success();
}

Status Session::readLogits(float *out, size_t rows) {
  if (rows > static_cast<size_t>(artifact_->batch() * artifact_->seq()))
    return makeError("readLogits: ", rows, " rows exceed batch * seq");
  COLOSSUS_RETURN_IF_ERROR(device_->copyToHost(
      out, bufferPtrs_[step_->logits()],
      rows * static_cast<size_t>(vocabSize()) * sizeof(float)));
  return device_->synchronize();
}

Status Session::checkTokens(const std::vector<int32_t> &tokens,
                            const char *what) const {
  if (tokens.empty())
    return makeError(what, " is empty; at least one token id is needed");
  if (static_cast<int64_t>(tokens.size()) > artifact_->seq())
    return makeError(what, " has ", tokens.size(),
                     " tokens, more than the artifact's sequence capacity "
                     "seq = ",
                     artifact_->seq());
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocabSize())
      return makeError(what, ": token id ", tokens[i], " at position ", i,
                       " is out of range [0, ", vocabSize(), ")");
  return Status::success();
}

Expected<std::vector<float>>
Session::forward(const std::vector<int32_t> &tokens) {
  COLOSSUS_RETURN_IF_ERROR(checkTokens(tokens, "the prompt"));
  const int64_t L = static_cast<int64_t>(tokens.size());
  COLOSSUS_RETURN_IF_ERROR(resetState());
  COLOSSUS_RETURN_IF_ERROR(writeTokens(tokens.data(), tokens.size()));
  COLOSSUS_RETURN_IF_ERROR(runStep(1, L, 0));
  std::vector<float> logits(static_cast<size_t>(L * vocabSize()));
  COLOSSUS_RETURN_IF_ERROR(readLogits(logits.data(), tokens.size()));
  return logits;
}

Expected<GenerateResult> Session::generate(const std::vector<int32_t> &prompt,
                                           int64_t maxNew,
                                           const SamplingParams &sampling) {
  COLOSSUS_RETURN_IF_ERROR(checkTokens(prompt, "the prompt"));
  COLOSSUS_RETURN_IF_ERROR(validateSamplingParams(sampling));
  const int64_t L = static_cast<int64_t>(prompt.size());
  if (maxNew < 0)
    return makeError("--max-new-tokens must be >= 0 (got ", maxNew, ")");
  if (L + maxNew > artifact_->seq())
    return makeError("the prompt of ", L, " tokens + ", maxNew,
                     " new tokens exceeds the artifact's sequence capacity "
                     "seq = ",
                     artifact_->seq());
  auto start = std::chrono::steady_clock::now();
  GenerateResult result;
  result.promptTokens = L;
  if (maxNew > 0) {
    const size_t V = static_cast<size_t>(vocabSize());
    Sampler sampler(sampling);
    std::vector<float> logits(static_cast<size_t>(L) * V);
    COLOSSUS_RETURN_IF_ERROR(resetState());
    COLOSSUS_RETURN_IF_ERROR(writeTokens(prompt.data(), prompt.size()));
    COLOSSUS_RETURN_IF_ERROR(runStep(1, L, 0));
    COLOSSUS_RETURN_IF_ERROR(readLogits(logits.data(), prompt.size()));
    int32_t next = static_cast<int32_t>(
        sampler.sample(logits.data() + static_cast<size_t>(L - 1) * V, V));
    result.tokens.push_back(next);
    for (int64_t i = 0; i + 1 < maxNew; ++i) {
      COLOSSUS_RETURN_IF_ERROR(writeTokens(&next, 1));
      COLOSSUS_RETURN_IF_ERROR(runStep(1, 1, L + i));
      COLOSSUS_RETURN_IF_ERROR(readLogits(logits.data(), 1));
      next = static_cast<int32_t>(sampler.sample(logits.data(), V));
      result.tokens.push_back(next);
    }
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

} // namespace colossus
