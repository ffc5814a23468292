//===- colossus-run - Run a compiled Colossus artifact --------------------===//
//
// A thin command-line driver over the runtime library (Session.h). See
// docs/runtime.md for the full reference, and `colossus-run --help`.
//
// Exit codes: 0 success, 1 error (files, artifact, weights, device,
// execution), 2 usage error (command line).
//
//===----------------------------------------------------------------------===//

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/Checkpoint.h"
#include "colossus/runtime/FileIO.h"
#include "colossus/runtime/Npy.h"
#include "colossus/runtime/OptimizerRef.h"
#include "colossus/runtime/SafetensorsWriter.h"
#include "colossus/runtime/Session.h"
#include "colossus/runtime/TokenData.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

using namespace colossus;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

const char *kHelp =
    R"(colossus-run: run a compiled Colossus artifact (.colossus)

usage:
  colossus-run ARTIFACT info
  colossus-run ARTIFACT forward  (--weights W | --init=random) --prompt-ids IDS
                                 --logits-out FILE.npy [options]
  colossus-run ARTIFACT generate (--weights W | --init=random) --prompt-ids IDS
                                 [--max-new-tokens N] [sampling options] [--json]
  colossus-run ARTIFACT grads    (--weights W | --init=random) --data TOKENS.bin
                                 [--data-dtype uint16|uint32]
                                 [--data-order sequential|random] [--seed S]
                                 [--step-index K] [--grad-accum M]
                                 [--grads-out G.safetensors] [--json]
  colossus-run ARTIFACT train    (--weights W | --init=random) --data TOKENS.bin
                                 --steps N [--seed S] [--data-dtype ...]
                                 [--data-order random|sequential] [--lr PEAK]
                                 [--warmup K] [--min-lr LR] [--schedule-steps T]
                                 [--max-grad-norm M] [--grad-accum M]
                                 [--checkpoint-dir D [--checkpoint-every K]]
                                 [--resume] [--grads-out G.safetensors] [--json]
  colossus-run --help

commands:
  info       print a JSON summary of the artifact (target, batch, seq, model,
             kernels, steps and their kind, arena bytes, params count); needs
             no weights or device
  forward    one step over the prompt (nb=1, nt=L, pos0=0); writes the logits
             [L, vocab] as float32 .npy
  generate   prefill the prompt, then decode N new tokens one at a time; prints
             the new token ids (space-separated, or one JSON object with --json)
  grads      (an artifact compiled with --step=train) the loss and gradients of
             the batch of data step K (batch B and seq S of the artifact; one
             step with nb=B, nt=S, pos0=0); prints the loss and the global
             gradient norm, writes every gradient with --grads-out

  train      (an artifact with grads and update steps, --step=train) N
             optimizer steps: for s = first .. N-1 the batch of data step s
             (with --grad-accum M: the M micro-batches of data steps s*M ..
             s*M + M-1, their gradients accumulated and averaged),
             the grads step, then the AdamW update step with t = s + 1 and
             lr(t) of the warmup + cosine schedule; prints one line per step
             (one JSON object per line with --json); checkpoints with
             --checkpoint-dir, continues from the newest valid one with
             --resume (see docs/training-runtime.md)

options (a value may be given as --flag VALUE or --flag=VALUE):
  --weights PATH         parameters from a .safetensors file, a sharded
                         model.safetensors.index.json, or a directory holding
                         model.safetensors or model.safetensors.index.json
  --init=random          parameters from a deterministic generator instead of
                         a checkpoint (per Param.init: normal(0, init_std),
                         ones, zeros), seeded by --seed
  --seed N               seed of --init=random, of sampling and of the random
                         data order (default 0)
  --device cpu|cuda      device to run on (default: from the artifact target,
                         cpu -> cpu, sm_90a -> cuda)
  --no-cuda-graphs       cuda: launch every kernel of a step instead of
                         replaying the step as a CUDA graph
  --profile FILE         time every kernel launch (cuda: events around each
                         launch, no CUDA graphs; cpu: the host clock) and
                         write each kernel's launches and device time,
                         heaviest first, as JSON to FILE; the heaviest ten
                         go to stderr. Slows the run: use for diagnosis
  --prompt-ids IDS       comma-separated token ids, e.g. 1,2,3 (forward,
                         generate); each in [0, vocab)
  --logits-out FILE      forward: output .npy file (float32, shape (L, vocab))
  --max-new-tokens N     generate: number of new tokens (default 16);
                         prompt length + N must be <= the artifact's seq
  --temperature T        generate: 0 = greedy argmax (default 0)
  --top-k K              generate: keep the K most likely tokens (0 = off)
  --top-p P              generate: nucleus sampling mass in (0, 1] (1 = off)
  --data PATH            grads, train: token file (flat little-endian uint16 or
                         uint32 ids, no header)
  --data-dtype uint16|uint32
                         grads, train: the token file's dtype (default: from the
                         sidecar PATH.json, {"dtype": "uint16"})
  --data-order sequential|random
                         how batches are drawn (grads: default sequential;
                         train: default random; see docs/training-runtime.md)
  --step-index K         grads: the data step whose batch is used (default 0;
                         with --grad-accum M, the M micro-batches of train's
                         step K: data step K of a global batch of M x B)
  --grads-out FILE       grads, train (first step, before the update): write
                         the gradients (float32, the parameters'
                         HF names and shapes) as .safetensors
  --steps N              train: the run's total number of optimizer steps
                         (also with --resume)
  --lr PEAK              train: peak learning rate (default 3e-4)
  --warmup K             train: linear warmup steps (default 0)
  --min-lr LR            train: final learning rate of the cosine decay
                         (default 0.1 * PEAK)
  --schedule-steps T     train: the schedule's total (default --steps N);
                         a run that is to be resumed later with a larger
                         --steps must use the final total here
  --max-grad-norm M      train: clip the global gradient norm to M (default
                         1.0; 0 = no clipping)
  --grad-accum M         grads, train: micro-batches per step (default 1):
                         the gradient is the mean of M micro-batch gradients
                         (batch B of the artifact each), the loss the mean of
                         their losses; --grads-out writes the mean gradient;
                         a resume needs the checkpoint's M
  --checkpoint-dir D     train: write checkpoints into D (D/step-%08d)
  --checkpoint-every K   train: a checkpoint every K steps (default: only
                         after the last step)
  --resume               train: continue from the newest valid checkpoint of
                         --checkpoint-dir (damaged ones are skipped with a
                         warning); --weights / --init are then not needed
  --json                 forward, generate, grads, train: print JSON objects
                         on stdout (train: one per step)
  -h, --help             print this help and exit

