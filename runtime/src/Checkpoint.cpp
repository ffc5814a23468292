//===- Checkpoint.cpp - Training checkpoints ------------------------------===//

#include "colossus/runtime/Checkpoint.h"
#include "colossus/runtime/FileIO.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace fs = std::filesystem;

namespace colossus {

namespace {

const char *const kModelFile = "model.safetensors";
const char *const kOptimizerFile = "optimizer.safetensors";
const char *const kStateFile = "state.json";
const char *const kTmpPrefix = ".tmp-";
const char *const kOldPrefix = ".old-";
constexpr int64_t kFormat = 1;

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += strCat(i ? ", " : "", shape[i]);
  return s + "]";
}

/// Removes a directory tree; false (with `why`) on failure.
bool removeTree(const std::string &path, std::string &why) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) {
    why = ec.message();
    return false;
  }
  return true;
}

bool exists(const std::string &path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

/// Parses a JSON object text; `what` names it in the error.
Expected<nlohmann::json> parseObject(const std::string &text,
                                     const std::string &what) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return makeError(what, " must be a JSON object, got '",
                     text.size() > 80 ? text.substr(0, 80) + "..." : text, "'");
  return j;
}

/// Step directories of `dir` (by name), and the leftover .tmp- / .old- ones.
struct DirListing {
  std::vector<std::pair<int64_t, std::string>> steps; // (step, name)
  std::vector<std::string> leftovers;                 // names
};

Expected<DirListing> listCheckpointDir(const std::string &dir) {
  DirListing out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec)
    return makeError("checkpoint directory ", dir,
                     ": cannot list: ", ec.message());
  for (; it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (auto step = parseCheckpointDirName(name)) {
      out.steps.emplace_back(*step, name);
      continue;
    }
    for (const char *prefix : {kTmpPrefix, kOldPrefix}) {
      size_t n = std::strlen(prefix);
      if (name.compare(0, n, prefix) == 0 &&
          parseCheckpointDirName(name.substr(n)))
        out.leftovers.push_back(name);
    }
  }
  if (ec)
    return makeError("checkpoint directory ", dir,
                     ": cannot list: ", ec.message());
  std::sort(out.steps.begin(), out.steps.end(),
            [](const auto &a, const auto &b) { return a.first > b.first; });
  std::sort(out.leftovers.begin(), out.leftovers.end());
  return out;
}

