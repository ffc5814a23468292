//===- CheckpointTest.cpp - Training checkpoints --------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Checkpoint.h"
#include "colossus/runtime/FileIO.h"
#include "colossus/runtime/OptimizerRef.h"
#include "colossus/runtime/TokenData.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

bool exists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> entries(const std::string &dir) {
  std::vector<std::string> out;
  for (const auto &e : fs::directory_iterator(dir))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

/// A small model's training state: two parameters with m and v, and an
/// extra optimizer tensor.
struct State {
  std::vector<float> emb, norm, embM, embV, normM, normV, extra;
  int64_t step = 0;
  std::string data = "{\"order\":\"random\",\"seed\":7}";

  explicit State(uint32_t seed, int64_t step = 0) : step(step) {
    emb = testValues(12, seed);
    norm = testValues(3, seed + 1);
    embM = testValues(12, seed + 2);
    embV = testValues(12, seed + 3);
    normM = testValues(3, seed + 4);
    normV = testValues(3, seed + 5);
    extra = testValues(2, seed + 6);
  }
  CheckpointContents contents() const {
    CheckpointContents c;
    c.step = step;
    c.params = {
        {{"model.embed.weight", {4, 3}, emb.data()}, embM.data(), embV.data()},
        {{"model.norm.weight", {3}, norm.data()}, normM.data(), normV.data()}};
    c.extraOptimizerTensors = {{"loss_scale_history", {2}, extra.data()}};
    c.dataJson = data;
    c.rngJson = "{\"seed\": 7, \"init\": \"random\"}";
    return c;
  }
};

std::string writeOk(const std::string &dir, const State &s, int keep = 0) {
  auto r = writeCheckpoint(dir, s.contents(), keep);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.message());
  return r.ok() ? r->path : "";
}

void truncateFile(const std::string &path, off_t size) {
  ASSERT_EQ(::truncate(path.c_str(), size), 0) << path;
}

std::vector<float> values(const SafetensorsFile &f, const std::string &name) {
  auto v = tensorValuesF32(f, name);
  EXPECT_TRUE(v.ok()) << (v.ok() ? "" : v.message());
  return v.ok() ? *v : std::vector<float>{};
}

} // namespace

TEST(Checkpoint, DirectoryNames) {
  EXPECT_EQ(checkpointDirName(0), "step-00000000");
  EXPECT_EQ(checkpointDirName(200), "step-00000200");
  EXPECT_EQ(checkpointDirName(123456789), "step-123456789");
  EXPECT_EQ(parseCheckpointDirName("step-00000200"), 200);
  EXPECT_EQ(parseCheckpointDirName("step-123456789"), 123456789);
  EXPECT_EQ(parseCheckpointDirName("step-00000000"), 0);
  for (const char *bad :
       {"step-0000200", "step-000000200", "step-0000020a", "step-",
        ".tmp-step-00000200", "step--0000001", "Step-00000200",
        "step-00000200.tmp", "step-99999999999999999999"})
    EXPECT_FALSE(parseCheckpointDirName(bad)) << bad;
}