exit codes: 0 success; 1 error (missing or corrupt file, weights mismatch,
device mismatch or failure, bad token id, a token file that cannot be used,
the wrong kind of artifact for the command, cannot write an output); 2 usage
error (unknown flag, missing value, malformed number).
)";

struct UsageError {
  std::string message;
};

[[noreturn]] void usageError(const std::string &msg) { throw UsageError{msg}; }

int error(const std::string &msg) {
  std::fprintf(stderr, "colossus-run: error: %s\n", msg.c_str());
  return kExitError;
}

/// --grads-out: the gradients with their HF names and shapes, f32.
Status writeGradients(const std::string &path,
                      const std::vector<ParamGradient> &grads) {
  std::vector<TensorViewF32> views;
  for (const ParamGradient &g : grads)
    views.push_back({g.name, g.shape, g.values.data()});
  auto written = writeSafetensorsF32(path, views, {{"format", "pt"}});
  if (!written)
    return Error{written.message()};
  return Status();
}

std::optional<int64_t> parseInt(const std::string &s) {
  if (s.empty())
    return std::nullopt;
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
    ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
    --e;
  std::string t = s.substr(b, e - b);
  if (t.empty())
    return std::nullopt;
  for (size_t i = 0; i < t.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(t[i])) &&
        !(i == 0 && (t[i] == '-' || t[i] == '+')))
      return std::nullopt;
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno != 0 || end != t.c_str() + t.size())
    return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<uint64_t> parseUInt(const std::string &s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    return std::nullopt;
  errno = 0;
  char *end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size())
    return std::nullopt;
  return static_cast<uint64_t>(v);
}

std::optional<double> parseDouble(const std::string &s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0])))
    return std::nullopt;
  errno = 0;
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

std::vector<int32_t> parsePromptIds(const std::string &s) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(
        start, comma == std::string::npos ? std::string::npos : comma - start);
    auto v = parseInt(item);
    if (!v)
      usageError("--prompt-ids: '" + item +
                 "' is not an integer (expected "
                 "comma-separated token ids, e.g. 1,2,3)");
    if (*v < INT32_MIN || *v > INT32_MAX)
      usageError("--prompt-ids: " + item + " is out of the int32 range");
    ids.push_back(static_cast<int32_t>(*v));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return ids;
}

struct Options {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values; // flag -> value
  std::set<std::string> flags;               // boolean flags given
  bool help = false;
};

// Flags taking a value, and the commands that accept them.
const std::map<std::string, std::set<std::string>> kValueFlags = {
    {"--weights", {"forward", "generate", "grads", "train"}},
    {"--init", {"forward", "generate", "grads", "train"}},
    {"--seed", {"forward", "generate", "grads", "train"}},
    {"--device", {"forward", "generate", "grads", "train"}},
    {"--prompt-ids", {"forward", "generate"}},
    {"--data", {"grads", "train"}},
    {"--data-dtype", {"grads", "train"}},
    {"--data-order", {"grads", "train"}},
    {"--step-index", {"grads"}},
    {"--grads-out", {"grads", "train"}},
    {"--steps", {"train"}},
    {"--lr", {"train"}},
    {"--warmup", {"train"}},
    {"--min-lr", {"train"}},
    {"--max-grad-norm", {"train"}},
    {"--schedule-steps", {"train"}},
    {"--grad-accum", {"grads", "train"}},
    {"--checkpoint-dir", {"train"}},
    {"--checkpoint-every", {"train"}},
    {"--logits-out", {"forward"}},
    {"--max-new-tokens", {"generate"}},
    {"--temperature", {"generate"}},
    {"--top-k", {"generate"}},
    {"--top-p", {"generate"}},
    {"--profile", {"forward", "generate", "grads", "train"}},
};
const std::map<std::string, std::set<std::string>> kBoolFlags = {
    {"--json", {"forward", "generate", "grads", "train"}},
    {"--resume", {"train"}},
    {"--no-cuda-graphs", {"forward", "generate", "grads", "train"}},
};

Options parseArgs(int argc, char **argv) {
  Options o;
  bool onlyPositional = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (onlyPositional || arg.size() < 2 || arg[0] != '-') {
      o.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      onlyPositional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      o.help = true;
      continue;
    }
    std::string name = arg, value;
    bool hasValue = false;
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      hasValue = true;
    }
    if (kBoolFlags.count(name)) {
      if (hasValue)
        usageError(name + " takes no value");
      o.flags.insert(name);
      continue;
    }
    if (!kValueFlags.count(name))
      usageError("unknown option '" + name + "' (see --help)");
    if (!hasValue) {
      if (i + 1 >= argc)
        usageError("missing value for " + name);
      value = argv[++i];
    }
    if (o.values.count(name))
      usageError(name + " given more than once");
    o.values[name] = value;
  }
  return o;
}

