//===- CliTest.cpp - The colossus-run command line ------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Session.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <dlfcn.h>
#include <set>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace {

constexpr int V = 8;

class Cli : public ::testing::Test {
protected:
  void SetUp() override {
    emb = testValues(V * V, 21);
    bias = testValues(V, 22);
    art = dir.file("tiny.colossus");
    weights = dir.file("tiny.safetensors");
    writeFile(art, buildArtifact(tinySpec()));
    writeFile(weights,
              safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb),
                                f32Tensor("model.bias", {V}, bias)}));
  }
  CommandResult run(const std::string &args) {
    return runCommand(std::string(COLOSSUS_RUN_BIN) + " " + args);
  }
  void expectError(const std::string &args, int code,
                   const std::string &message) {
    CommandResult r = run(args);
    EXPECT_EQ(r.exitCode, code) << args << "\n" << r.err;
    EXPECT_THAT(r.err, StartsWith("colossus-run: error: ")) << args;
    EXPECT_THAT(r.err, HasSubstr(message)) << args;
    EXPECT_EQ(r.out, "") << args;
  }

  TempDir dir;
  std::vector<float> emb, bias;
  std::string art, weights;
};

} // namespace

TEST_F(Cli, HelpDocumentsEveryFlag) {
  CommandResult r = run("--help");
  EXPECT_EQ(r.exitCode, 0);
  for (const char *flag :
       {"--weights", "--init=random", "--seed", "--device", "--prompt-ids",
        "--logits-out", "--max-new-tokens", "--temperature", "--top-k",
        "--top-p", "--json", "--help", "info", "forward", "generate"})
    EXPECT_THAT(r.out, HasSubstr(flag));
}

TEST_F(Cli, UsageErrorsExitWith2) {
  expectError("", 2, "missing ARTIFACT");
  expectError(art, 2, "missing command");
  expectError(art + " run", 2, "unknown command 'run'");
  expectError(art + " forward --bogus 1", 2, "unknown option '--bogus'");
  expectError(art + " forward --weights", 2, "missing value for --weights");
  expectError(art + " forward --init=random --logits-out x.npy --prompt-ids "
                    "1,x,3",
              2, "--prompt-ids: 'x' is not an integer");
  expectError(art + " forward --init=random --logits-out x.npy --prompt-ids "
                    "1,,3",
              2, "--prompt-ids");
  expectError(art + " generate --init=random --prompt-ids 1 "
                    "--max-new-tokens 3x",
              2, "--max-new-tokens: '3x'");
  expectError(art + " generate --init=random --prompt-ids 1 --top-p 0", 2,
              "--top-p");
  expectError(art + " generate --init=random --prompt-ids 1 --temperature "
                    "-1",
              2, "--temperature");
  expectError(art + " generate --init=random --prompt-ids 1 --seed -3", 2,
              "--seed");
  expectError(art + " generate --weights " + weights +
                  " --init=random --prompt-ids 1",
              2, "mutually exclusive");
  expectError(art + " generate --prompt-ids 1", 2,
              "needs --weights PATH or --init=random");
  expectError(art + " generate --init=random --prompt-ids 1 --logits-out "
                    "x.npy",
              2, "--logits-out is not an option of the 'generate' command");
  expectError(art + " forward --init=random --prompt-ids 1", 2,
              "needs --logits-out");
  expectError(art + " generate --init=gaussian --prompt-ids 1", 2, "--init");
  expectError(art + " generate --init=random --prompt-ids 1 --device tpu", 2,
              "unknown device 'tpu'");
}