TEST(Checkpoint, WriteFindLoad) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt"); // created by the writer
  State s100(10, 100), s200(20, 200);
  s200.data = "{\"seed\":7,\"order\":\"random\",\"next\":{\"step\":201}}";
  EXPECT_EQ(writeOk(dir, s100), dir + "/step-00000100");
  EXPECT_EQ(writeOk(dir, s200), dir + "/step-00000200");
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"step-00000100", "step-00000200"}));
  const std::string p = dir + "/step-00000200";
  EXPECT_EQ(entries(p),
            (std::vector<std::string>{"model.safetensors",
                                      "optimizer.safetensors", "state.json"}));

  // state.json: step, format, the caller's objects, sizes and hashes.
  nlohmann::json state = nlohmann::json::parse(readFile(p + "/state.json"));
  EXPECT_EQ(state["step"], 200);
  EXPECT_EQ(state["format"], 1);
  EXPECT_EQ(state["data"]["next"]["step"], 201);
  EXPECT_EQ(state["rng"]["init"], "random");
  for (const char *f : {"model.safetensors", "optimizer.safetensors"}) {
    auto d = digestFile(p + "/" + f);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(state["files"][f]["bytes"], d->bytes) << f;
    EXPECT_EQ(state["files"][f]["fnv1a64"], formatDigestHex(d->fnv1a64)) << f;
  }

  auto search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok()) << search.message();
  ASSERT_TRUE(search->latest);
  EXPECT_EQ(search->latest->step, 200);
  EXPECT_EQ(search->latest->path, p);
  EXPECT_TRUE(search->warnings.empty());
  EXPECT_TRUE(verifyCheckpoint(dir + "/step-00000100").ok());

  auto ck = loadCheckpoint(p);
  ASSERT_TRUE(ck.ok()) << ck.message();
  EXPECT_EQ(ck->step, 200);
  EXPECT_EQ(ck->path, p);
  EXPECT_EQ(ck->dataJson,
            "{\"next\":{\"step\":201},\"order\":\"random\",\"seed\":7}");
  EXPECT_EQ(ck->rngJson, "{\"init\":\"random\",\"seed\":7}");
  EXPECT_EQ(
      ck->model->names(),
      (std::vector<std::string>{"model.embed.weight", "model.norm.weight"}));
  EXPECT_EQ(ck->model->metadata().at("format"), "pt");
  EXPECT_EQ(values(*ck->model, "model.embed.weight"), s200.emb);
  EXPECT_EQ(values(*ck->model, "model.norm.weight"), s200.norm);
  EXPECT_EQ(ck->optimizer->names(),
            (std::vector<std::string>{
                "loss_scale_history", "model.embed.weight.exp_avg",
                "model.embed.weight.exp_avg_sq", "model.norm.weight.exp_avg",
                "model.norm.weight.exp_avg_sq"}));
  EXPECT_EQ(values(*ck->optimizer, "model.embed.weight.exp_avg"), s200.embM);
  EXPECT_EQ(values(*ck->optimizer, "model.embed.weight.exp_avg_sq"), s200.embV);
  EXPECT_EQ(values(*ck->optimizer, "model.norm.weight.exp_avg"), s200.normM);
  EXPECT_EQ(values(*ck->optimizer, "model.norm.weight.exp_avg_sq"), s200.normV);
  EXPECT_EQ(values(*ck->optimizer, "loss_scale_history"), s200.extra);

  std::vector<float> emb(12);
  ASSERT_TRUE(
      readTensorF32(*ck->model, "model.embed.weight", {4, 3}, emb.data()).ok());
  EXPECT_EQ(emb, s200.emb);
  Status wrongShape =
      readTensorF32(*ck->model, "model.embed.weight", {3, 4}, emb.data());
  EXPECT_THAT(wrongShape.message(),
              HasSubstr("has shape [4, 3], expected [3, 4]"));
  EXPECT_THAT(readTensorF32(*ck->model, "nope", {1}, emb.data()).message(),
              HasSubstr("missing tensor 'nope'"));

  // A checkpoint directory is a --weights argument.
  auto source = WeightSource::open(p);
  ASSERT_TRUE(source.ok()) << source.message();
  EXPECT_TRUE((*source)->tensor("model.norm.weight").ok());

  auto latest = loadLatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok());
  ASSERT_TRUE(latest->checkpoint);
  EXPECT_EQ(latest->checkpoint->step, 200);
}

TEST(Checkpoint, TruncatedModelInTheNewestFallsBack) {
  TempDir tmp;
  const std::string dir = tmp.path();
  writeOk(dir, State(1, 100));
  writeOk(dir, State(2, 200));
  const std::string model = dir + "/step-00000200/model.safetensors";
  auto full = digestFile(model);
  ASSERT_TRUE(full.ok());
  truncateFile(model, static_cast<off_t>(full->bytes / 2));

  auto search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  ASSERT_TRUE(search->latest);
  EXPECT_EQ(search->latest->step, 100);
  ASSERT_EQ(search->warnings.size(), 1u);
  EXPECT_THAT(search->warnings[0], HasSubstr(dir + "/step-00000200: skipped"));
  EXPECT_THAT(search->warnings[0],
              HasSubstr(strCat("model.safetensors is ", full->bytes / 2,
                               " bytes, state.json records ", full->bytes,
                               " (cut off")));

  auto latest = loadLatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok());
  ASSERT_TRUE(latest->checkpoint);
  EXPECT_EQ(latest->checkpoint->step, 100);
  EXPECT_EQ(latest->warnings, search->warnings);
  EXPECT_EQ(values(*latest->checkpoint->model, "model.norm.weight"),
            State(1, 100).norm);

  Status direct = verifyCheckpoint(dir + "/step-00000200");
  EXPECT_THAT(direct.message(), HasSubstr("cut off"));
  EXPECT_FALSE(loadCheckpoint(dir + "/step-00000200").ok());
}