ojson artifactInfo(const Artifact &art) {
  const schema::Artifact &a = art.root();
  ojson j;
  j["artifact"] = art.name();
  j["schema_version"] = a.schema_version();
  j["producer"] = a.producer() ? a.producer()->str() : "";
  j["target"] = targetName(a.target());
  j["device"] = deviceKindName(deviceForTarget(a.target()));
  j["batch"] = a.batch();
  j["seq"] = a.seq();
  ojson m;
  const schema::ModelInfo *mi = a.model();
  m["family"] = mi->family() ? mi->family()->str() : "";
  m["name"] = mi->name() ? mi->name()->str() : "";
  m["vocab_size"] = mi->vocab_size();
  m["hidden_size"] = mi->hidden_size();
  m["num_layers"] = mi->num_layers();
  m["num_heads"] = mi->num_heads();
  m["num_kv_heads"] = mi->num_kv_heads();
  m["head_dim"] = mi->head_dim();
  m["max_position_embeddings"] = mi->max_position_embeddings();
  m["bos_token_id"] = mi->bos_token_id();
  m["eos_token_id"] = mi->eos_token_id();
  j["model"] = m;
  ojson kernels = ojson::array();
  for (uint32_t k = 0; k < art.numKernels(); ++k) {
    const schema::Kernel *kr = a.kernels()->Get(k);
    ojson kj;
    kj["name"] = kr->name()->str();
    kj["kind"] = kr->kind() ? kr->kind()->str() : "";
    ojson ops = ojson::array();
    if (kr->fused_ops())
      for (const auto *op : *kr->fused_ops())
        ops.push_back(op ? op->str() : "");
    kj["fused_ops"] = ops;
    kj["rows"] = kr->rows() == schema::RowExtent::fixed
                     ? ojson(kr->fixed_rows())
                     : ojson("tokens");
    kj["cols"] = kr->cols();
    kj["num_args"] = kr->num_args();
    if (a.target() == schema::Target::sm_90a) {
      kj["block_dim"] = kr->block_dim();
      kj["shared_mem_bytes"] = kr->shared_mem_bytes();
      kj["registers"] = kr->registers();
      kj["spill_bytes"] = kr->spill_bytes();
      kj["cubin_bytes"] = kr->cubin() ? kr->cubin()->size() : 0;
      kj["ptx_bytes"] = kr->ptx() ? kr->ptx()->size() : 0;
      // Kernels with a fixed launch shape and tensor-map parameters (the
      // Hopper GEMM).
      if (kr->grid() && kr->block()) {
        kj["grid"] = ojson(
            std::vector<uint32_t>(kr->grid()->begin(), kr->grid()->end()));
        kj["block"] = ojson(
            std::vector<uint32_t>(kr->block()->begin(), kr->block()->end()));
      }
      if (kr->tensor_maps()) {
        ojson maps = ojson::array();
        for (const schema::TensorMap *t : *kr->tensor_maps()) {
          ojson mj;
          mj["arg"] = t->arg();
          mj["data_type"] = schema::EnumNameTensorMapDataType(t->data_type());
          if (t->global_dim())
            mj["global_dim"] = ojson(std::vector<uint64_t>(
                t->global_dim()->begin(), t->global_dim()->end()));
          if (t->box_dim())
            mj["box_dim"] = ojson(std::vector<uint32_t>(t->box_dim()->begin(),
                                                        t->box_dim()->end()));
          mj["swizzle"] = schema::EnumNameTensorMapSwizzle(t->swizzle());
          maps.push_back(mj);
        }
        kj["tensor_maps"] = maps;
      }
    }
    kj["flops_per_token"] = kr->flops_per_token();
    kj["bytes_per_token"] = kr->bytes_per_token();
    kernels.push_back(kj);
  }
  j["num_kernels"] = art.numKernels();
  j["kernels"] = kernels;
  ojson steps = ojson::array();
  if (a.steps())
    for (const schema::Step *s : *a.steps()) {
      ojson sj;
      sj["name"] = s->name() ? s->name()->str() : "";
      sj["kind"] = schema::EnumNameStepKind(s->kind());
      sj["launches"] = s->launches() ? s->launches()->size() : 0;
      if (s->kind() == schema::StepKind::grads)
        sj["grads"] = s->grads() ? s->grads()->size() : 0;
      if (s->kind() == schema::StepKind::update && a.optimizer()) {
        ojson oj;
        oj["beta1"] = a.optimizer()->beta1();
        oj["beta2"] = a.optimizer()->beta2();
        oj["eps"] = a.optimizer()->eps();
        oj["weight_decay"] = a.optimizer()->weight_decay();
        sj["optimizer"] = oj;
      }
      steps.push_back(sj);
    }
  j["steps"] = steps;
  uint64_t paramBytes = 0, stateBytes = 0, optStateBytes = 0;
  for (uint32_t b = 0; b < art.numBuffers(); ++b) {
    const schema::Buffer *buf = a.buffers()->Get(b);
    if (buf->kind() == schema::BufferKind::param)
      paramBytes += buf->size();
    if (buf->kind() == schema::BufferKind::state)
      stateBytes += buf->size();
    if (buf->kind() == schema::BufferKind::opt_state)
      optStateBytes += buf->size();
  }
  j["arena_bytes"] = a.arena_bytes();
  j["num_buffers"] = art.numBuffers();
  j["params"] = art.numParams();
  uint64_t paramElems = 0;
  for (uint32_t p = 0; p < art.numParams(); ++p)
    paramElems += Artifact::numElements(a.params()->Get(p)->shape());
  j["param_elements"] = paramElems;
  // The parameters' element type ("mixed" if they differ; none: "none").
  std::string paramDtype = "none";
  for (uint32_t p = 0; p < art.numParams(); ++p) {
    std::string d = schema::EnumNameDType(
        a.buffers()->Get(a.params()->Get(p)->buffer())->dtype());
    paramDtype = p == 0 || paramDtype == d ? d : "mixed";
  }
  j["param_dtype"] = paramDtype;
  j["param_bytes"] = paramBytes;
  j["state_bytes"] = stateBytes;
  j["opt_state_bytes"] = optStateBytes;
  j["cpu_object_bytes"] = a.cpu_object() ? a.cpu_object()->size() : 0;
  j["file_bytes"] = art.bytes().size();
  return j;
}