TEST_F(Cli, BadInputsExitWith1) {
  expectError(dir.file("missing.colossus") + " info", 1,
              dir.file("missing.colossus") + ": cannot open");
  std::vector<uint8_t> corrupt = readFile(art);
  corrupt[corrupt.size() / 2] ^= 0x40;
  writeFile(dir.file("corrupt.colossus"), corrupt);
  CommandResult r = run(dir.file("corrupt.colossus") + " info");
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_THAT(r.err, HasSubstr(dir.file("corrupt.colossus")));
  writeFile(dir.file("short.colossus"),
            std::vector<uint8_t>(corrupt.begin(), corrupt.begin() + 100));
  expectError(dir.file("short.colossus") + " generate --init=random "
                                           "--prompt-ids 1",
              1, "corrupt or truncated");
  writeFile(dir.file("partial.safetensors"),
            safetensorsBytes({f32Tensor("model.embed.weight", {V, V}, emb)}));
  expectError(art + " generate --weights " + dir.file("partial.safetensors") +
                  " --prompt-ids 1",
              1, "missing tensor 'model.bias'");
  expectError(art + " generate --weights " + dir.file("none.safetensors") +
                  " --prompt-ids 1",
              1, "cannot open");
  expectError(art + " generate --init=random --device=cuda --prompt-ids 1", 1,
              "runs on the cpu device, not on the cuda device");
  expectError(art + " generate --init=random --prompt-ids 1,99", 1,
              "token id 99 at position 1 is out of range [0, 8)");
  expectError(art + " generate --init=random --prompt-ids 1,2 "
                    "--max-new-tokens 15",
              1, "exceeds the artifact's sequence capacity seq = 16");
  expectError(art + " forward --init=random --prompt-ids 1 --logits-out " +
                  dir.file("no/dir/x.npy"),
              1, "cannot open for writing");
}

TEST_F(Cli, NoCudaDriver) {
  if (void *h = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    ::dlclose(h);
    GTEST_SKIP() << "a CUDA driver is installed on this machine";
  }
  ArtifactSpec spec = tinySpec();
  spec.target = schema::Target::sm_90a;
  spec.cpuObject.clear();
  for (auto &k : spec.kernels)
    k.ptx = ".version 8.0\n.target sm_90a\n.address_size 64\n";
  writeFile(dir.file("gpu.colossus"), buildArtifact(spec));
  expectError(dir.file("gpu.colossus") + " generate --init=random "
                                         "--prompt-ids 1",
              1, "no CUDA driver");
  expectError(dir.file("gpu.colossus") + " generate --init=random "
                                         "--device cpu --prompt-ids 1",
              1, "runs on the cuda device, not on the cpu device");
  CommandResult info = run(dir.file("gpu.colossus") + " info");
  EXPECT_EQ(info.exitCode, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["target"], "sm_90a");
  EXPECT_EQ(j["device"], "cuda");
}

TEST_F(Cli, ForwardWritesNpy) {
  std::string out = dir.file("logits.npy");
  CommandResult r = run(art + " forward --weights " + weights +
                        " --prompt-ids 1,2,3 --logits-out " + out);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::vector<uint8_t> bytes = readFile(out);
  ASSERT_GT(bytes.size(), 10u);
  const size_t headerSize = 10 + (bytes[8] | (bytes[9] << 8));
  EXPECT_EQ(headerSize % 64, 0u);
  ASSERT_EQ(bytes.size(), headerSize + 3 * V * 4);
  EXPECT_THAT(std::string(bytes.begin(), bytes.begin() + headerSize),
              HasSubstr("'shape': (3, 8), }"));
  std::vector<float> logits(3 * V);
  std::memcpy(logits.data(), bytes.data() + headerSize, logits.size() * 4);
  std::vector<float> ref = tinyReference(emb, bias, {}, {1, 2, 3}, 0);
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(logits[i], ref[i], 1e-5f);
  r = run(art + " forward --weights=" + weights +
          " --prompt-ids=4 --logits-out=" + out + " --json");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["shape"], nlohmann::json({1, 8}));
}