/// Reads and checks state.json of `stepDir` and the files it lists.
Expected<nlohmann::json> verifyState(const std::string &stepDir) {
  const std::string statePath = stepDir + "/" + kStateFile;
  struct stat st;
  if (::stat(statePath.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return makeError("no ", kStateFile,
                       " (the checkpoint was not completed)");
    return makeError("cannot read ", kStateFile, ": ", std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode) || st.st_size > (off_t(64) << 20))
    return makeError(kStateFile, " is not a regular file of at most 64 MiB");
  std::ifstream in(statePath, std::ios::binary);
  if (!in)
    return makeError("cannot read ", kStateFile);
  std::ostringstream os;
  os << in.rdbuf();
  nlohmann::json state = nlohmann::json::parse(os.str(), nullptr, false);
  if (state.is_discarded() || !state.is_object())
    return makeError(kStateFile, " is not a JSON object (corrupt)");

  auto format = state.find("format");
  if (format == state.end() || !format->is_number_integer())
    return makeError(kStateFile, " has no integer \"format\"");
  if (format->get<int64_t>() != kFormat)
    return makeError(kStateFile, " has format ", format->get<int64_t>(),
                     ", this runtime reads ", kFormat);
  std::string base = fs::path(stepDir).filename().string();
  if (base.empty()) // "D/step-00000001/"
    base = fs::path(stepDir).parent_path().filename().string();
  auto dirStep = parseCheckpointDirName(base);
  auto step = state.find("step");
  if (step == state.end() || !step->is_number_integer() ||
      step->get<int64_t>() < 0)
    return makeError(kStateFile, " has no non-negative integer \"step\"");
  if (dirStep && *dirStep != step->get<int64_t>())
    return makeError(kStateFile, " says step ", step->get<int64_t>(),
                     ", the directory name says ", *dirStep);
  for (const char *key : {"data", "rng"}) {
    auto v = state.find(key);
    if (v == state.end() || !v->is_object())
      return makeError(kStateFile, " has no \"", key, "\" object");
  }

  auto files = state.find("files");
  if (files == state.end() || !files->is_object())
    return makeError(kStateFile, " has no \"files\" object");
  for (const char *required : {kModelFile, kOptimizerFile})
    if (!files->contains(required))
      return makeError(kStateFile, ": \"files\" does not list ", required);
  for (auto f = files->begin(); f != files->end(); ++f) {
    const std::string &name = f.key();
    if (name.empty() || name == "." || name == ".." ||
        name.find('/') != std::string::npos)
      return makeError(kStateFile, ": \"files\" names '", name,
                       "', which is not a plain file name");
    const nlohmann::json &e = f.value();
    uint64_t want = 0;
    if (!e.is_object() || !e.contains("bytes") ||
        !e["bytes"].is_number_unsigned() || !e.contains("fnv1a64") ||
        !e["fnv1a64"].is_string() ||
        !parseDigestHex(e["fnv1a64"].get<std::string>(), want))
      return makeError(kStateFile, ": \"files\".\"", name,
                       "\" must be {\"bytes\": n, \"fnv1a64\": \"0x...\"}");
    const uint64_t wantBytes = e["bytes"].get<uint64_t>();
    const std::string path = stepDir + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return makeError(name, " is missing");
    if (!S_ISREG(st.st_mode))
      return makeError(name, " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) != wantBytes)
      return makeError(name, " is ", static_cast<uint64_t>(st.st_size),
                       " bytes, ", kStateFile, " records ", wantBytes,
                       " (cut off or overwritten)");
    auto digest = digestFile(path);
    if (!digest)
      return digest.error();
    if (digest->bytes != wantBytes)
      return makeError(name, " changed while it was read");
    if (digest->fnv1a64 != want)
      return makeError(name, " has FNV-1a 64 ",
                       formatDigestHex(digest->fnv1a64), ", ", kStateFile,
                       " records ", formatDigestHex(want), " (corrupt)");
  }
  return state;
}

/// Opens a checked checkpoint's files.
Expected<LoadedCheckpoint> openVerified(const std::string &stepDir,
                                        const nlohmann::json &state) {
  LoadedCheckpoint ck;
  ck.step = state["step"].get<int64_t>();
  ck.path = stepDir;
  ck.dataJson = state["data"].dump();
  ck.rngJson = state["rng"].dump();
  auto model = SafetensorsFile::open(stepDir + "/" + kModelFile);
  if (!model)
    return model.error();
  ck.model = std::move(model).value();
  auto opt = SafetensorsFile::open(stepDir + "/" + kOptimizerFile);
  if (!opt)
    return opt.error();
  ck.optimizer = std::move(opt).value();

  for (const SafetensorsFile *f : {ck.model.get(), ck.optimizer.get()})
    for (const std::string &name : f->names())
      if (f->find(name)->dtype != "F32")
        return makeError(f->path(), ": tensor '", name, "' has dtype ",
                         f->find(name)->dtype, ", checkpoints hold F32");
  for (const std::string &name : ck.model->names()) {
    const SafetensorsTensor *p = ck.model->find(name);
    for (const char *suffix : {".exp_avg", ".exp_avg_sq"}) {
      const SafetensorsTensor *s = ck.optimizer->find(name + suffix);
      if (!s)
        return makeError(ck.optimizer->path(), ": missing tensor '", name,
                         suffix, "'");
      if (s->shape != p->shape)
        return makeError(ck.optimizer->path(), ": tensor '", name, suffix,
                         "' has shape ", shapeText(s->shape),
                         ", the parameter ", shapeText(p->shape));
    }
  }
  return ck;
}

} // namespace

std::string checkpointDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::optional<int64_t> parseCheckpointDirName(const std::string &name) {
  if (name.size() < 13 || name.size() > 24 || name.compare(0, 5, "step-") != 0)
    return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    char c = name[i];
    if (c < '0' || c > '9')
      return std::nullopt;
    if (__builtin_mul_overflow(v, int64_t(10), &v) ||
        __builtin_add_overflow(v, int64_t(c - '0'), &v))
      return std::nullopt;
  }
  if (checkpointDirName(v) != name)
    return std::nullopt;
  return v;
}