using FlagGetter =
    std::function<std::optional<std::string>(const std::string &)>;

/// Parses the data flags shared by grads and train.
void parseDataFlags(const FlagGetter &get, TokenDataOptions &dopts,
                    DataOrder &order) {
  if (auto d = get("--data-dtype")) {
    dopts.dtype = parseTokenDType(*d);
    if (!dopts.dtype)
      usageError("--data-dtype: unknown dtype '" + *d +
                 "' (expected uint16 or uint32)");
  }
  if (auto d = get("--data-order")) {
    auto o = parseDataOrder(*d);
    if (!o)
      usageError("--data-order: unknown order '" + *d +
                 "' (expected sequential or random)");
    order = *o;
  }
}

/// Opens the token file for artifact `art`: its sequence length and
/// vocabulary size bound what the batches may read.
Expected<std::unique_ptr<TokenData>>
openTokens(const std::string &path, TokenDataOptions dopts,
           const Artifact &art) {
  dopts.seq = art.seq();
  dopts.vocabSize = art.vocabSize();
  return TokenData::open(path, dopts);
}

/// `colossus-run ART grads`: the loss and gradients of one batch.
/// --profile FILE: every kernel's device time over the run (launches, total,
/// mean, share of the total), heaviest first, as JSON; the heaviest few on
/// stderr. Returns 0, or 1 after a message when FILE cannot be written.
int writeProfile(Session &s, const std::optional<std::string> &path) {
  if (!path)
    return 0;
  const schema::Artifact &a = s.artifact().root();
  std::vector<KernelTime> times;
  double total = 0.0;
  for (const KernelTime &t : s.device().kernelTimes())
    if (t.launches > 0) {
      times.push_back(t);
      total += t.seconds;
    }
  std::stable_sort(times.begin(), times.end(),
                   [](const KernelTime &x, const KernelTime &y) {
                     return x.seconds > y.seconds;
                   });
  auto nameOf = [&](uint32_t k) { return a.kernels()->Get(k)->name()->str(); };
  ojson j;
  j["artifact"] = s.artifact().name();
  j["device"] = s.device().description();
  j["timing"] = s.deviceKind() == DeviceKind::Cuda
                    ? "cuda events around each launch, graphs off"
                    : "host clock around each launch";
  j["total_s"] = total;
  ojson list = ojson::array();
  for (const KernelTime &t : times) {
    ojson k;
    k["name"] = nameOf(t.kernel);
    k["launches"] = t.launches;
    k["total_s"] = t.seconds;
    k["mean_s"] = t.seconds / static_cast<double>(t.launches);
    k["share"] = total > 0 ? t.seconds / total : 0.0;
    list.push_back(std::move(k));
  }
  j["kernels"] = std::move(list);
  auto written = writeFileAtomically(*path, j.dump(1) + "\n");
  if (!written)
    return error("--profile: " + written.message());
  std::fprintf(stderr, "profile: %zu kernels, %.6f s of device time -> %s\n",
               times.size(), total, path->c_str());
  for (size_t i = 0; i < times.size() && i < 10; ++i)
    std::fprintf(stderr, "  %6.2f%%  %12.6f s  %6llu x  %s\n",
                 total > 0 ? 100.0 * times[i].seconds / total : 0.0,
                 times[i].seconds,
                 static_cast<unsigned long long>(times[i].launches),
                 nameOf(times[i].kernel).c_str());
  return 0;
}

