//===- ArtifactTest.cpp - Loading and validating artifacts ----------------===//

#include "TestUtil.h"

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/ArtifactChecksum.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;

namespace {

Expected<std::unique_ptr<Artifact>>
load(const ArtifactSpec &spec, std::optional<DeviceKind> device = {}) {
  return Artifact::loadBuffer(buildArtifact(spec), "t.colossus", device);
}

std::string loadError(const ArtifactSpec &spec,
                      std::optional<DeviceKind> device = {}) {
  auto a = load(spec, device);
  return a ? std::string("<loaded>") : a.message();
}

std::string loadBytesError(std::vector<uint8_t> bytes) {
  auto a =
      Artifact::loadBuffer(std::move(bytes), "t.colossus", DeviceKind::Cpu);
  return a ? std::string("<loaded>") : a.message();
}

} // namespace

TEST(Artifact, LoadsValidArtifact) {
  auto a = load(tinySpec(), DeviceKind::Cpu);
  ASSERT_TRUE(a) << a.message();
  EXPECT_EQ((*a)->target(), schema::Target::cpu);
  EXPECT_EQ((*a)->batch(), 1);
  EXPECT_EQ((*a)->seq(), 16);
  EXPECT_EQ((*a)->vocabSize(), 8);
  EXPECT_EQ((*a)->numKernels(), 3u);
  EXPECT_EQ((*a)->numParams(), 2u);
  EXPECT_NE((*a)->findStep("forward"), nullptr);
  EXPECT_EQ((*a)->findStep("train"), nullptr);
}

TEST(Artifact, LoadsFromFileAndNamesMissingFile) {
  TempDir dir;
  writeFile(dir.file("m.colossus"), buildArtifact(tinySpec()));
  auto a = Artifact::loadFile(dir.file("m.colossus"));
  ASSERT_TRUE(a) << a.message();
  EXPECT_EQ((*a)->name(), dir.file("m.colossus"));
  auto missing = Artifact::loadFile(dir.file("nope.colossus"));
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.message(), HasSubstr(dir.file("nope.colossus")));
  EXPECT_THAT(missing.message(), HasSubstr("cannot open"));
  auto directory = Artifact::loadFile(dir.path());
  ASSERT_FALSE(directory);
  EXPECT_THAT(directory.message(), HasSubstr("not a regular file"));
}

TEST(Artifact, RejectsTruncatedFiles) {
  std::vector<uint8_t> bytes = buildArtifact(tinySpec());
  std::vector<size_t> cuts = {0, 1, 4, 7, 8, 9, 16, 64, 100};
  for (size_t c = 128; c < bytes.size(); c += 331)
    cuts.push_back(c);
  cuts.push_back(bytes.size() / 2);
  cuts.push_back(bytes.size() - 8);
  cuts.push_back(bytes.size() - 1);
  for (size_t cut : cuts) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + cut);
    std::string err = loadBytesError(t);
    EXPECT_THAT(err, HasSubstr("t.colossus")) << "cut " << cut;
    EXPECT_TRUE(err.find("not a Colossus artifact") != std::string::npos ||
                err.find("corrupt or truncated") != std::string::npos ||
                err.find("checksum mismatch") != std::string::npos)
        << "cut " << cut << ": " << err;
  }
}

TEST(Artifact, RejectsFlippedBytes) {
  std::vector<uint8_t> bytes = buildArtifact(tinySpec());
  int rejected = 0;
  for (size_t off = 0; off < bytes.size(); off += 37) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::vector<uint8_t> f = bytes;
      f[off] ^= mask;
      std::string err = loadBytesError(f);
      EXPECT_NE(err, "<loaded>") << "offset " << off;
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
  // The checksum field itself.
  const schema::Artifact *a = schema::GetArtifact(bytes.data());
  // schema::Artifact derives privately from flatbuffers::Table.
  size_t field = reinterpret_cast<const flatbuffers::Table *>(a)->GetAddressOf(
                     schema::Artifact::VT_CHECKSUM) -
                 bytes.data();
  std::vector<uint8_t> f = bytes;
  f[field + 3] ^= 0x10;
  EXPECT_THAT(loadBytesError(f), HasSubstr("checksum mismatch"));
}

TEST(Artifact, RejectsWrongIdentifier) {
  std::vector<uint8_t> bytes = buildArtifact(tinySpec());
  bytes[4] = 'X';
  EXPECT_THAT(loadBytesError(bytes),
              HasSubstr("t.colossus: not a Colossus artifact"));
  EXPECT_THAT(loadBytesError({1, 2, 3}), HasSubstr("not a Colossus artifact"));
}