TEST(Checkpoint, FlippedByteIsCaughtByTheChecksum) {
  TempDir tmp;
  const std::string dir = tmp.path();
  writeOk(dir, State(1, 100));
  writeOk(dir, State(2, 200));
  const std::string opt = dir + "/step-00000200/optimizer.safetensors";
  std::vector<uint8_t> bytes = readFile(opt);
  bytes[bytes.size() - 3] ^= 0x10; // inside the last tensor's data
  writeFile(opt, bytes);
  auto search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  ASSERT_TRUE(search->latest);
  EXPECT_EQ(search->latest->step, 100);
  ASSERT_EQ(search->warnings.size(), 1u);
  EXPECT_THAT(search->warnings[0],
              HasSubstr("optimizer.safetensors has FNV-1a 64 0x"));
  EXPECT_THAT(search->warnings[0], HasSubstr("(corrupt)"));
}

TEST(Checkpoint, StrayTmpDirectoryIsIgnored) {
  TempDir tmp;
  const std::string dir = tmp.path();
  writeOk(dir, State(1, 100));
  // A crash in the middle of writing step 300.
  const std::string stray = dir + "/.tmp-step-00000300";
  fs::create_directory(stray);
  writeText(stray + "/model.safetensors", "partial");
  auto search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  ASSERT_TRUE(search->latest);
  EXPECT_EQ(search->latest->step, 100);
  ASSERT_EQ(search->warnings.size(), 1u);
  EXPECT_THAT(search->warnings[0],
              HasSubstr(".tmp-step-00000300: an unfinished checkpoint write, "
                        "ignored"));

  // The next write of that step replaces the leftover; a write of another
  // step removes leftovers.
  writeOk(dir, State(3, 300));
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"step-00000100", "step-00000300"}));
  fs::create_directory(dir + "/.tmp-step-00000350");
  writeOk(dir, State(4, 400));
  EXPECT_FALSE(exists(dir + "/.tmp-step-00000350"));
  search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  EXPECT_EQ(search->latest->step, 400);
  EXPECT_TRUE(search->warnings.empty());
}

