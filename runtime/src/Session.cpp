//===- Session.cpp - Running a compiled model -----------------------------===//

#include "colossus/runtime/Session.h"
#include "colossus/runtime/Weights.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

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
  forwardStep_ = a.findStep(schema::StepKind::forward);
  gradsStep_ = a.findStep(schema::StepKind::grads);
  updateStep_ = a.findStep(schema::StepKind::update);
  if (!forwardStep_ && !gradsStep_)
    return makeError(a.name(),
                     ": the artifact has neither a forward nor a grads step");

  CudaOptions cudaOptions;
  cudaOptions.graphs = options.cudaGraphs;
  cudaOptions.graphAfterRuns = options.cudaGraphAfterRuns;
  auto device = createDevice(kind, cudaOptions);
  if (!device)
    return device.error();
  device_ = std::move(device).value();
  device_->setProfiling(options.profile);
  COLOSSUS_RETURN_IF_ERROR(device_->loadKernels(a));
  COLOSSUS_RETURN_IF_ERROR(allocateBuffers());

  // Argument arrays of every launch, built once.
  auto prepare = [&](const schema::Step *step, PreparedStep &out) {
    if (!step || !step->launches())
      return;
    out.id = static_cast<uint32_t>(step->kind());
    for (const schema::Launch *launch : *step->launches()) {
      PreparedLaunch p;
      p.kernel = launch->kernel();
      if (launch->args())
        for (uint32_t b : *launch->args())
          p.args.push_back(bufferPtrs_[b]);
      out.launches.push_back(std::move(p));
    }
    for (const PreparedLaunch &p : out.launches)
      out.views.push_back({p.kernel, p.args.data(), p.args.size()});
  };
  prepare(forwardStep_, forwardLaunches_);
  prepare(gradsStep_, gradsLaunches_);
  prepare(updateStep_, updateLaunches_);
  for (const PreparedStep *p :
       {&forwardLaunches_, &gradsLaunches_, &updateLaunches_})
    COLOSSUS_RETURN_IF_ERROR(
        device_->prepareLaunches(p->views.data(), p->views.size()));

  // The opt_state buffers of every param (check 6: both exist by name).
  if (updateStep_) {
    std::unordered_map<std::string_view, uint32_t> byName;
    for (uint32_t b = 0; b < a.numBuffers(); ++b) {
      const schema::Buffer *buf = a.root().buffers()->Get(b);
      if (buf->kind() == schema::BufferKind::opt_state && buf->name())
        byName.emplace(buf->name()->string_view(), b);
    }
    for (uint32_t p = 0; p < a.numParams(); ++p) {
      std::string name = a.root().params()->Get(p)->hf_name()->str();
      optStateOfParam_.emplace_back(byName.at(name + ".exp_avg"),
                                    byName.at(name + ".exp_avg_sq"));
    }
  }

  // The gradient buffer of every param (check 6: exactly one each).
  if (gradsStep_ && gradsStep_->grads()) {
    gradBufferOfParam_.assign(a.numParams(), 0);
    for (const schema::NamedBuffer *g : *gradsStep_->grads())
      for (uint32_t p = 0; p < a.numParams(); ++p)
        if (a.root().params()->Get(p)->hf_name()->string_view() ==
            g->name()->string_view()) {
          gradBufferOfParam_[p] = g->buffer();
          break;
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
  if (weights.kind == WeightsSpec::Kind::Random)
    return fillParamsRandom(weights.seed);
  const schema::Artifact &a = artifact_->root();
  auto opened = WeightSource::open(weights.path);
  if (!opened)
    return opened.error();
  std::unique_ptr<WeightSource> source = std::move(opened).value();
  std::vector<float> staging;
  std::vector<uint16_t> narrow;
  for (uint32_t i = 0; i < artifact_->numParams(); ++i) {
    const schema::Param *param = a.params()->Get(i);
    const schema::Buffer *buffer = a.buffers()->Get(param->buffer());
    const bool bf16 = buffer->dtype() == schema::DType::bf16;
    size_t count = static_cast<size_t>(buffer->size() / (bf16 ? 2 : 4));
    void *dst = bufferPtrs_[param->buffer()];
    // f32 parameters are filled in place where the device memory is host
    // memory; bf16 ones are read as f32 and rounded (to nearest even).
    float *host =
        bf16 ? nullptr : static_cast<float *>(device_->hostAddress(dst));
    if (!host && count) {
      staging.resize(count);
      host = staging.data();
    }
    COLOSSUS_RETURN_IF_ERROR(loadParam(*source, *param, host, count));
    if (bf16 && count) {
      narrow.resize(count);
      for (size_t k = 0; k < count; ++k)
        narrow[k] = floatToBfloat16(host[k]);
    }
    COLOSSUS_RETURN_IF_ERROR(storeParam(*param, host,
                                        bf16 && count ? narrow.data() : nullptr,
                                        host == staging.data(), count));
  }
  return device_->synchronize();
}

Status Session::storeParam(const schema::Param &param, const float *host,
                           const uint16_t *narrow, bool staged, size_t count) {
  if (!count)
    return Status::success();
  if (param.master() >= 0)
    COLOSSUS_RETURN_IF_ERROR(device_->copyToDevice(
        bufferPtrs_[static_cast<uint32_t>(param.master())], host, count * 4));
  void *dst = bufferPtrs_[param.buffer()];
  if (narrow)
    return device_->copyToDevice(dst, narrow, count * 2);
  if (staged)
    return device_->copyToDevice(dst, host, count * 4);
  return Status::success();
}

Status Session::fillParamsRandom(uint64_t seed) {
  // Every parameter is a stream of its own (initParam: seed and parameter
  // index), so worker threads generate them concurrently, each parameter by
  // one thread: the values are those of a sequential fill. This thread makes
  // every device call (a CUDA context is per thread), in parameter order, as
  // each parameter is ready. Parameters needing host staging (not host
  // memory, or bf16) are admitted in order while their staging stays within
  // kStagingBudget (or alone), so the host holds at most about that much.
  constexpr size_t kStagingBudget = size_t(2) << 30;
  const schema::Artifact &a = artifact_->root();
  const uint32_t n = artifact_->numParams();
  struct Job {
    const schema::Param *param = nullptr;
    size_t count = 0;
    bool bf16 = false;
    float *host = nullptr; // in place: the device memory is host memory
    size_t stagingBytes = 0;
    std::vector<float> staging;
    std::vector<uint16_t> narrow;
    bool done = false;
  };
  std::vector<Job> jobs(n);
  for (uint32_t i = 0; i < n; ++i) {
    Job &job = jobs[i];
    job.param = a.params()->Get(i);
    const schema::Buffer *buffer = a.buffers()->Get(job.param->buffer());
    job.bf16 = buffer->dtype() == schema::DType::bf16;
    job.count = static_cast<size_t>(buffer->size() / (job.bf16 ? 2 : 4));
    if (!job.bf16)
      job.host = static_cast<float *>(
          device_->hostAddress(bufferPtrs_[job.param->buffer()]));
    if (!job.host && job.count)
      job.stagingBytes = job.count * (job.bf16 ? 6 : 4);
  }

  std::mutex mu;
  std::condition_variable cv;
  uint32_t nextClaim = 0, nextAdmit = 0;
  size_t inFlight = 0;
  auto work = [&] {
    for (;;) {
      uint32_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        if (nextClaim == n)
          return;
        i = nextClaim++;
        Job &job = jobs[i];
        cv.wait(lock, [&] {
          return nextAdmit == i &&
                 (inFlight == 0 ||
                  inFlight + job.stagingBytes <= kStagingBudget);
        });
        inFlight += job.stagingBytes;
        ++nextAdmit;
      }
      cv.notify_all();
      Job &job = jobs[i];
      if (!job.host && job.count) {
        job.staging.resize(job.count);
        job.host = job.staging.data();
      }
      initParam(*job.param, seed, i, job.host, job.count);
      if (job.bf16 && job.count) {
        job.narrow.resize(job.count);
        for (size_t k = 0; k < job.count; ++k)
          job.narrow[k] = floatToBfloat16(job.host[k]);
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        job.done = true;
      }
      cv.notify_all();
    }
  };
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<unsigned>(threads, std::max<uint32_t>(n, 1));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back(work);

  Status status = Status::success();
  for (uint32_t i = 0; i < n; ++i) {
    Job &job = jobs[i];
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return job.done; });
    }
    if (status.ok())
      status = storeParam(*job.param, job.host,
                          job.bf16 && job.count ? job.narrow.data() : nullptr,
                          !job.staging.empty(), job.count);
    std::vector<float>().swap(job.staging);
    std::vector<uint16_t>().swap(job.narrow);
    {
      std::lock_guard<std::mutex> lock(mu);
      inFlight -= job.stagingBytes;
    }
    cv.notify_all();
  }
  for (std::thread &t : pool)
    t.join();
  COLOSSUS_RETURN_IF_ERROR(status);
  return device_->synchronize();
}