int runGrads(const std::string &artPath, const SessionOptions &sopts,
             uint64_t seed, bool json, const FlagGetter &get) {
  auto dataPath = get("--data");
  if (!dataPath)
    usageError("the 'grads' command needs --data TOKENS.bin");
  TokenDataOptions dopts;
  DataOrder order = DataOrder::Sequential;
  parseDataFlags(get, dopts, order);
  int64_t stepIndex = 0;
  if (auto k = get("--step-index")) {
    auto v = parseUInt(*k);
    if (!v || *v > static_cast<uint64_t>(INT64_MAX))
      usageError("--step-index: '" + *k + "' is not a non-negative integer");
    stepIndex = static_cast<int64_t>(*v);
  }
  auto gradsOut = get("--grads-out");
  int64_t M = 1;
  if (auto m = get("--grad-accum")) {
    auto v = parseUInt(*m);
    if (!v || *v < 1 || *v > static_cast<uint64_t>(INT32_MAX))
      usageError("--grad-accum: '" + *m + "' is not an integer >= 1");
    M = static_cast<int64_t>(*v);
  }

  auto artifact = Artifact::loadFile(artPath, sopts.device);
  if (!artifact)
    return error(artifact.message());
  const Artifact &art = **artifact;
  if (!art.findStep(schema::StepKind::grads))
    return error(artPath + ": the artifact has no grads step: compile with "
                           "--step=train");
  const int64_t B = art.batch(), S = art.seq();
  auto data = openTokens(*dataPath, dopts, art);
  if (!data)
    return error(data.message());
  std::vector<int32_t> tokens(static_cast<size_t>(B * S)),
      targets(static_cast<size_t>(B * S));
  // With --grad-accum M: micro-batch j is samples [j*B, j*B + B) of data
  // step K of a global batch of M*B (train's micro-batches of its step K).
  auto fill = [&](int64_t j) {
    return M == 1 ? (*data)->fillBatch(stepIndex, B, S, order, seed,
                                       tokens.data(), targets.data())
                  : (*data)->fillSamples(stepIndex, M * B, j * B, B, S, order,
                                         seed, tokens.data(), targets.data());
  };
  if (Status filled = fill(0); !filled)
    return error(filled.message());

  auto session = Session::create(std::move(artifact).value(), sopts);
  if (!session)
    return error(session.message());
  Session &s = **session;
  auto result = s.grads(tokens.data(), targets.data(), M == 1);
  if (!result)
    return error(result.message());
  double lossSum = result->loss, stepSeconds = 0.0;
  auto addTime = [&](const GradsResult &r) {
    // cuda: the step timed on the device (events); cpu: wall time.
    stepSeconds += r.deviceSeconds >= 0 ? r.deviceSeconds : r.seconds;
  };
  addTime(*result);
  for (int64_t j = 1; j < M; ++j) {
    if (Status filled = fill(j); !filled)
      return error(filled.message());
    auto more = s.accumulateGrads(tokens.data(), targets.data(), j == M - 1);
    if (!more)
      return error(more.message());
    lossSum += more->loss;
    addTime(*more);
    if (j == M - 1)
      result->grads = std::move(more->grads);
  }
  if (M > 1) {
    // The buffers hold the sum: the mean gradient, and its norm.
    for (ParamGradient &pg : result->grads)
      for (float &v : pg.values)
        v = static_cast<float>(static_cast<double>(v) / static_cast<double>(M));
    result->gradNorm = gradientNorm(result->grads);
  }
  const double loss = lossSum / static_cast<double>(M);

  if (gradsOut)
    if (Status w = writeGradients(*gradsOut, result->grads); !w)
      return error(w.message());
  if (json) {
    ojson j;
    j["loss"] = loss;
    j["grad_norm"] = result->gradNorm;
    j["tokens"] = M * B * S;
    j["time_s"] = stepSeconds;
    std::cout << j.dump() << "\n";
  } else {
    char line[160];
    std::snprintf(
        line, sizeof(line), "loss %.6f grad_norm %.6f tokens %lld (%.3f s)\n",
        loss, result->gradNorm, static_cast<long long>(M * B * S), stepSeconds);
    std::cout << line;
  }
  std::cout.flush();
  if (!std::cout)
    return error("cannot write to stdout");
  return writeProfile(s, get("--profile"));
}

double positiveOrZeroDouble(const FlagGetter &get, const std::string &flag,
                            double fallback) {
  auto v = get(flag);
  if (!v)
    return fallback;
  auto d = parseDouble(*v);
  if (!d || *d < 0)
    usageError(flag + ": '" + *v + "' is not a number >= 0");
  return *d;
}

int64_t countFlag(const FlagGetter &get, const std::string &flag,
                  int64_t fallback, int64_t min) {
  auto v = get(flag);
  if (!v)
    return fallback;
  auto n = parseUInt(*v);
  if (!n || *n > static_cast<uint64_t>(INT64_MAX) ||
      static_cast<int64_t>(*n) < min)
    usageError(flag + ": '" + *v +
               "' is not an integer >= " + std::to_string(min));
  return static_cast<int64_t>(*n);
}