TEST_F(Cli, GenerateJsonAndText) {
  auto session =
      Session::create(art, {std::nullopt, WeightsSpec::file(weights)});
  ASSERT_TRUE(session);
  auto expected = (*session)->generate({3, 1, 4}, 6, SamplingParams{});
  ASSERT_TRUE(expected);

  CommandResult r = run(art + " generate --weights " + weights +
                        " --prompt-ids 3,1,4 --max-new-tokens 6 "
                        "--temperature 0 --json");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), expected->tokens);
  EXPECT_EQ(j["prompt_tokens"], 3);
  EXPECT_EQ(j["new_tokens"], 6);
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_TRUE(j["time_s"].is_number());
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);

  r = run(art + " generate --weights " + weights +
          " --prompt-ids 3,1,4 --max-new-tokens 6");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  std::string text;
  for (size_t i = 0; i < expected->tokens.size(); ++i)
    text += (i ? " " : "") + std::to_string(expected->tokens[i]);
  EXPECT_EQ(r.out, text + "\n");

  // Sampling with a seed is reproducible across processes.
  std::string sampled = art + " generate --init=random --seed 9 --prompt-ids "
                              "5 --max-new-tokens 10 --temperature 2 "
                              "--top-k 6 --top-p 0.9 --json";
  auto a = nlohmann::json::parse(run(sampled).out);
  auto b = nlohmann::json::parse(run(sampled).out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
}

TEST_F(Cli, ProfileWritesPerKernelTimes) {
  const std::string gen = art + " generate --weights " + weights +
                          " --prompt-ids 3,1,4 --max-new-tokens 4";
  CommandResult plain = run(gen);
  ASSERT_EQ(plain.exitCode, 0) << plain.err;
  const std::string prof = dir.file("profile.json");
  CommandResult r = run(gen + " --profile " + prof);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_EQ(r.out, plain.out); // profiling does not change the result
  EXPECT_THAT(r.err, HasSubstr("profile: 3 kernels"));
  std::vector<uint8_t> bytes = readFile(prof);
  auto j = nlohmann::json::parse(std::string(bytes.begin(), bytes.end()));
  EXPECT_EQ(j["device"], "cpu");
  ASSERT_EQ(j["kernels"].size(), 3u);
  std::set<std::string> names;
  double shares = 0, total = 0, previous = 1e30;
  for (const auto &k : j["kernels"]) {
    names.insert(k["name"].get<std::string>());
    // The prefill, then one step per new token after the first.
    EXPECT_EQ(k["launches"], 4) << k.dump();
    double t = k["total_s"].get<double>();
    EXPECT_GE(t, 0.0);
    EXPECT_LE(t, previous) << "heaviest first";
    previous = t;
    total += t;
    shares += k["share"].get<double>();
  }
  EXPECT_EQ(names, (std::set<std::string>{"tiny_store_kv", "tiny_embed",
                                          "tiny_logits"}));
  EXPECT_NEAR(j["total_s"].get<double>(), total, 1e-12);
  if (total > 0)
    EXPECT_NEAR(shares, 1.0, 1e-9);

  expectError(gen + " --profile " + dir.file("no/such/dir/p.json"), 1,
              "--profile: ");
  expectError(art + " info --profile " + prof, 2,
              "--profile is not an option of the 'info' command");
}

TEST_F(Cli, InfoPrintsJsonSummary) {
  CommandResult r = run(art + " info");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["target"], "cpu");
  EXPECT_EQ(j["batch"], 1);
  EXPECT_EQ(j["seq"], 16);
  EXPECT_EQ(j["model"]["vocab_size"], 8);
  EXPECT_EQ(j["model"]["family"], "llama");
  EXPECT_EQ(j["kernels"].size(), 3u);
  EXPECT_EQ(j["kernels"][1]["name"], "tiny_embed");
  EXPECT_EQ(j["arena_bytes"], 64 + 16 * 8 * 4);
  EXPECT_EQ(j["params"], 2);
  EXPECT_EQ(j["param_elements"], 72);
}