Status Session::resetState() {
  const schema::Artifact &a = artifact_->root();
  for (uint32_t i : stateBuffers_)
    COLOSSUS_RETURN_IF_ERROR(
        device_->fillZero(bufferPtrs_[i], a.buffers()->Get(i)->size()));
  return Status::success();
}

Status Session::requireForward() const {
  if (forwardStep_)
    return Status::success();
  return makeError(artifact_->name(),
                   ": the artifact has no forward step (it has a grads step: "
                   "it was compiled with --step=train); forward and generate "
                   "need an artifact compiled with --step=forward");
}

Status Session::requireGrads() const {
  if (gradsStep_)
    return Status::success();
  return makeError(artifact_->name(),
                   ": the artifact has no grads step: compile with "
                   "--step=train");
}

Status Session::writeTokens(const int32_t *ids, size_t count) {
  COLOSSUS_RETURN_IF_ERROR(requireForward());
  if (count > static_cast<size_t>(artifact_->batch() * artifact_->seq()))
    return makeError("writeTokens: ", count, " tokens exceed batch * seq = ",
                     artifact_->batch() * artifact_->seq());
  return device_->copyToDevice(bufferPtrs_[forwardStep_->tokens()], ids,
                               count * sizeof(int32_t));
}

Status Session::runLaunches(const PreparedStep &step, int64_t nb, int64_t nt,
                            int64_t pos0) {
  return device_->runStep(step.id, step.views.data(), step.views.size(), nb, nt,
                          pos0);
}