TEST(Checkpoint, CorruptOrMissingStateJsonIsSkipped) {
  TempDir tmp;
  const std::string dir = tmp.path();
  writeOk(dir, State(1, 100));
  writeOk(dir, State(2, 200));
  writeOk(dir, State(3, 300));
  writeOk(dir, State(4, 400));
  writeText(dir + "/step-00000400/state.json", "{\"step\": 400, \"form");
  ASSERT_EQ(::unlink((dir + "/step-00000300/state.json").c_str()), 0);
  // state.json of step 100 copied into step 200: a step mismatch.
  writeFile(dir + "/step-00000200/state.json",
            readFile(dir + "/step-00000100/state.json"));

  auto search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  ASSERT_TRUE(search->latest);
  EXPECT_EQ(search->latest->step, 100);
  ASSERT_EQ(search->warnings.size(), 3u);
  EXPECT_THAT(search->warnings[0],
              HasSubstr("step-00000400: skipped: state.json is not a JSON "
                        "object (corrupt)"));
  EXPECT_THAT(search->warnings[1],
              HasSubstr("step-00000300: skipped: no state.json (the "
                        "checkpoint was not completed)"));
  EXPECT_THAT(search->warnings[2],
              HasSubstr("step-00000200: skipped: state.json says step 100, "
                        "the directory name says 200"));

  // Other malformed states.
  struct Case {
    const char *text;
    const char *expect;
  } cases[] = {
      {"{\"step\":100,\"format\":2}", "has format 2, this runtime reads 1"},
      {"{\"step\":100}", "no integer \"format\""},
      {"{\"format\":1,\"step\":\"100\"}", "no non-negative integer \"step\""},
      {"{\"format\":1,\"step\":100,\"data\":[],\"rng\":{}}",
       "no \"data\" object"},
      {"{\"format\":1,\"step\":100,\"data\":{},\"rng\":{}}",
       "no \"files\" object"},
      {"{\"format\":1,\"step\":100,\"data\":{},\"rng\":{},\"files\":{}}",
       "does not list model.safetensors"},
      {"{\"format\":1,\"step\":100,\"data\":{},\"rng\":{},\"files\":{"
       "\"model.safetensors\":{\"bytes\":1,\"fnv1a64\":\"12\"},"
       "\"optimizer.safetensors\":{\"bytes\":1,\"fnv1a64\":\"0x1\"}}}",
       "must be {\"bytes\": n, \"fnv1a64\": \"0x...\"}"},
      {"{\"format\":1,\"step\":100,\"data\":{},\"rng\":{},\"files\":{"
       "\"model.safetensors\":{\"bytes\":1,\"fnv1a64\":\"0x1\"},"
       "\"../x\":{\"bytes\":1,\"fnv1a64\":\"0x1\"},"
       "\"optimizer.safetensors\":{\"bytes\":1,\"fnv1a64\":\"0x1\"}}}",
       "'../x', which is not a plain file name"},
  };
  for (const Case &c : cases) {
    writeText(dir + "/step-00000100/state.json", c.text);
    Status s = verifyCheckpoint(dir + "/step-00000100");
    ASSERT_FALSE(s.ok()) << c.text;
    EXPECT_THAT(s.message(), HasSubstr(c.expect)) << c.text;
  }
  // Nothing valid left.
  search = findLatestCheckpoint(dir);
  ASSERT_TRUE(search.ok());
  EXPECT_FALSE(search->latest);
  EXPECT_EQ(search->warnings.size(), 4u);
}

TEST(Checkpoint, KeepPrunesOlderCheckpoints) {
  TempDir tmp;
  const std::string dir = tmp.path();
  for (int64_t step = 1; step <= 5; ++step) {
    auto r = writeCheckpoint(dir, State(7, step).contents(), /*keep=*/2);
    ASSERT_TRUE(r.ok()) << r.message();
    EXPECT_TRUE(r->warnings.empty());
    if (step >= 3) {
      EXPECT_EQ(r->removed, (std::vector<std::string>{
                                dir + "/" + checkpointDirName(step - 2)}));
    } else {
      EXPECT_TRUE(r->removed.empty());
    }
  }
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"step-00000004", "step-00000005"}));

  // Checkpoints newer than the one written (left by an abandoned run) are
  // not counted and not removed.
  writeOk(dir, State(7, 10), 2);
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"step-00000005", "step-00000010"}));
  writeOk(dir, State(7, 6), 2);
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"step-00000005", "step-00000006",
                                      "step-00000010"}));
  // keep = 0 keeps everything.
  writeOk(dir, State(7, 7), 0);
  EXPECT_EQ(entries(dir).size(), 4u);
}

TEST(Checkpoint, RewritingAStepReplacesIt) {
  TempDir tmp;
  const std::string dir = tmp.path();
  writeOk(dir, State(1, 100));
  State again(2, 100);
  writeOk(dir, again);
  EXPECT_EQ(entries(dir), std::vector<std::string>{"step-00000100"});
  auto ck = loadCheckpoint(dir + "/step-00000100");
  ASSERT_TRUE(ck.ok()) << ck.message();
  EXPECT_EQ(values(*ck->model, "model.embed.weight"), again.emb);
}