std::string baseName(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

/// `colossus-run ART train`: grads + update steps over a token file.
int runTrain(const std::string &artPath, SessionOptions sopts, uint64_t seed,
             bool json, bool resume, bool haveWeights, const FlagGetter &get) {
  auto dataPath = get("--data");
  if (!dataPath)
    usageError("the 'train' command needs --data TOKENS.bin");
  if (!get("--steps"))
    usageError("the 'train' command needs --steps N");
  const int64_t N = countFlag(get, "--steps", 0, 1);
  TokenDataOptions dopts;
  DataOrder order = DataOrder::Random;
  parseDataFlags(get, dopts, order);
  LrSchedule schedule;
  schedule.peak = positiveOrZeroDouble(get, "--lr", 3e-4);
  schedule.minLr = positiveOrZeroDouble(get, "--min-lr", 0.1 * schedule.peak);
  schedule.warmup = countFlag(get, "--warmup", 0, 0);
  schedule.total = countFlag(get, "--schedule-steps", N, 1);
  const double maxGradNorm = positiveOrZeroDouble(get, "--max-grad-norm", 1.0);
  const int64_t M = countFlag(get, "--grad-accum", 1, 1);
  auto ckptDir = get("--checkpoint-dir");
  const bool everyGiven = get("--checkpoint-every").has_value();
  const int64_t every = countFlag(get, "--checkpoint-every", 0, 1);
  if (everyGiven && !ckptDir)
    usageError("--checkpoint-every needs --checkpoint-dir D");
  if (resume && !ckptDir)
    usageError("--resume needs --checkpoint-dir D");
  if (!resume && !haveWeights)
    usageError("the 'train' command needs --weights PATH or --init=random");
  auto gradsOut = get("--grads-out");

  auto artifact = Artifact::loadFile(artPath, sopts.device);
  if (!artifact)
    return error(artifact.message());
  const Artifact &art = **artifact;
  if (!art.findStep(schema::StepKind::grads) ||
      !art.findStep(schema::StepKind::update))
    return error(artPath + ": the artifact has no " +
                 (art.findStep(schema::StepKind::grads) ? "update"
                                                        : "grads and update") +
                 " step: compile with --step=train (a colossus-compile that "
                 "emits the update step)");
  const int64_t B = art.batch(), S = art.seq();
  auto data = openTokens(*dataPath, dopts, art);
  if (!data)
    return error(data.message());
  TokenData &tokens = **data;

  const std::string orderName =
      order == DataOrder::Random ? "random" : "sequential";
  ojson dataJ;
  dataJ["file"] = baseName(*dataPath);
  dataJ["tokens"] = tokens.numTokens();
  dataJ["dtype"] = tokenDTypeName(tokens.dtype());
  dataJ["order"] = orderName;
  dataJ["seed"] = seed;
  dataJ["batch"] = B;
  dataJ["seq"] = S;
  dataJ["grad_accum"] = M;
  ojson scheduleJ;
  scheduleJ["lr"] = schedule.peak;
  scheduleJ["min_lr"] = schedule.minLr;
  scheduleJ["warmup"] = schedule.warmup;
  scheduleJ["total"] = schedule.total;
  scheduleJ["max_grad_norm"] = maxGradNorm;
  dataJ["schedule"] = scheduleJ;

  // --resume: the newest valid checkpoint, before the session (it decides
  // whether --weights / --init are needed).
  std::optional<LoadedCheckpoint> ckpt;
  if (resume) {
    auto latest = loadLatestCheckpoint(*ckptDir);
    if (!latest)
      return error(latest.message());
    for (const std::string &w : latest->warnings)
      std::fprintf(stderr, "colossus-run: warning: %s\n", w.c_str());
    if (latest->checkpoint) {
      ckpt = std::move(latest->checkpoint);
      ojson saved = ojson::parse(ckpt->dataJson, nullptr, false);
      if (saved.is_discarded() || !saved.is_object())
        return error(ckpt->path + "/state.json: \"data\" is not an object");
      for (const char *key :
           {"tokens", "dtype", "order", "seed", "batch", "seq"}) {
        if (!saved.contains(key) || saved[key] != dataJ[key])
          return error(ckpt->path + "/state.json: data." + key + " is " +
                       (saved.contains(key) ? saved[key].dump() : "missing") +
                       ", this run has " + dataJ[key].dump() +
                       " (the batches would differ; resume with the same data, "
                       "--data-order, --seed and artifact)");
      }
      // Checkpoints of runs without --grad-accum record 1.
      const int64_t savedM =
          saved.contains("grad_accum") && saved["grad_accum"].is_number_integer()
              ? saved["grad_accum"].get<int64_t>()
              : -1;
      if (savedM != M)
        return error(ckpt->path + "/state.json: data.grad_accum is " +
                     (saved.contains("grad_accum")
                          ? saved["grad_accum"].dump()
                          : std::string("missing")) +
                     ", this run has --grad-accum " + std::to_string(M) +
                     " (the optimizer steps would see different batches; "
                     "resume with --grad-accum " +
                     (savedM > 0 ? std::to_string(savedM) : std::string("M")) +
                     ")");
      if (saved.contains("schedule") &&
          nlohmann::json::parse(saved["schedule"].dump()) !=
              nlohmann::json::parse(scheduleJ.dump()))
        std::fprintf(stderr,
                     "colossus-run: warning: %s: the schedule differs from "
                     "the checkpoint's (%s, this run %s)\n",
                     ckpt->path.c_str(), saved["schedule"].dump().c_str(),
                     scheduleJ.dump().c_str());
    } else if (!haveWeights) {
      usageError("--resume found no checkpoint in " + *ckptDir +
                 ": give --weights PATH or --init=random to start");
    } else {
      std::fprintf(stderr,
                   "colossus-run: warning: no checkpoint in %s, starting "
                   "from step 0\n",
                   ckptDir->c_str());
    }
  }
  if (ckpt && !haveWeights)
    sopts.weights = WeightsSpec::random(seed); // overwritten below

  auto session = Session::create(std::move(artifact).value(), sopts);
  if (!session)
    return error(session.message());
  Session &sess = **session;
  const schema::Artifact &a = sess.artifact().root();
  const uint32_t numParams = sess.artifact().numParams();
  std::vector<std::vector<int64_t>> shapes(numParams);
  std::vector<size_t> counts(numParams);
  for (uint32_t p = 0; p < numParams; ++p) {
    const schema::Param *param = a.params()->Get(p);
    if (param->shape())
      shapes[p].assign(param->shape()->begin(), param->shape()->end());
    counts[p] = static_cast<size_t>(Artifact::numElements(param->shape()));
  }

  int64_t first = 0;
  if (ckpt) {
    std::vector<float> pv, m, v;
    for (uint32_t p = 0; p < numParams; ++p) {
      const std::string name = a.params()->Get(p)->hf_name()->str();
      pv.resize(counts[p]);
      m.resize(counts[p]);
      v.resize(counts[p]);
      Status st = readTensorF32(*ckpt->model, name, shapes[p], pv.data());
      if (st)
        st = readTensorF32(*ckpt->optimizer, name + ".exp_avg", shapes[p],
                           m.data());
      if (st)
        st = readTensorF32(*ckpt->optimizer, name + ".exp_avg_sq", shapes[p],
                           v.data());
      if (!st)
        return error(ckpt->path + ": " + st.message());
      if (Status w = sess.writeParam(p, pv.data()); !w)
        return error(w.message());
      if (Status w = sess.writeOptState(p, m.data(), v.data()); !w)
        return error(w.message());
    }
    first = ckpt->step;
    if (!json)
      std::printf("resumed from %s (step %lld)\n", ckpt->path.c_str(),
                  static_cast<long long>(first));
    ckpt.reset();
  }

  ojson rngJ;
  rngJ["seed"] = seed;
  rngJ["init"] = sopts.weights.kind == WeightsSpec::Kind::Random && haveWeights
                     ? "random"
                     : "weights";
  const std::string dataText = dataJ.dump(), rngText = rngJ.dump();

  auto checkpoint = [&](int64_t step) -> int {
    std::vector<std::vector<float>> pv(numParams), m(numParams), v(numParams);
    CheckpointContents contents;
    contents.step = step;
    contents.dataJson = dataText;
    contents.rngJson = rngText;
    for (uint32_t p = 0; p < numParams; ++p) {
      pv[p].resize(counts[p]);
      m[p].resize(counts[p]);
      v[p].resize(counts[p]);
      if (Status st = sess.readParam(p, pv[p].data()); !st)
        return error(st.message());
      if (Status st = sess.readOptState(p, m[p].data(), v[p].data()); !st)
        return error(st.message());
      contents.params.push_back(
          {{a.params()->Get(p)->hf_name()->str(), shapes[p], pv[p].data()},
           m[p].data(),
           v[p].data()});
    }
    auto written = writeCheckpoint(*ckptDir, contents);
    if (!written)
      return error(written.message());
    for (const std::string &w : written->warnings)
      std::fprintf(stderr, "colossus-run: warning: %s\n", w.c_str());
    if (json) {
      ojson j;
      j["checkpoint"] = written->path;
      std::cout << j.dump() << "\n";
    } else {
      std::cout << "checkpoint " << written->path << "\n";
    }
    return 0;
  };

  std::vector<int32_t> inputs(static_cast<size_t>(B * S)),
      targets(static_cast<size_t>(B * S));
  for (int64_t s = first; s < N; ++s) {
    const int64_t t = s + 1;
    const bool writeGrads = gradsOut && s == first && first == 0;
    auto start = std::chrono::steady_clock::now();
    // Micro-batch j is samples [j*B, j*B + B) of a global batch of M*B
    // (sequential order: data step s*M + j); the grads step adds into the
    // gradient buffers, zeroed for j = 0 only.
    double lossSum = 0.0;
    std::vector<ParamGradient> grads;
    for (int64_t j = 0; j < M; ++j) {
      Status filled = tokens.fillSamples(s, M * B, j * B, B, S, order, seed,
                                         inputs.data(), targets.data());
      if (!filled)
        return error(filled.message());
      const bool read = writeGrads && j == M - 1;
      auto g = j == 0 ? sess.grads(inputs.data(), targets.data(), read)
                      : sess.accumulateGrads(inputs.data(), targets.data(),
                                             read);
      if (!g)
        return error(g.message());
      lossSum += static_cast<double>(g->loss);
      if (read)
        grads = std::move(g->grads);
    }
    const double loss = lossSum / static_cast<double>(M);
    if (writeGrads) {
      // The accumulated mean, before clipping.
      for (ParamGradient &pg : grads)
        for (float &v : pg.values)
          v = static_cast<float>(static_cast<double>(v) /
                                 static_cast<double>(M));
      if (Status w = writeGradients(*gradsOut, grads); !w)
        return error(w.message());
    }
    const double lr = learningRateRef(schedule, t);
    auto norm =
        sess.update(lr, t, maxGradNorm, 1.0 / static_cast<double>(M));
    if (!norm)
      return error(norm.message());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    const double tps =
        seconds > 0 ? static_cast<double>(M * B * S) / seconds : 0.0;
    if (!std::isfinite(loss))
      std::fprintf(stderr, "colossus-run: warning: step %lld: loss is %f\n",
                   static_cast<long long>(t), loss);
    if (json) {
      ojson j;
      j["step"] = t;
      j["loss"] = loss;
      j["grad_norm"] = *norm;
      j["lr"] = lr;
      j["tokens"] = M * B * S;
      j["time_s"] = seconds;
      j["tokens_per_s"] = tps;
      std::cout << j.dump() << "\n";
    } else {
      char line[200];
      std::snprintf(line, sizeof(line),
                    "step %lld/%lld loss %.6f lr %.3e grad_norm %.4f "
                    "(%.3f s, %.0f tokens/s)\n",
                    static_cast<long long>(t), static_cast<long long>(N),
                    loss, lr, *norm, seconds, tps);
      std::cout << line;
    }
    std::cout.flush();
    if (ckptDir && ((every > 0 && t % every == 0) || t == N))
      if (int rc = checkpoint(t); rc != 0)
        return rc;
  }
  if (first >= N && !json)
    std::cout << "nothing to do: the checkpoint is at step " << first
              << ", --steps is " << N << "\n";
  std::cout.flush();
  if (!std::cout)
    return error("cannot write to stdout");
  return writeProfile(sess, get("--profile"));
}

int run(int argc, char **argv) {
  Options o = parseArgs(argc, argv);
  if (o.help) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (o.positional.empty())
    usageError("missing ARTIFACT and command (see --help)");
  if (o.positional.size() < 2)
    usageError("missing command after the artifact: info, forward, "
               "generate, grads or train (see --help)");
  if (o.positional.size() > 2)
    usageError("unexpected argument '" + o.positional[2] + "'");
  const std::string &artPath = o.positional[0];
  const std::string &command = o.positional[1];
  if (command != "info" && command != "forward" && command != "generate" &&
      command != "grads" && command != "train")
    usageError("unknown command '" + command +
               "' (expected info, forward, generate, grads or train)");
  for (const auto &[flag, value] : o.values)
    if (!kValueFlags.at(flag).count(command))
      usageError(flag + " is not an option of the '" + command + "' command");
  for (const std::string &flag : o.flags)
    if (!kBoolFlags.at(flag).count(command))
      usageError(flag + " is not an option of the '" + command + "' command");

  auto get = [&](const std::string &flag) -> std::optional<std::string> {
    auto it = o.values.find(flag);
    if (it == o.values.end())
      return std::nullopt;
    return it->second;
  };

  if (command == "info") {
    auto art = Artifact::loadFile(artPath);
    if (!art)
      return error(art.message());
    std::cout << artifactInfo(**art).dump(2) << "\n";
    return 0;
  }

  // forward / generate / grads: parse everything before loading anything.
  SessionOptions sopts;
  uint64_t seed = 0;
  if (auto s = get("--seed")) {
    auto v = parseUInt(*s);
    if (!v)
      usageError("--seed: '" + *s + "' is not a non-negative integer");
    seed = *v;
  }
  auto weights = get("--weights");
  auto init = get("--init");
  if (init && *init != "random")
    usageError("--init: unknown value '" + *init + "' (expected random)");
  if (weights && init)
    usageError("--weights and --init=random are mutually exclusive");
  const bool resume = o.flags.count("--resume") > 0;
  if (!weights && !init && !(command == "train" && resume))
    usageError("the '" + command +
               "' command needs --weights PATH or --init=random");
  sopts.weights =
      weights ? WeightsSpec::file(*weights) : WeightsSpec::random(seed);
  if (auto d = get("--device")) {
    auto kind = parseDeviceKind(*d);
    if (!kind)
      usageError("--device: unknown device '" + *d +
                 "' (expected cpu or cuda)");
    sopts.device = kind;
  }
  sopts.cudaGraphs = o.flags.count("--no-cuda-graphs") == 0;
  if (auto prof = get("--profile")) {
    // Checked before the run, not after it.
    const std::string parent = parentDirectory(*prof);
    if (prof->empty() || ::access(parent.c_str(), W_OK | X_OK) != 0)
      return error(
          "--profile: cannot write '" + *prof + "' (its directory '" + parent +
          "' " + (prof->empty() ? "is not named" : std::strerror(errno)) + ")");
    sopts.profile = true;
  }
  const bool json = o.flags.count("--json") > 0;
  if (command == "grads")
    return runGrads(artPath, sopts, seed, json, get);
  if (command == "train")
    return runTrain(artPath, sopts, seed, json, resume,
                    weights.has_value() || init.has_value(), get);
  auto idsText = get("--prompt-ids");
  if (!idsText)
    usageError("the '" + command + "' command needs --prompt-ids");
  std::vector<int32_t> ids = parsePromptIds(*idsText);

  std::optional<std::string> logitsOut;
  SamplingParams sampling;
  int64_t maxNew = 16;
  if (command == "forward") {
    logitsOut = get("--logits-out");
    if (!logitsOut)
      usageError("the 'forward' command needs --logits-out FILE.npy");
  } else {
    if (auto s = get("--max-new-tokens")) {
      auto v = parseInt(*s);
      if (!v || *v < 0)
        usageError("--max-new-tokens: '" + *s +
                   "' is not a non-negative integer");
      maxNew = *v;
    }
    if (auto s = get("--temperature")) {
      auto v = parseDouble(*s);
      if (!v || *v < 0)
        usageError("--temperature: '" + *s + "' is not a number >= 0");
      sampling.temperature = *v;
    }
    if (auto s = get("--top-k")) {
      auto v = parseInt(*s);
      if (!v || *v < 0)
        usageError("--top-k: '" + *s + "' is not a non-negative integer");
      sampling.topK = *v;
    }
    if (auto s = get("--top-p")) {
      auto v = parseDouble(*s);
      if (!v || !(*v > 0 && *v <= 1))
        usageError("--top-p: '" + *s + "' is not a number in (0, 1]");
      sampling.topP = *v;
    }
    sampling.seed = seed;
  }

  // The artifact first, so that a grads artifact is named as such before
  // any weights are read.
  auto artifact = Artifact::loadFile(artPath, sopts.device);
  if (!artifact)
    return error(artifact.message());
  if (!(*artifact)->findStep(schema::StepKind::forward))
    return error(artPath +
                 ": the artifact has no forward step (it was "
                 "compiled with --step=train: use the grads "
                 "command); '" +
                 command + "' needs an artifact compiled with --step=forward");
  auto session = Session::create(std::move(artifact).value(), sopts);
  if (!session)
    return error(session.message());
  Session &s = **session;

  if (command == "forward") {
    auto start = std::chrono::steady_clock::now();
    auto logits = s.forward(ids);
    if (!logits)
      return error(logits.message());
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    std::vector<int64_t> shape = {static_cast<int64_t>(ids.size()),
                                  s.vocabSize()};
    Status w = writeNpyF32(*logitsOut, logits->data(), shape);
    if (!w)
      return error(w.message());
    if (json) {
      ojson j;
      j["logits_out"] = *logitsOut;
      j["shape"] = shape;
      j["prompt_tokens"] = ids.size();
      j["device"] = deviceKindName(s.deviceKind());
      j["time_s"] = seconds;
      std::cout << j.dump() << "\n";
    }
    return writeProfile(s, get("--profile"));
  }

  auto result = s.generate(ids, maxNew, sampling);
  if (!result)
    return error(result.message());
  if (json) {
    ojson j;
    j["tokens"] = result->tokens;
    j["prompt_tokens"] = result->promptTokens;
    j["new_tokens"] = result->tokens.size();
    j["device"] = deviceKindName(s.deviceKind());
    j["time_s"] = result->seconds;
    std::cout << j.dump() << "\n";
  } else {
    for (size_t i = 0; i < result->tokens.size(); ++i)
      std::cout << (i ? " " : "") << result->tokens[i];
    std::cout << "\n";
  }
  std::cout.flush();
  if (!std::cout)
    return error("cannot write to stdout");
  return writeProfile(s, get("--profile"));
}

} // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError &e) {
    std::fprintf(stderr, "colossus-run: error: %s\n", e.message.c_str());
    return kExitUsage;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "colossus-run: error: %s\n", e.what());
    return kExitError;
  }
}