Status Session::runStep(int64_t nb, int64_t nt, int64_t pos0) {
  COLOSSUS_RETURN_IF_ERROR(requireForward());
  const int64_t B = artifact_->batch(), S = artifact_->seq();
  if (nb < 1 || nb > B || nt < 1 || nt > S || pos0 < 0 || pos0 + nt > S)
    return makeError("invalid active region nb = ", nb, ", nt = ", nt,
                     ", pos0 = ", pos0, " (batch = ", B, ", seq = ", S, ")");
  return runLaunches(forwardLaunches_, nb, nt, pos0);
}

Status Session::readLogits(float *out, size_t rows) {
  COLOSSUS_RETURN_IF_ERROR(requireForward());
  if (rows > static_cast<size_t>(artifact_->batch() * artifact_->seq()))
    return makeError("readLogits: ", rows, " rows exceed batch * seq");
  COLOSSUS_RETURN_IF_ERROR(device_->copyToHost(
      out, bufferPtrs_[forwardStep_->logits()],
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
  COLOSSUS_RETURN_IF_ERROR(requireForward());
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
  COLOSSUS_RETURN_IF_ERROR(requireForward());
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

double gradientNorm(const std::vector<ParamGradient> &grads) {
  double sum = 0.0;
  for (const ParamGradient &g : grads)
    for (float v : g.values)
      sum += static_cast<double>(v) * static_cast<double>(v);
  return std::sqrt(sum);
}

Expected<GradsResult> Session::grads(const int32_t *tokens,
                                     const int32_t *targets,
                                     bool readGradients) {
  return runGrads(tokens, targets, readGradients, /*zeroGradients=*/true);
}

Expected<GradsResult> Session::accumulateGrads(const int32_t *tokens,
                                               const int32_t *targets,
                                               bool readGradients) {
  return runGrads(tokens, targets, readGradients, /*zeroGradients=*/false);
}

Expected<GradsResult> Session::runGrads(const int32_t *tokens,
                                        const int32_t *targets,
                                        bool readGradients,
                                        bool zeroGradients) {
  COLOSSUS_RETURN_IF_ERROR(requireGrads());
  const Artifact &art = *artifact_;
  const schema::Artifact &a = art.root();
  const int64_t B = art.batch(), S = art.seq(), V = vocabSize();
  const size_t count = static_cast<size_t>(B * S);
  if (!tokens || !targets)
    return makeError("grads: the tokens and targets must not be null");
  for (size_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      return makeError("grads: token id ", tokens[i], " at index ", i,
                       " (sample ", static_cast<int64_t>(i) / S, ", position ",
                       static_cast<int64_t>(i) % S, ") is out of range [0, ", V,
                       ")");
    if ((targets[i] < 0 || targets[i] >= V) && targets[i] != kIgnoreIndex)
      return makeError("grads: target id ", targets[i], " at index ", i,
                       " (sample ", static_cast<int64_t>(i) / S, ", position ",
                       static_cast<int64_t>(i) % S, ") is out of range [0, ", V,
                       ") and is not the ignore "
                       "index ",
                       kIgnoreIndex);
  }

  auto start = std::chrono::steady_clock::now();
  const schema::Step &step = *gradsStep_;
  auto bufferSize = [&](uint32_t b) {
    return static_cast<size_t>(a.buffers()->Get(b)->size());
  };
  // The kernels add into the gradient outputs: zeroed for a fresh gradient,
  // kept when accumulating micro-batches. The loss is per micro-batch.
  COLOSSUS_RETURN_IF_ERROR(resetState());
  COLOSSUS_RETURN_IF_ERROR(
      device_->fillZero(bufferPtrs_[step.loss()], bufferSize(step.loss())));
  for (uint32_t b : gradBufferOfParam_)
    if (zeroGradients && bufferSize(b))
      COLOSSUS_RETURN_IF_ERROR(
          device_->fillZero(bufferPtrs_[b], bufferSize(b)));
  COLOSSUS_RETURN_IF_ERROR(device_->copyToDevice(
      bufferPtrs_[step.tokens()], tokens, count * sizeof(int32_t)));
  COLOSSUS_RETURN_IF_ERROR(device_->copyToDevice(
      bufferPtrs_[step.targets()], targets, count * sizeof(int32_t)));
  COLOSSUS_RETURN_IF_ERROR(runLaunches(gradsLaunches_, B, S, 0));

  GradsResult result;
  COLOSSUS_RETURN_IF_ERROR(device_->copyToHost(
      &result.loss, bufferPtrs_[step.loss()], sizeof(float)));
  result.grads.resize(readGradients ? art.numParams() : 0);
  for (uint32_t p = 0; readGradients && p < art.numParams(); ++p) {
    const schema::Param *param = a.params()->Get(p);
    ParamGradient &g = result.grads[p];
    g.name = param->hf_name()->str();
    if (param->shape())
      g.shape.assign(param->shape()->begin(), param->shape()->end());
    const uint32_t b = gradBufferOfParam_[p];
    g.values.resize(bufferSize(b) / sizeof(float));
    if (!g.values.empty())
      COLOSSUS_RETURN_IF_ERROR(device_->copyToHost(
          g.values.data(), bufferPtrs_[b], g.values.size() * sizeof(float)));
  }
  COLOSSUS_RETURN_IF_ERROR(device_->synchronize());
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  auto deviceSeconds = device_->lastStepSeconds();
  if (!deviceSeconds)
    return deviceSeconds.error();
  result.deviceSeconds = *deviceSeconds;
  result.gradNorm = gradientNorm(result.grads);
  return result;
}

Status Session::requireUpdate() const {
  if (updateStep_)
    return Status::success();
  return makeError(artifact_->name(),
                   ": the artifact has no update step: compile with "
                   "--step=train (a colossus-compile that emits the update "
                   "step)");
}

Expected<double> Session::update(double lr, int64_t t, double maxGradNorm,
                                 double gradScale) {
  COLOSSUS_RETURN_IF_ERROR(requireUpdate());
  if (t < 1)
    return makeError("update: the optimizer step t = ", t, " must be >= 1");
  if (!std::isfinite(lr) || !std::isfinite(maxGradNorm))
    return makeError("update: lr = ", lr, " and max_grad_norm = ", maxGradNorm,
                     " must be finite");
  if (!std::isfinite(gradScale) || !(gradScale > 0.0))
    return makeError("update: grad_scale = ", gradScale,
                     " must be finite and > 0");
  const schema::Optimizer &o = *artifact_->root().optimizer();
  const double td = static_cast<double>(t);
  const float hyper[5] = {
      static_cast<float>(lr),
      static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta1()), td)),
      static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta2()), td)),
      static_cast<float>(maxGradNorm > 0.0 ? maxGradNorm : 0.0),
      static_cast<float>(gradScale)};
  const schema::Step &step = *updateStep_;
  const uint32_t gn = step.grad_norm();
  COLOSSUS_RETURN_IF_ERROR(device_->fillZero(
      bufferPtrs_[gn], artifact_->root().buffers()->Get(gn)->size()));
  COLOSSUS_RETURN_IF_ERROR(
      device_->copyToDevice(bufferPtrs_[step.hyper()], hyper, sizeof(hyper)));
  COLOSSUS_RETURN_IF_ERROR(runLaunches(updateLaunches_, 1, 1, 0));
  float norm = 0.0f;
  COLOSSUS_RETURN_IF_ERROR(
      device_->copyToHost(&norm, bufferPtrs_[gn], sizeof(float)));
  COLOSSUS_RETURN_IF_ERROR(device_->synchronize());
  return static_cast<double>(norm);
}