TEST(Checkpoint, WriteErrorsLeaveNothingBehind) {
  TempDir tmp;
  const std::string dir = tmp.path();
  State s(1, 100);
  CheckpointContents c = s.contents();
  c.dataJson = "[1, 2]";
  auto r = writeCheckpoint(dir, c);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.message(), HasSubstr("the \"data\" state must be a JSON "
                                     "object, got '[1, 2]'"));
  c = s.contents();
  c.rngJson = "{";
  EXPECT_THAT(writeCheckpoint(dir, c).message(),
              HasSubstr("the \"rng\" state must be a JSON object"));
  c = s.contents();
  c.extraOptimizerTensors.push_back(
      {"model.norm.weight.exp_avg", {3}, s.norm.data()});
  r = writeCheckpoint(dir, c);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.message(),
              HasSubstr("optimizer.safetensors: tensor "
                        "'model.norm.weight.exp_avg' is given twice"));
  c = s.contents();
  c.params[0].expAvgSq = nullptr;
  EXPECT_THAT(writeCheckpoint(dir, c).message(),
              HasSubstr("'model.embed.weight.exp_avg_sq' has no data"));
  c = s.contents();
  c.step = -1;
  EXPECT_THAT(writeCheckpoint(dir, c).message(), HasSubstr("step -1"));
  EXPECT_TRUE(entries(dir).empty());

  // A path under a regular file cannot be created.
  writeText(tmp.file("file"), "x");
  EXPECT_THAT(writeCheckpoint(tmp.file("file/ckpt"), s.contents()).message(),
              HasSubstr("cannot create the directory"));
}