TEST(Artifact, RejectsWrongSchemaVersion) {
  ArtifactSpec spec = tinySpec();
  spec.schemaVersion = 2;
  EXPECT_THAT(loadError(spec),
              HasSubstr("artifact schema version 2, this runtime reads 1"));
}

TEST(Artifact, RejectsBadChecksum) {
  ArtifactSpec spec = tinySpec();
  spec.stampChecksum = false;
  EXPECT_THAT(loadError(spec), HasSubstr("checksum mismatch"));
}

TEST(Artifact, RejectsTargetDeviceMismatch) {
  EXPECT_THAT(loadError(tinySpec(), DeviceKind::Cuda),
              HasSubstr("compiled for target cpu runs on the cpu device, not "
                        "on the cuda device"));
  ArtifactSpec gpu = tinySpec();
  gpu.target = schema::Target::sm_90a;
  for (auto &k : gpu.kernels)
    k.ptx = ".version 8.0\n";
  EXPECT_THAT(loadError(gpu, DeviceKind::Cpu),
              HasSubstr("compiled for target sm_90a runs on the cuda device"));
  EXPECT_EQ(loadError(gpu, DeviceKind::Cuda), "<loaded>");
  EXPECT_EQ(loadError(gpu), "<loaded>");
}

TEST(Artifact, RejectsOutOfRangeIndices) {
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].launches[1].kernel = 7;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].launches[1].kernel = 7 is "
                                        "out of range (3 kernels)"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].launches[2].args[1] = 42;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].launches[2].args[1] = 42 is "
                                        "out of range (6 buffers)"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].launches[0].args.push_back(1);
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].launches[0] has 3 args, kernels[0] "
                          "'tiny_store_kv' takes num_args = 2"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.params[1].buffer = 6;
    EXPECT_THAT(loadError(s), HasSubstr("params[1] 'model.bias'.buffer = 6 is "
                                        "out of range (6 buffers)"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].tokens = 9;
    EXPECT_THAT(loadError(s), HasSubstr("steps[0].tokens = 9 is out of range"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].logits = 100;
    EXPECT_THAT(loadError(s),
                HasSubstr("steps[0].logits = 100 is out of range"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.arenaBytes = 100;
    EXPECT_THAT(loadError(s), HasSubstr("buffers[5] 'hid': arena range"));
    EXPECT_THAT(loadError(s), HasSubstr("arena_bytes = 100"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.buffers[5].offset = ~uint64_t(0) - 4; // offset + size overflows
    EXPECT_THAT(loadError(s), HasSubstr("does not fit in arena_bytes"));
  }
}

TEST(Artifact, RejectsInconsistentBuffers) {
  {
    ArtifactSpec s = tinySpec();
    s.buffers[2].size = 100;
    EXPECT_THAT(loadError(s),
                HasSubstr("params[0] 'model.embed.weight': shape [8, 8] needs "
                          "256 bytes of f32 but buffers[2] 'emb'.size = 100"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.params[0].buffer = 4; // a state buffer
    EXPECT_THAT(loadError(s), HasSubstr("must be an f32 or bf16 param buffer"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.steps[0].tokens = 1; // the logits buffer
    EXPECT_THAT(loadError(s), HasSubstr("must be an i32 input buffer"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.buffers[1].size = 16;
    EXPECT_THAT(loadError(s), HasSubstr("batch * seq * vocab_size f32 needs"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.seq = 0;
    EXPECT_THAT(loadError(s), HasSubstr("seq = 0 is out of range"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.params[0].shape = {8, -8};
    EXPECT_THAT(loadError(s), HasSubstr("has a negative dimension"));
  }
  {
    ArtifactSpec s = tinySpec();
    s.params[0].shape = {int64_t(1) << 40, int64_t(1) << 40};
    EXPECT_THAT(loadError(s), HasSubstr("is too large"));
  }
}

TEST(Artifact, RestampedMutationsNeverCrashTheLoader) {
  // Mutations with a valid checksum only meet the Verifier and the
  // consistency checks; loading must fail cleanly or succeed, never crash.
  ArtifactSpec spec = tinySpec();
  spec.cpuObject = {0x7f, 'E', 'L', 'F'}; // keep the file small
  std::vector<uint8_t> bytes = buildArtifact(spec);
  int loaded = 0, rejected = 0;
  for (size_t off = 8; off < bytes.size(); ++off) {
    for (uint8_t mask : {0x01, 0x04, 0x20, 0x80, 0xff}) {
      std::vector<uint8_t> f = bytes;
      f[off] ^= mask;
      stampArtifactChecksum(f.data(), f.size());
      auto a = Artifact::loadBuffer(std::move(f), "t.colossus");
      if (a)
        ++loaded;
      else
        ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(loaded, 0);
}