Status Session::copyBuffer(uint32_t buffer, void *out) {
  const size_t size = artifact_->root().buffers()->Get(buffer)->size();
  if (size)
    COLOSSUS_RETURN_IF_ERROR(
        device_->copyToHost(out, bufferPtrs_[buffer], size));
  return device_->synchronize();
}

Status Session::fillBuffer(uint32_t buffer, const void *in) {
  const size_t size = artifact_->root().buffers()->Get(buffer)->size();
  if (size)
    COLOSSUS_RETURN_IF_ERROR(
        device_->copyToDevice(bufferPtrs_[buffer], in, size));
  return device_->synchronize();
}

Status Session::readParam(uint32_t param, float *out) {
  if (param >= artifact_->numParams())
    return makeError("readParam: params[", param, "] is out of range (",
                     artifact_->numParams(), " params)");
  const schema::Param *p = artifact_->root().params()->Get(param);
  // The weights are the f32 master copy when there is one.
  if (p->master() >= 0)
    return copyBuffer(static_cast<uint32_t>(p->master()), out);
  const uint32_t b = p->buffer();
  const schema::Buffer *buf = artifact_->root().buffers()->Get(b);
  if (buf->dtype() != schema::DType::bf16)
    return copyBuffer(b, out);
  std::vector<uint16_t> narrow(buf->size() / 2);
  COLOSSUS_RETURN_IF_ERROR(copyBuffer(b, narrow.data()));
  for (size_t k = 0; k < narrow.size(); ++k)
    out[k] = bfloat16ToFloat(narrow[k]);
  return Status::success();
}