TEST(Checkpoint, MissingOrInvalidDirectory) {
  TempDir tmp;
  auto none = findLatestCheckpoint(tmp.file("does-not-exist"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->latest);
  EXPECT_TRUE(none->warnings.empty());
  auto empty = findLatestCheckpoint(tmp.path());
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->latest);
  auto latest = loadLatestCheckpoint(tmp.file("does-not-exist"));
  ASSERT_TRUE(latest.ok());
  EXPECT_FALSE(latest->checkpoint);

  writeText(tmp.file("plain"), "x");
  auto bad = findLatestCheckpoint(tmp.file("plain"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("not a directory"));
}

TEST(Checkpoint, LoadChecksTheOptimizerTensors) {
  // A checkpoint whose files and hashes are consistent but whose optimizer
  // state lacks a parameter's second moment (a writer bug, not damage).
  TempDir tmp;
  const std::string p = tmp.file("step-00000005");
  fs::create_directory(p);
  std::vector<float> w = testValues(6, 1);
  auto m =
      writeSafetensorsF32(p + "/model.safetensors", {{"w", {2, 3}, w.data()}});
  auto o = writeSafetensorsF32(p + "/optimizer.safetensors",
                               {{"w.exp_avg", {2, 3}, w.data()}});
  ASSERT_TRUE(m.ok() && o.ok());
  nlohmann::json state = {
      {"format", 1},
      {"step", 5},
      {"data", nlohmann::json::object()},
      {"rng", nlohmann::json::object()},
      {"files",
       {{"model.safetensors",
         {{"bytes", m->bytes}, {"fnv1a64", formatDigestHex(m->fnv1a64)}}},
        {"optimizer.safetensors",
         {{"bytes", o->bytes}, {"fnv1a64", formatDigestHex(o->fnv1a64)}}}}}};
  writeText(p + "/state.json", state.dump());
  EXPECT_TRUE(verifyCheckpoint(p).ok());
  auto ck = loadCheckpoint(p);
  ASSERT_FALSE(ck.ok());
  EXPECT_THAT(ck.message(), HasSubstr("missing tensor 'w.exp_avg_sq'"));
}

// The resume contract on a toy training loop built from the pieces of this
// library: batches from TokenData (stateless in the step), a gradient that
// depends on the batch and the parameters, clipping, the LR schedule and
// AdamW. 6 steps straight and 3 steps + checkpoint + load + 3 steps give
// bit-identical parameters and moments.
namespace {

struct ToyRun {
  std::vector<float> w = testValues(6, 11); // [2, 3], decayed
  std::vector<float> b = testValues(3, 12); // [3], not decayed
  std::vector<float> wm = std::vector<float>(6), wv = std::vector<float>(6);
  std::vector<float> bm = std::vector<float>(3), bv = std::vector<float>(3);
};

void toySteps(ToyRun &r, const TokenData &data, int64_t from, int64_t to) {
  const int64_t B = 2, S = 4;
  LrSchedule sched{1e-2, 1e-3, 2, 6};
  AdamWHyper hyper;
  std::vector<int32_t> in(B * S), tg(B * S);
  for (int64_t step = from; step < to; ++step) {
    ASSERT_TRUE(
        data.fillBatch(step, B, S, DataOrder::Random, 99, in.data(), tg.data())
            .ok());
    std::vector<float> gw(6), gb(3);
    for (size_t k = 0; k < 6; ++k)
      gw[k] = r.w[k] * 0.5f + static_cast<float>(in[k % in.size()] % 7) - 3.0f;
    for (size_t k = 0; k < 3; ++k)
      gb[k] = r.b[k] - static_cast<float>(tg[k] % 5);
    clipGradNormRef({{gw.data(), 6}, {gb.data(), 3}}, 1.0);
    const int64_t t = step + 1;
    const double lr = learningRateRef(sched, t);
    adamwStepRef(r.w.data(), gw.data(), r.wm.data(), r.wv.data(), 6, t, lr,
                 hyper, appliesWeightDecay({2, 3}));
    adamwStepRef(r.b.data(), gb.data(), r.bm.data(), r.bv.data(), 3, t, lr,
                 hyper, appliesWeightDecay({3}));
  }
}

} // namespace

TEST(Checkpoint, ResumeIsBitIdentical) {
  TempDir tmp;
  std::vector<uint8_t> tokens;
  for (uint32_t i = 0; i < 64; ++i) {
    uint16_t id = static_cast<uint16_t>((i * 37 + 5) % 50);
    tokens.push_back(static_cast<uint8_t>(id & 0xff));
    tokens.push_back(static_cast<uint8_t>(id >> 8));
  }
  writeFile(tmp.file("tokens.bin"), tokens);
  TokenDataOptions opts;
  opts.dtype = TokenDType::U16;
  opts.seq = 4;
  opts.vocabSize = 50;
  auto data = TokenData::open(tmp.file("tokens.bin"), opts);
  ASSERT_TRUE(data.ok()) << data.message();

  ToyRun straight;
  toySteps(straight, **data, 0, 6);

  ToyRun first;
  toySteps(first, **data, 0, 3);
  CheckpointContents c;
  c.step = 3;
  c.params = {{{"w", {2, 3}, first.w.data()}, first.wm.data(), first.wv.data()},
              {{"b", {3}, first.b.data()}, first.bm.data(), first.bv.data()}};
  c.dataJson = "{\"order\":\"random\",\"seed\":99}";
  const std::string dir = tmp.file("ckpt");
  ASSERT_TRUE(writeCheckpoint(dir, c).ok());

  auto latest = loadLatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok() && latest->checkpoint);
  const LoadedCheckpoint &ck = *latest->checkpoint;
  ToyRun resumed;
  ASSERT_TRUE(readTensorF32(*ck.model, "w", {2, 3}, resumed.w.data()).ok());
  ASSERT_TRUE(readTensorF32(*ck.model, "b", {3}, resumed.b.data()).ok());
  ASSERT_TRUE(
      readTensorF32(*ck.optimizer, "w.exp_avg", {2, 3}, resumed.wm.data())
          .ok());
  ASSERT_TRUE(
      readTensorF32(*ck.optimizer, "w.exp_avg_sq", {2, 3}, resumed.wv.data())
          .ok());
  ASSERT_TRUE(
      readTensorF32(*ck.optimizer, "b.exp_avg", {3}, resumed.bm.data()).ok());
  ASSERT_TRUE(
      readTensorF32(*ck.optimizer, "b.exp_avg_sq", {3}, resumed.bv.data())
          .ok());
  toySteps(resumed, **data, ck.step, 6);

  auto bits = [](const std::vector<float> &v) {
    std::vector<uint32_t> out(v.size());
    std::memcpy(out.data(), v.data(), v.size() * 4);
    return out;
  };
  EXPECT_EQ(bits(resumed.w), bits(straight.w));
  EXPECT_EQ(bits(resumed.b), bits(straight.b));
  EXPECT_EQ(bits(resumed.wm), bits(straight.wm));
  EXPECT_EQ(bits(resumed.wv), bits(straight.wv));
  EXPECT_EQ(bits(resumed.bm), bits(straight.bm));
  EXPECT_EQ(bits(resumed.bv), bits(straight.bv));
  // The parameters did move.
  EXPECT_NE(bits(straight.w), bits(ToyRun().w));
}