Expected<CheckpointWriteResult>
writeCheckpoint(const std::string &dir, const CheckpointContents &contents,
                int keep) {
  const std::string where = strCat("checkpoint ", dir, ": ");
  if (contents.step < 0)
    return makeError(where, "step ", contents.step, " is negative");
  if (keep < 0)
    return makeError(where, "keep ", keep, " is negative");
  auto data = parseObject(contents.dataJson, "the \"data\" state");
  if (!data)
    return makeError(where, data.message());
  auto rng = parseObject(contents.rngJson, "the \"rng\" state");
  if (!rng)
    return makeError(where, rng.message());

  std::vector<TensorViewF32> model, optimizer;
  for (const ParamWithState &p : contents.params) {
    model.push_back(p.param);
    optimizer.push_back({p.param.name + ".exp_avg", p.param.shape, p.expAvg});
    optimizer.push_back(
        {p.param.name + ".exp_avg_sq", p.param.shape, p.expAvgSq});
  }
  for (const TensorViewF32 &t : contents.extraOptimizerTensors)
    optimizer.push_back(t);
  // Check both headers before touching the directory.
  if (auto h = safetensorsHeaderF32(model); !h)
    return makeError(where, kModelFile, ": ", h.message());
  if (auto h = safetensorsHeaderF32(optimizer); !h)
    return makeError(where, kOptimizerFile, ": ", h.message());

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return makeError(where, "cannot create the directory: ", ec.message());

  const std::string name = checkpointDirName(contents.step);
  const std::string tmp = dir + "/" + kTmpPrefix + name;
  const std::string final = dir + "/" + name;
  const std::string old = dir + "/" + kOldPrefix + name;
  std::string why;
  if (exists(tmp) && !removeTree(tmp, why))
    return makeError(where, "cannot remove the leftover ", tmp, ": ", why);
  if (!fs::create_directory(tmp, ec) || ec)
    return makeError(where, "cannot create ", tmp, ": ",
                     ec ? ec.message() : "it exists");

  // Everything below removes `tmp` on failure.
  auto fail = [&](const std::string &message) -> Error {
    std::string ignored;
    removeTree(tmp, ignored);
    return makeError(where, message);
  };
  const SafetensorsMetadata meta = {{"format", "pt"}};
  auto modelDigest = writeSafetensorsF32(tmp + "/" + kModelFile, model, meta);
  if (!modelDigest)
    return fail(modelDigest.message());
  auto optDigest =
      writeSafetensorsF32(tmp + "/" + kOptimizerFile, optimizer, meta);
  if (!optDigest)
    return fail(optDigest.message());

  nlohmann::ordered_json state;
  state["step"] = contents.step;
  state["format"] = kFormat;
  state["data"] = *data;
  state["rng"] = *rng;
  state["files"][kModelFile] = {
      {"bytes", modelDigest->bytes},
      {"fnv1a64", formatDigestHex(modelDigest->fnv1a64)}};
  state["files"][kOptimizerFile] = {
      {"bytes", optDigest->bytes},
      {"fnv1a64", formatDigestHex(optDigest->fnv1a64)}};
  auto stateDigest =
      writeFileAtomically(tmp + "/" + kStateFile, state.dump(2) + "\n");
  if (!stateDigest)
    return fail(stateDigest.message());
  if (Status s = syncDirectory(tmp); !s)
    return fail(s.message());

  // The commit point: the rename of the directory.
  if (exists(final)) {
    if (exists(old) && !removeTree(old, why))
      return fail(strCat("cannot remove the leftover ", old, ": ", why));
    if (::rename(final.c_str(), old.c_str()) != 0)
      return fail(strCat("cannot move the existing ", final,
                         " aside: ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), final.c_str()) != 0)
    return fail(strCat("cannot rename ", tmp, " to ", final, ": ",
                       std::strerror(errno)));
  CheckpointWriteResult result;
  result.path = final;
  if (Status s = syncDirectory(dir); !s)
    return makeError(where, s.message());

  // Leftovers and pruning: failures here are warnings, the checkpoint is
  // committed.
  auto listing = listCheckpointDir(dir);
  if (!listing) {
    result.warnings.push_back(listing.message());
    return result;
  }
  std::vector<std::string> doomed;
  for (const std::string &n : listing->leftovers)
    doomed.push_back(dir + "/" + n);
  if (keep > 0) {
    int kept = 0;
    for (const auto &[step, n] : listing->steps) {
      if (step > contents.step)
        continue; // newer than this run's position: left alone
      if (kept < keep)
        ++kept;
      else
        doomed.push_back(dir + "/" + n);
    }
  }
  for (const std::string &path : doomed) {
    if (removeTree(path, why))
      result.removed.push_back(path);
    else
      result.warnings.push_back(strCat("cannot remove ", path, ": ", why));
  }
  return result;
}

Status verifyCheckpoint(const std::string &stepDir) {
  auto state = verifyState(stepDir);
  if (!state)
    return makeError(stepDir, ": ", state.message());
  return Status::success();
}

Expected<LoadedCheckpoint> loadCheckpoint(const std::string &stepDir) {
  auto state = verifyState(stepDir);
  if (!state)
    return makeError(stepDir, ": ", state.message());
  return openVerified(stepDir, *state);
}

namespace {

/// The walk shared by findLatestCheckpoint and loadLatestCheckpoint: tries
/// the step directories newest first with `accept`, which returns an error
/// to skip one.
template <typename Accept>
Expected<std::vector<std::string>>
walkNewestFirst(const std::string &dir, bool &missing, Accept accept) {
  std::vector<std::string> warnings;
  missing = false;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      missing = true;
      return warnings;
    }
    return makeError("checkpoint directory ", dir, ": ", std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return makeError("checkpoint directory ", dir, ": not a directory");
  auto listing = listCheckpointDir(dir);
  if (!listing)
    return listing.error();
  for (const std::string &n : listing->leftovers)
    warnings.push_back(strCat(dir, "/", n, ": ",
                              n.compare(0, 5, kTmpPrefix) == 0
                                  ? "an unfinished checkpoint write"
                                  : "a checkpoint being replaced",
                              ", ignored"));
  for (const auto &[step, n] : listing->steps) {
    const std::string path = dir + "/" + n;
    Status s = accept(step, path);
    if (s)
      break;
    warnings.push_back(strCat(path, ": skipped: ", s.message()));
  }
  return warnings;
}

} // namespace

Expected<CheckpointSearch> findLatestCheckpoint(const std::string &dir) {
  CheckpointSearch search;
  bool missing = false;
  auto warnings = walkNewestFirst(
      dir, missing, [&](int64_t step, const std::string &path) -> Status {
        auto state = verifyState(path);
        if (!state)
          return state.error();
        search.latest = CheckpointRef{step, path};
        return Status::success();
      });
  if (!warnings)
    return warnings.error();
  search.warnings = std::move(warnings).value();
  return search;
}

Expected<LatestCheckpoint> loadLatestCheckpoint(const std::string &dir) {
  LatestCheckpoint latest;
  bool missing = false;
  auto warnings = walkNewestFirst(
      dir, missing, [&](int64_t, const std::string &path) -> Status {
        auto state = verifyState(path);
        if (!state)
          return state.error();
        auto ck = openVerified(path, *state);
        if (!ck)
          return ck.error();
        latest.checkpoint = std::move(ck).value();
        return Status::success();
      });
  if (!warnings)
    return warnings.error();
  latest.warnings = std::move(warnings).value();
  return latest;
}

Status readTensorF32(const SafetensorsFile &file, const std::string &name,
                     const std::vector<int64_t> &shape, float *out) {
  const SafetensorsTensor *t = file.find(name);
  if (!t)
    return makeError(file.path(), ": missing tensor '", name, "'");
  if (t->dtype != "F32")
    return makeError(file.path(), ": tensor '", name, "' has dtype ", t->dtype,
                     ", expected F32");
  if (t->shape != shape)
    return makeError(file.path(), ": tensor '", name, "' has shape ",
                     shapeText(t->shape), ", expected ", shapeText(shape));
  if (t->bytes)
    std::memcpy(out, t->data, t->bytes);
  return Status::success();
}

Expected<std::vector<float>> tensorValuesF32(const SafetensorsFile &file,
                                             const std::string &name,
                                             std::vector<int64_t> *shape) {
  const SafetensorsTensor *t = file.find(name);
  if (!t)
    return makeError(file.path(), ": missing tensor '", name, "'");
  if (t->dtype != "F32")
    return makeError(file.path(), ": tensor '", name, "' has dtype ", t->dtype,
                     ", expected F32");
  std::vector<float> values(t->bytes / 4);
  if (t->bytes)
    std::memcpy(values.data(), t->data, t->bytes);
  if (shape)
    *shape = t->shape;
  return values;
}

} // namespace colossus