Status Session::writeParam(uint32_t param, const float *values) {
  if (param >= artifact_->numParams())
    return makeError("writeParam: params[", param, "] is out of range (",
                     artifact_->numParams(), " params)");
  const schema::Param *p = artifact_->root().params()->Get(param);
  if (p->master() >= 0)
    COLOSSUS_RETURN_IF_ERROR(
        fillBuffer(static_cast<uint32_t>(p->master()), values));
  const uint32_t b = p->buffer();
  const schema::Buffer *buf = artifact_->root().buffers()->Get(b);
  if (buf->dtype() != schema::DType::bf16)
    return fillBuffer(b, values);
  std::vector<uint16_t> narrow(buf->size() / 2);
  for (size_t k = 0; k < narrow.size(); ++k)
    narrow[k] = floatToBfloat16(values[k]);
  return fillBuffer(b, narrow.data());
}

Status Session::readOptState(uint32_t param, float *expAvg, float *expAvgSq) {
  COLOSSUS_RETURN_IF_ERROR(requireUpdate());
  if (param >= optStateOfParam_.size())
    return makeError("readOptState: params[", param, "] is out of range (",
                     optStateOfParam_.size(), " params)");
  COLOSSUS_RETURN_IF_ERROR(copyBuffer(optStateOfParam_[param].first, expAvg));
  return copyBuffer(optStateOfParam_[param].second, expAvgSq);
}

Status Session::writeOptState(uint32_t param, const float *expAvg,
                              const float *expAvgSq) {
  COLOSSUS_RETURN_IF_ERROR(requireUpdate());
  if (param >= optStateOfParam_.size())
    return makeError("writeOptState: params[", param, "] is out of range (",
                     optStateOfParam_.size(), " params)");
  COLOSSUS_RETURN_IF_ERROR(fillBuffer(optStateOfParam_[param].first, expAvg));
  return fillBuffer(optStateOfParam_[param].second, expAvgSq);
}

} // namespace colossus
