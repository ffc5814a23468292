//===- CudaFakeTest.cpp - The cuda device against a fake libcuda ----------===//
//
// COLOSSUS_LIBCUDA points the cuda device at FakeCuda.cpp's library: device
// memory is host memory, the tiny model's C kernels are registered as the
// fake's host kernels, and every driver call is logged. Nothing here runs
// on a GPU.
//
//===----------------------------------------------------------------------===//

#include "TestUtil.h"

#include "colossus/runtime/Session.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>
#include <sstream>

using namespace colossus;
using namespace colossus::test;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

using HostKernel = void (*)(void **, int64_t, int64_t, int64_t);

/// The fake's control functions (the library stays loaded: the device's
/// dlopen of the same path gets the same instance).
struct Fake {
  void (*reset)();
  const char *(*log)();
  void (*clearLog)();
  void (*fail)(const char *, int);
  void (*setAttribute)(int, int);
  void (*setDriverVersion)(int);
  void (*registerKernel)(const char *, HostKernel);
  int (*liveObjects)();

  static Fake &get() {
    static Fake f = [] {
      Fake f{};
      void *h = ::dlopen(COLOSSUS_FAKE_CUDA_SO, RTLD_NOW | RTLD_LOCAL);
      if (!h)
        return f;
      f.reset = reinterpret_cast<void (*)()>(::dlsym(h, "fakecuda_reset"));
      f.log = reinterpret_cast<const char *(*)()>(::dlsym(h, "fakecuda_log"));
      f.clearLog =
          reinterpret_cast<void (*)()>(::dlsym(h, "fakecuda_clear_log"));
      f.fail = reinterpret_cast<void (*)(const char *, int)>(
          ::dlsym(h, "fakecuda_fail"));
      f.setAttribute = reinterpret_cast<void (*)(int, int)>(
          ::dlsym(h, "fakecuda_set_attribute"));
      f.setDriverVersion = reinterpret_cast<void (*)(int)>(
          ::dlsym(h, "fakecuda_set_driver_version"));
      f.registerKernel = reinterpret_cast<void (*)(const char *, HostKernel)>(
          ::dlsym(h, "fakecuda_register_kernel"));
      f.liveObjects =
          reinterpret_cast<int (*)()>(::dlsym(h, "fakecuda_live_objects"));
      return f;
    }();
    return f;
  }
};

std::vector<uint8_t> textImage(const std::string &text) {
  std::vector<uint8_t> bytes(text.begin(), text.end());
  bytes.push_back(0);
  return bytes;
}

/// tinySpec() compiled "for sm_90a": each kernel's cubin declares it to the
/// fake with its number of pointer arguments.
ArtifactSpec cudaTinySpec() {
  ArtifactSpec spec = tinySpec();
  spec.target = schema::Target::sm_90a;
  spec.cpuObject.clear();
  for (KernelSpec &k : spec.kernels)
    k.cubin =
        textImage("fake-cubin " + k.name + "=" + std::to_string(k.numArgs));
  spec.kernels[1].blockDim = 4; // tiny_embed: R * 8 / 4 blocks
  return spec;
}

std::vector<std::string> lines(const std::string &text, const std::string &p) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(p, 0) == 0)
      out.push_back(line);
  return out;
}

class CudaFake : public ::testing::Test {
protected:
  void SetUp() override {
    Fake &f = Fake::get();
    ASSERT_NE(f.reset, nullptr) << "cannot load " COLOSSUS_FAKE_CUDA_SO;
    f.reset();
    ::setenv("COLOSSUS_LIBCUDA", COLOSSUS_FAKE_CUDA_SO, 1);
    void *kernels = ::dlopen(COLOSSUS_TEST_KERNELS_SO, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(kernels, nullptr);
    for (const char *name : {"tiny_store_kv", "tiny_embed", "tiny_logits"})
      f.registerKernel(name,
                       reinterpret_cast<HostKernel>(::dlsym(kernels, name)));
  }
  void TearDown() override { ::unsetenv("COLOSSUS_LIBCUDA"); }

  Expected<std::unique_ptr<Session>> open(const ArtifactSpec &spec,
                                          SessionOptions options = {}) {
    auto art = Artifact::loadBuffer(buildArtifact(spec), "gpu.colossus");
    if (!art)
      return art.error();
    options.weights = WeightsSpec::random(7);
    return Session::create(std::move(art).value(), options);
  }
  std::string log() { return Fake::get().log(); }
};

/// The logits of the cpu device for the same prompt and seed.
std::vector<float> cpuLogits(const std::vector<int32_t> &prompt) {
  auto art = Artifact::loadBuffer(buildArtifact(tinySpec()), "cpu.colossus");
  EXPECT_TRUE(art) << art.message();
  auto s = Session::create(std::move(art).value(),
                           {std::nullopt, WeightsSpec::random(7)});
  EXPECT_TRUE(s) << s.message();
  auto logits = (*s)->forward(prompt);
  EXPECT_TRUE(logits) << logits.message();
  return *logits;
}

TEST_F(CudaFake, OverrideOfTheDriverLibraryIsUsed) {
  ::setenv("COLOSSUS_LIBCUDA", "/nonexistent/libcuda-test.so", 1);
  auto device = createDevice(DeviceKind::Cuda);
  ASSERT_FALSE(device);
  EXPECT_THAT(device.message(),
              HasSubstr("no CUDA driver: /nonexistent/libcuda-test.so could "
                        "not be loaded"));
}

TEST_F(CudaFake, ForwardLoadsLaunchesAndCopies) {
  {
    SessionOptions plain;
    plain.cudaGraphs = false; // one cuLaunchKernel per launch, run at once
    auto s = open(cudaTinySpec(), plain);
    ASSERT_TRUE(s) << s.message();
    EXPECT_EQ((*s)->deviceKind(), DeviceKind::Cuda);
    EXPECT_THAT((*s)->device().description(),
                HasSubstr("cuda:0 Fake H100 (sm_90)"));
    EXPECT_EQ(lines(log(), "cuModuleLoadData fake-cubin").size(), 3u);
    const std::vector<int32_t> prompt = {3, 1, 4};
    Fake::get().clearLog();
    auto logits = (*s)->forward(prompt);
    ASSERT_TRUE(logits) << logits.message();
    // The host kernels ran on the fake's "device memory": the numbers are
    // the cpu device's.
    EXPECT_EQ(*logits, cpuLogits(prompt));
    std::string l = log();
    // Allocations: a0 = arena, a1 tokens, a2 logits, a3 emb, a4 bias, a5 kv;
    // hid is arena + 64. tiny_embed: 3 rows * 8 cols / 4 threads = 6 blocks.
    EXPECT_THAT(l, HasSubstr("HtoD a1+0 12\n"));
    auto launches = lines(l, "launch ");
    ASSERT_EQ(launches.size(), 3u) << l;
    EXPECT_THAT(launches[0],
                HasSubstr("tiny_store_kv grid=1,1,1 block=128,1,1 smem=0 "
                          "args=a1+0,a5+0 region=1,3,0"));
    EXPECT_THAT(launches[1],
                HasSubstr("tiny_embed grid=6,1,1 block=4,1,1 smem=0 "
                          "args=a1+0,a3+0,a4+0,a0+64 region=1,3,0"));
    EXPECT_THAT(launches[2], HasSubstr("tiny_logits grid=1,1,1 block=128,1,1 "
                                       "smem=0 args=a0+64,a5+0,a2+0"));
  }
  // Modules, allocations (and graphs) are all released.
  EXPECT_EQ(Fake::get().liveObjects(), 0);
}

TEST_F(CudaFake, DynamicSharedMemoryAttributeAndLimit) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[2].sharedMemBytes = 100000;
  SessionOptions plain;
  plain.cudaGraphs = false;
  auto s = open(spec, plain);
  ASSERT_TRUE(s) << s.message();
  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8, only above 48 KiB.
  EXPECT_THAT(log(), HasSubstr("cuFuncSetAttribute tiny_logits 8 100000"));
  EXPECT_EQ(lines(log(), "cuFuncSetAttribute").size(), 1u);
  ASSERT_TRUE((*s)->forward({1, 2}));
  EXPECT_THAT(log(), HasSubstr("tiny_logits grid=1,1,1 block=128,1,1 "
                               "smem=100000"));
  s->reset();

  Fake::get().setAttribute(97, 65536); // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
  auto t = open(spec);
  ASSERT_FALSE(t);
  EXPECT_THAT(t.message(),
              HasSubstr("gpu.colossus: kernels[2] 'tiny_logits': "
                        "shared_mem_bytes = 100000 exceeds the device limit "
                        "of 65536"));
}

TEST_F(CudaFake, CubinThatFailsToLoadNamesTheKernel) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[1].cubin = textImage("bad cubin");
  auto s = open(spec);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("gpu.colossus: kernels[1] 'tiny_embed': "
                                     "cuModuleLoadData(cubin) failed: "
                                     "CUDA_ERROR_INVALID_IMAGE (200)"));
  EXPECT_EQ(lines(log(), "cuModuleLoadDataEx").size(), 0u);
}

TEST_F(CudaFake, PtxFallbackWhenTheCubinDoesNotLoad) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[1].cubin = textImage("bad cubin");
  spec.kernels[1].ptx = "fake-ptx tiny_embed=4 .version 8.3";
  auto s = open(spec);
  ASSERT_TRUE(s) << s.message();
  EXPECT_THAT(log(), HasSubstr("cuModuleLoadData bad\n"
                               "cuModuleLoadDataEx fake-ptx\n"));
  auto logits = (*s)->forward({5, 6});
  ASSERT_TRUE(logits) << logits.message();
  EXPECT_EQ(*logits, cpuLogits({5, 6}));
}

TEST_F(CudaFake, PtxTooNewForTheDriverIsNotJitted) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[1].cubin = textImage("bad cubin");
  spec.kernels[1].ptx = "fake-ptx tiny_embed=4 .version 8.3";
  Fake::get().setDriverVersion(12020);
  auto s = open(spec);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(),
              HasSubstr("kernels[1] 'tiny_embed': cuModuleLoadData(cubin) "
                        "failed: CUDA_ERROR_INVALID_IMAGE (200): fake driver "
                        "error; its PTX (ISA 8.3) cannot be JIT-compiled by "
                        "this driver: it needs CUDA 12.3 or newer, the "
                        "driver is CUDA 12.2"));
  EXPECT_EQ(lines(log(), "cuModuleLoadDataEx").size(), 0u);
}

TEST_F(CudaFake, PtxJitErrorCarriesTheLog) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[0].cubin.clear();
  spec.kernels[0].ptx = "bad ptx .version 8.0";
  auto s = open(spec);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(),
              HasSubstr("kernels[0] 'tiny_store_kv': cuModuleLoadDataEx(ptx) "
                        "failed: CUDA_ERROR_INVALID_PTX (218): fake driver "
                        "error: ptxas fatal: fake JIT error"));
}

TEST_F(CudaFake, MissingFunctionInTheModule) {
  ArtifactSpec spec = cudaTinySpec();
  spec.kernels[2].cubin = textImage("fake-cubin other=3");
  auto s = open(spec);
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(),
              HasSubstr("kernels[2] 'tiny_logits': cuModuleGetFunction "
                        "failed: CUDA_ERROR_NOT_FOUND (500)"));
}

TEST_F(CudaFake, ComputeCapabilityMustBe90ForSm90a) {
  Fake::get().setAttribute(75, 8); // COMPUTE_CAPABILITY_MAJOR
  auto s = open(cudaTinySpec());
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("artifact target sm_90a needs a GPU of "
                                     "compute capability 9.0"));
  EXPECT_THAT(s.message(), HasSubstr("has compute capability 8.0"));
}

TEST_F(CudaFake, LaunchAndAllocationFailuresAreErrors) {
  auto s = open(cudaTinySpec());
  ASSERT_TRUE(s) << s.message();
  Fake::get().fail("cuLaunchKernel", 1);
  auto logits = (*s)->forward({1});
  ASSERT_FALSE(logits);
  EXPECT_THAT(logits.message(),
              HasSubstr("cuLaunchKernel('tiny_store_kv', grid 1, block 128, "
                        "shared 0) failed: CUDA_ERROR_INVALID_VALUE (1)"));
  s->reset();
  Fake::get().fail("cuMemAlloc", 2);
  auto t = open(cudaTinySpec());
  ASSERT_FALSE(t);
  EXPECT_THAT(t.message(), HasSubstr("gpu.colossus: cuMemAlloc("));
  EXPECT_THAT(t.message(), HasSubstr("bytes for the activation arena) "
                                     "failed: CUDA_ERROR_UNKNOWN (2)"));
}

TEST_F(CudaFake, StepIsTimedWithEventsOnTheStream) {
  SessionOptions plain;
  plain.cudaGraphs = false;
  auto s = open(cudaTinySpec(), plain);
  ASSERT_TRUE(s) << s.message();
  auto none = (*s)->lastStepDeviceSeconds();
  ASSERT_TRUE(none);
  EXPECT_LT(*none, 0.0); // no step ran yet
  Fake::get().clearLog();
  ASSERT_TRUE((*s)->forward({1, 2, 3}));
  // start event, the three launches, end event.
  std::string l = log();
  auto start = l.find("cuEventRecord\nlaunch tiny_store_kv");
  auto end = l.find("run tiny_logits 1,3,0\ncuEventRecord\n");
  EXPECT_NE(start, std::string::npos) << l;
  EXPECT_NE(end, std::string::npos) << l;
  // The fake clock advances 0.25 ms per kernel run: 3 kernels.
  auto t = (*s)->lastStepDeviceSeconds();
  ASSERT_TRUE(t) << t.message();
  EXPECT_DOUBLE_EQ(*t, 0.00075);

  // The cpu device does not time steps.
  auto art = Artifact::loadBuffer(buildArtifact(tinySpec()), "cpu.colossus");
  ASSERT_TRUE(art);
  auto cpu = Session::create(std::move(art).value(),
                             {std::nullopt, WeightsSpec::random(7)});
  ASSERT_TRUE(cpu);
  ASSERT_TRUE((*cpu)->forward({1, 2, 3}));
  auto c = (*cpu)->lastStepDeviceSeconds();
  ASSERT_TRUE(c);
  EXPECT_LT(*c, 0.0);
}

TEST_F(CudaFake, GraphIsCapturedOnceAndReplayed) {
  SessionOptions first; // graphs are on by default; capture the first run
  first.cudaGraphAfterRuns = 1;
  auto s = open(cudaTinySpec(), first);
  ASSERT_TRUE(s) << s.message();
  const std::vector<int32_t> prompt = {3, 1, 4};
  const std::vector<float> expected = cpuLogits(prompt);
  Fake::get().clearLog();
  for (int i = 0; i < 4; ++i) {
    auto logits = (*s)->forward(prompt);
    ASSERT_TRUE(logits) << logits.message();
    EXPECT_EQ(*logits, expected) << "run " << i;
  }
  std::string l = log();
  EXPECT_EQ(lines(l, "cuStreamBeginCapture").size(), 1u) << l;
  EXPECT_EQ(lines(l, "cuGraphInstantiate").size(), 1u);
  EXPECT_EQ(lines(l, "cuGraphLaunch 3 launches").size(), 4u);
  EXPECT_EQ(lines(l, "launch ").size(), 3u); // captured, not re-launched
  EXPECT_EQ(lines(l, "run ").size(), 12u);   // executed on every replay
  EXPECT_EQ(lines(l, "cuEventRecord").size(), 8u);
  // The first run: events outside the capture, the graph launched once
  // captured.
  EXPECT_THAT(l, HasSubstr("cuEventRecord\n"
                           "cuStreamBeginCapture mode=1\n"
                           "launch tiny_store_kv [captured]"));
  EXPECT_THAT(l, HasSubstr("region=1,3,0\n"
                           "cuStreamEndCapture 3 launches\n"
                           "cuGraphInstantiate\n"
                           "cuGraphLaunch 3 launches\n"
                           "run tiny_store_kv 1,3,0\n"
                           "run tiny_embed 1,3,0\n"
                           "run tiny_logits 1,3,0\n"
                           "cuEventRecord\n"));
  auto t = (*s)->lastStepDeviceSeconds();
  ASSERT_TRUE(t);
  EXPECT_DOUBLE_EQ(*t, 0.00075);

  // Another region is another graph; the first is still replayed.
  Fake::get().clearLog();
  ASSERT_TRUE((*s)->forward({3, 1}));
  ASSERT_TRUE((*s)->forward(prompt));
  l = log();
  EXPECT_EQ(lines(l, "cuGraphInstantiate").size(), 1u);
  EXPECT_EQ(lines(l, "cuGraphLaunch").size(), 2u);

  // Generation: prefill then decode steps at pos0 = 3, 4 (one graph each).
  Fake::get().clearLog();
  auto g = (*s)->generate(prompt, 3, SamplingParams{});
  ASSERT_TRUE(g) << g.message();
  l = log();
  EXPECT_EQ(lines(l, "cuGraphInstantiate").size(), 2u) << l;
  EXPECT_THAT(l, HasSubstr("region=1,1,3\n"));
  EXPECT_THAT(l, HasSubstr("region=1,1,4\n"));
}

TEST_F(CudaFake, ByDefaultAStepIsCapturedOnItsSecondRun) {
  auto s = open(cudaTinySpec());
  ASSERT_TRUE(s) << s.message();
  const std::vector<int32_t> prompt = {3, 1, 4};
  const std::vector<float> expected = cpuLogits(prompt);
  Fake::get().clearLog();
  for (int i = 0; i < 3; ++i) {
    auto logits = (*s)->forward(prompt);
    ASSERT_TRUE(logits) << logits.message();
    EXPECT_EQ(*logits, expected) << "run " << i;
  }
  std::string l = log();
  // Run 1 kernel by kernel, run 2 captured and launched, run 3 replayed.
  EXPECT_EQ(lines(l, "cuStreamBeginCapture").size(), 1u) << l;
  EXPECT_EQ(lines(l, "cuGraphLaunch 3 launches").size(), 2u);
  EXPECT_EQ(lines(l, "run ").size(), 9u);
  EXPECT_LT(l.find("launch tiny_store_kv grid="),
            l.find("cuStreamBeginCapture"));

  // Generation: the prefill (1, 3, 0) replays that graph; every decode
  // step has its own pos0, runs once and is not captured.
  Fake::get().clearLog();
  auto g = (*s)->generate(prompt, 4, SamplingParams{});
  ASSERT_TRUE(g) << g.message();
  l = log();
  EXPECT_EQ(lines(l, "cuStreamBeginCapture").size(), 0u) << l;
  EXPECT_EQ(lines(l, "cuGraphLaunch").size(), 1u);
  EXPECT_EQ(lines(l, "launch tiny_store_kv grid=").size(), 3u);
  // A second generation from the same prompt length repeats those pos0s:
  // now each decode step is captured (its second run).
  Fake::get().clearLog();
  ASSERT_TRUE((*s)->generate(prompt, 4, SamplingParams{}));
  EXPECT_EQ(lines(log(), "cuGraphInstantiate").size(), 3u) << log();
}

TEST_F(CudaFake, GraphsCanBeTurnedOff) {
  SessionOptions plain;
  plain.cudaGraphs = false;
  auto s = open(cudaTinySpec(), plain);
  ASSERT_TRUE(s) << s.message();
  ASSERT_TRUE((*s)->forward({1}));
  ASSERT_TRUE((*s)->forward({1}));
  EXPECT_EQ(lines(log(), "cuStreamBeginCapture").size(), 0u);
  EXPECT_EQ(lines(log(), "cuGraphLaunch").size(), 0u);
  EXPECT_EQ(lines(log(), "launch tiny_embed grid=2,1,1").size(), 2u);
}

TEST_F(CudaFake, ProfilingTimesEveryLaunchWithoutGraphs) {
  SessionOptions profiled; // graphs stay on: profiling must bypass them
  profiled.profile = true;
  auto s = open(cudaTinySpec(), profiled);
  ASSERT_TRUE(s) << s.message();
  const std::vector<int32_t> prompt = {3, 1, 4};
  const std::vector<float> expected = cpuLogits(prompt);
  Fake::get().clearLog();
  for (int i = 0; i < 2; ++i) {
    auto logits = (*s)->forward(prompt);
    ASSERT_TRUE(logits) << logits.message();
    EXPECT_EQ(*logits, expected);
  }
  std::string l = log();
  EXPECT_EQ(lines(l, "cuStreamBeginCapture").size(), 0u) << l;
  EXPECT_EQ(lines(l, "cuGraphLaunch").size(), 0u);
  // Per step: the start event, one after each of the 3 launches, the end.
  EXPECT_EQ(lines(l, "cuEventRecord").size(), 2u * 5u);
  EXPECT_THAT(l, HasSubstr("run tiny_embed 1,3,0\ncuEventRecord\n"));
  // The fake clock advances 0.25 ms per kernel run.
  const std::vector<KernelTime> &times = (*s)->device().kernelTimes();
  size_t timed = 0;
  for (const KernelTime &t : times) {
    if (t.launches == 0)
      continue;
    ++timed;
    EXPECT_EQ(t.launches, 2u) << "kernel " << t.kernel;
    EXPECT_NEAR(t.seconds, 0.0005, 1e-9) << "kernel " << t.kernel;
  }
  EXPECT_EQ(timed, 3u);
  auto step = (*s)->lastStepDeviceSeconds();
  ASSERT_TRUE(step);
  EXPECT_DOUBLE_EQ(*step, 0.00075);
}

TEST_F(CudaFake, GraphCacheIsBoundedLeastRecentlyUsed) {
  auto art = Artifact::loadBuffer(buildArtifact(cudaTinySpec()), "g.colossus");
  ASSERT_TRUE(art);
  {
    CudaOptions options;
    options.graphCacheSize = 2;
    options.graphAfterRuns = 1;
    auto device = createDevice(DeviceKind::Cuda, options);
    ASSERT_TRUE(device) << device.message();
    Device &d = **device;
    ASSERT_TRUE(d.loadKernels(**art));
    auto tokens = d.alloc(64, "tokens");
    auto kv = d.alloc(64, "kv");
    ASSERT_TRUE(tokens && kv);
    void *args[2] = {*tokens, *kv};
    StepLaunch launch{0, args, 2}; // tiny_store_kv
    Fake::get().clearLog();
    for (int64_t pos0 : {0, 1, 2, 0, 0, 2, 1}) {
      ASSERT_TRUE(d.runStep(0, &launch, 1, 1, 1, pos0));
      ASSERT_TRUE(d.synchronize());
    }
    // 0 1 2 (evicts 0) 0 (evicts 1) 0 2 1 (evicts 0): 5 captures.
    std::string l = log();
    EXPECT_EQ(lines(l, "cuGraphInstantiate").size(), 5u) << l;
    EXPECT_EQ(lines(l, "cuGraphExecDestroy").size(), 3u);
    EXPECT_EQ(lines(l, "cuGraphLaunch").size(), 7u);
    d.free(*tokens);
    d.free(*kv);
  }
  // The device destroys the graphs it keeps.
  EXPECT_EQ(lines(log(), "cuGraphExecDestroy").size(), 5u);
  EXPECT_EQ(Fake::get().liveObjects(), 0);
}

TEST_F(CudaFake, FailedCaptureLeavesTheStreamUsable) {
  SessionOptions first;
  first.cudaGraphAfterRuns = 1;
  auto s = open(cudaTinySpec(), first);
  ASSERT_TRUE(s) << s.message();
  Fake::get().fail("cuLaunchKernel", 1);
  auto bad = (*s)->forward({2, 2});
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.message(),
              HasSubstr("while capturing a CUDA graph of step 0: "
                        "cuLaunchKernel('tiny_store_kv'"));
  EXPECT_THAT(log(), HasSubstr("cuStreamEndCapture 0 launches"));
  Fake::get().fail("cuLaunchKernel", 0);
  auto good = (*s)->forward({2, 2});
  ASSERT_TRUE(good) << good.message();
  EXPECT_EQ(*good, cpuLogits({2, 2}));
  Fake::get().fail("cuGraphInstantiate", 2);
  auto other = (*s)->forward({2, 2, 2});
  ASSERT_FALSE(other);
  EXPECT_THAT(other.message(),
              HasSubstr("cuda: cuGraphInstantiate failed: CUDA_ERROR_UNKNOWN"));
}

} // namespace

// ---- The Hopper GEMM's launch ABI: fixed grid, tensor maps ----

/// What the fake's cuTensorMapEncodeTiled writes into a map (FakeCuda.cpp).
struct FakeTensorMap {
  char magic[8];
  uint64_t address;
  uint32_t dataType, rank;
  uint32_t globalDim[5];
  uint32_t boxDim[5];
  uint32_t swizzle, pad;
  uint8_t rest[128 - 72];
};

void *gemmArgs[3];
void *probeArgs[2];
int gemmRuns = 0;
void fakeGemm(void **args, int64_t, int64_t, int64_t) {
  std::copy(args, args + 3, gemmArgs);
  ++gemmRuns;
}
void fakeProbe(void **args, int64_t, int64_t, int64_t) {
  std::copy(args, args + 2, probeArgs);
}

/// cudaTinySpec plus the Hopper GEMM of docs/hopper-gemm.md for M = 128,
/// N = 64, K = 64, bm = bn = bk = 64 (the tiny-llama o_proj shape): buffers
/// 6 x (arena bf16 [128, 64] at 576), 7 w (state bf16 [64, 64]), 8 out
/// (arena bf16 [128, 64] at 16960); kernel 3 `hopper_gemm` (x, w, out; grid
/// (1, 2, 1), block (128, 1, 1), 50176 bytes of dynamic shared memory, maps
/// on arguments 0 and 1) and kernel 4 `tmap_probe` (x, w as plain
/// pointers), launched after the tiny model's kernels.
ArtifactSpec gemmSpec() {
  ArtifactSpec spec = cudaTinySpec();
  using K = schema::BufferKind;
  using D = schema::DType;
  spec.buffers.push_back({"x", K::arena, D::bf16, {128, 64}, 576, 16384});
  spec.buffers.push_back({"w", K::state, D::bf16, {64, 64}, 0, 8192});
  spec.buffers.push_back({"out", K::arena, D::bf16, {128, 64}, 16960, 16384});
  spec.arenaBytes = 16960 + 16384;
  KernelSpec gemm;
  gemm.name = "hopper_gemm";
  gemm.numArgs = 3;
  gemm.cubin = textImage("fake-cubin hopper_gemm=3");
  gemm.sharedMemBytes = 50176;
  gemm.grid = {1, 2, 1};
  gemm.block = {128, 1, 1};
  TensorMapSpec a;
  a.arg = 0;
  a.globalDim = {64, 128};
  a.globalStrides = {128};
  a.boxDim = {64, 64};
  TensorMapSpec b = a;
  b.arg = 1;
  b.globalDim = {64, 64};
  gemm.tensorMaps = {a, b};
  KernelSpec probe;
  probe.name = "tmap_probe";
  probe.numArgs = 2;
  probe.cubin = textImage("fake-cubin tmap_probe=2");
  spec.kernels.push_back(gemm);
  spec.kernels.push_back(probe);
  spec.steps[0].launches.push_back({3, {6, 7, 8}});
  spec.steps[0].launches.push_back({4, {6, 7}});
  return spec;
}

const FakeTensorMap &mapAt(void *p) {
  return *static_cast<const FakeTensorMap *>(p);
}

TEST_F(CudaFake, HopperGemmTensorMapsAreEncodedOnceAndPassedByPointer) {
  Fake::get().registerKernel("hopper_gemm", fakeGemm);
  Fake::get().registerKernel("tmap_probe", fakeProbe);
  gemmRuns = 0;
  {
    SessionOptions plain;
    plain.cudaGraphs = false;
    auto s = open(gemmSpec(), plain);
    ASSERT_TRUE(s) << s.message();
    std::string l = log();
    // Allocations: a0 arena, a1 tokens, a2 logits, a3 emb, a4 bias, a5 kv,
    // a6 w; then one 128-byte map each (a7: x's, a8: w's).
    auto encodes = lines(l, "cuTensorMapEncodeTiled");
    ASSERT_EQ(encodes.size(), 2u) << l;
    // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9, SWIZZLE_128B = 3,
    // L2_PROMOTION_L2_256B = 3, INTERLEAVE_NONE = 0, OOB fill NONE = 0.
    EXPECT_EQ(encodes[0],
              "cuTensorMapEncodeTiled type=9 rank=2 addr=a0+576 dims=64,128 "
              "strides=128 box=64,64 elementStrides=1,1 interleave=0 "
              "swizzle=3 l2=3 oob=0");
    EXPECT_EQ(encodes[1],
              "cuTensorMapEncodeTiled type=9 rank=2 addr=a6+0 dims=64,64 "
              "strides=128 box=64,64 elementStrides=1,1 interleave=0 "
              "swizzle=3 l2=3 oob=0");
    EXPECT_THAT(l, HasSubstr("HtoD a7+0 128\n"));
    EXPECT_THAT(l, HasSubstr("HtoD a8+0 128\n"));
    // Above 48 KiB of dynamic shared memory: the attribute is set.
    EXPECT_THAT(l, HasSubstr("cuFuncSetAttribute hopper_gemm 8 50176"));

    for (int round = 0; round < 2; ++round) {
      Fake::get().clearLog();
      ASSERT_TRUE((*s)->forward({3, 1, 4}));
      l = log();
      EXPECT_EQ(lines(l, "cuTensorMapEncodeTiled").size(), 0u) << l;
      auto launches = lines(l, "launch hopper_gemm");
      ASSERT_EQ(launches.size(), 1u) << l;
      // The ABI's grid, block and dynamic shared memory; the maps' device
      // pointers in place of x and w, the output as a plain pointer.
      EXPECT_EQ(launches[0], "launch hopper_gemm grid=1,2,1 block=128,1,1 "
                             "smem=50176 args=a7+0,a8+0,a0+16960 "
                             "region=1,3,0");
    }
    EXPECT_EQ(gemmRuns, 2);
    // What the kernel's pointer parameters point at: 64-byte aligned maps
    // of the buffers the plain-pointer probe kernel sees.
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(gemmArgs[i]) % 64, 0u);
      const FakeTensorMap &m = mapAt(gemmArgs[i]);
      EXPECT_STREQ(m.magic, "fakemap");
      EXPECT_EQ(m.address, reinterpret_cast<uintptr_t>(probeArgs[i]));
      EXPECT_EQ(m.dataType, 9u);
      EXPECT_EQ(m.rank, 2u);
      EXPECT_EQ(m.globalDim[0], 64u);
      EXPECT_EQ(m.globalDim[1], i == 0 ? 128u : 64u);
      EXPECT_EQ(m.boxDim[0], 64u);
      EXPECT_EQ(m.boxDim[1], 64u);
      EXPECT_EQ(m.swizzle, 3u);
    }
    EXPECT_NE(gemmArgs[2], probeArgs[0]);
  }
  EXPECT_EQ(Fake::get().liveObjects(), 0); // the maps are freed too
}

TEST_F(CudaFake, HopperGemmInACapturedGraphUsesTheMaps) {
  auto s = open(gemmSpec()); // graphs on
  ASSERT_TRUE(s) << s.message();
  Fake::get().clearLog();
  ASSERT_TRUE((*s)->forward({3, 1, 4}));
  ASSERT_TRUE((*s)->forward({3, 1, 4}));
  std::string l = log();
  EXPECT_EQ(lines(l, "cuTensorMapEncodeTiled").size(), 0u) << l;
  EXPECT_THAT(l, HasSubstr("launch hopper_gemm [captured] grid=1,2,1 "
                           "block=128,1,1 smem=50176 args=a7+0,a8+0,"
                           "a0+16960"));
  EXPECT_EQ(lines(l, "cuGraphInstantiate").size(), 1u) << l;
}

TEST_F(CudaFake, TensorMapEncodeFailureNamesTheKernelAndArgument) {
  Fake::get().fail("cuTensorMapEncodeTiled", 1);
  auto s = open(gemmSpec());
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(),
              HasSubstr("cuda: kernel 'hopper_gemm' tensor_maps[0] (argument "
                        "0): cuTensorMapEncodeTiled failed: "
                        "CUDA_ERROR_INVALID_VALUE"));
  EXPECT_EQ(Fake::get().liveObjects(), 0);
}

TEST_F(CudaFake, LaunchWithoutPreparedTensorMapsIsAnError) {
  auto art = Artifact::loadBuffer(buildArtifact(gemmSpec()), "gpu.colossus");
  ASSERT_TRUE(art) << art.message();
  auto device = createDevice(DeviceKind::Cuda);
  ASSERT_TRUE(device) << device.message();
  ASSERT_TRUE((*device)->loadKernels(**art));
  auto x = (*device)->alloc(16384, "x");
  auto w = (*device)->alloc(8192, "w");
  auto out = (*device)->alloc(16384, "out");
  ASSERT_TRUE(x && w && out);
  void *args[3] = {*x, *w, *out};
  Status st = (*device)->launch(3, args, 3, 1, 1, 0);
  ASSERT_FALSE(st);
  EXPECT_THAT(st.message(),
              HasSubstr("cuda: kernel 'hopper_gemm': no tensor map encoded "
                        "for argument 0"));
  StepLaunch launch{3, args, 3};
  ASSERT_TRUE((*device)->prepareLaunches(&launch, 1));
  Fake::get().clearLog();
  ASSERT_TRUE((*device)->launch(3, args, 3, 1, 1, 0));
  EXPECT_THAT(log(), HasSubstr("launch hopper_gemm grid=1,2,1"));
  for (void *p : args)
    (*device)->free(p);
}

// ---- The Hopper attention's launch ABI: a 3-D grid, 2-D and 3-D maps ----

void *attnArgs[4];
void fakeAttention(void **args, int64_t, int64_t, int64_t) {
  std::copy(args, args + 4, attnArgs);
}

/// cudaTinySpec plus the Hopper attention of docs/hopper-attention.md for
/// B = 2, S = 128, T = 128, 2 heads of 64, 1 kv head: buffers 6 q (arena
/// bf16 [128, 128] at 576), 7 k and 8 v (state bf16 caches [2, 128, 64]),
/// 9 out (arena bf16 [128, 128] at 33344); kernel 3 `hopper_attention` (q,
/// k, v, out; grid (1, 2, 2), block (256, 1, 1), 148480 bytes of dynamic
/// shared memory; a 2-D map of q, 3-D maps of the caches).
ArtifactSpec attentionSpec() {
  ArtifactSpec spec = cudaTinySpec();
  using K = schema::BufferKind;
  using D = schema::DType;
  spec.buffers.push_back({"q", K::arena, D::bf16, {128, 128}, 576, 32768});
  spec.buffers.push_back({"kc", K::state, D::bf16, {2, 128, 64}, 0, 32768});
  spec.buffers.push_back({"vc", K::state, D::bf16, {2, 128, 64}, 0, 32768});
  spec.buffers.push_back({"o", K::arena, D::bf16, {128, 128}, 33344, 32768});
  spec.arenaBytes = 33344 + 32768;
  KernelSpec attn;
  attn.name = "hopper_attention";
  attn.numArgs = 4;
  attn.cols = 2;
  attn.blockDim = 256;
  attn.cubin = textImage("fake-cubin hopper_attention=4");
  attn.sharedMemBytes = 148480;
  attn.grid = {1, 2, 2};
  attn.block = {256, 1, 1};
  TensorMapSpec q;
  q.arg = 0;
  q.globalDim = {128, 128};
  q.globalStrides = {256};
  q.boxDim = {64, 128};
  TensorMapSpec k;
  k.arg = 1;
  k.rank = 3;
  k.globalDim = {64, 128, 2};
  k.globalStrides = {128, 16384};
  k.boxDim = {64, 128, 1};
  k.elementStrides = {1, 1, 1};
  TensorMapSpec v = k;
  v.arg = 2;
  attn.tensorMaps = {q, k, v};
  spec.kernels.push_back(attn);
  spec.steps[0].launches.push_back({3, {6, 7, 8, 9}});
  return spec;
}

TEST_F(CudaFake, HopperAttentionEncodesThreeDimensionalMaps) {
  Fake::get().registerKernel("hopper_attention", fakeAttention);
  {
    SessionOptions plain;
    plain.cudaGraphs = false;
    auto s = open(attentionSpec(), plain);
    ASSERT_TRUE(s) << s.message();
    std::string l = log();
    // Allocations: a0 arena, a1 tokens, a2 logits, a3 emb, a4 bias, a5 kv,
    // a6 kc, a7 vc; then the maps (a8: q's, a9: kc's, a10: vc's).
    auto encodes = lines(l, "cuTensorMapEncodeTiled");
    ASSERT_EQ(encodes.size(), 3u) << l;
    EXPECT_EQ(encodes[0],
              "cuTensorMapEncodeTiled type=9 rank=2 addr=a0+576 dims=128,128 "
              "strides=256 box=64,128 elementStrides=1,1 interleave=0 "
              "swizzle=3 l2=3 oob=0");
    EXPECT_EQ(encodes[1],
              "cuTensorMapEncodeTiled type=9 rank=3 addr=a6+0 dims=64,128,2 "
              "strides=128,16384 box=64,128,1 elementStrides=1,1,1 "
              "interleave=0 swizzle=3 l2=3 oob=0");
    EXPECT_EQ(encodes[2],
              "cuTensorMapEncodeTiled type=9 rank=3 addr=a7+0 dims=64,128,2 "
              "strides=128,16384 box=64,128,1 elementStrides=1,1,1 "
              "interleave=0 swizzle=3 l2=3 oob=0");
    EXPECT_THAT(l, HasSubstr("cuFuncSetAttribute hopper_attention 8 148480"));
    Fake::get().clearLog();
    ASSERT_TRUE((*s)->forward({3, 1, 4}));
    l = log();
    // The fixed grid (query blocks, heads, sequences) whatever nb and nt.
    auto launches = lines(l, "launch hopper_attention");
    ASSERT_EQ(launches.size(), 1u) << l;
    EXPECT_EQ(launches[0], "launch hopper_attention grid=1,2,2 "
                           "block=256,1,1 smem=148480 "
                           "args=a8+0,a9+0,a10+0,a0+33344 region=1,3,0");
    for (int i = 0; i < 3; ++i) {
      const FakeTensorMap &m = mapAt(attnArgs[i]);
      EXPECT_STREQ(m.magic, "fakemap");
      EXPECT_EQ(m.rank, i == 0 ? 2u : 3u);
    }
  }
  EXPECT_EQ(Fake::get().liveObjects(), 0);
}

// ---- Verifier checks of grid, block and tensor maps ----

std::string loadError(const ArtifactSpec &spec) {
  auto art = Artifact::loadBuffer(buildArtifact(spec), "gpu.colossus");
  return art ? std::string("loaded") : art.message();
}

TEST(TensorMapVerifier, TheGemmSpecIsValid) {
  EXPECT_EQ(loadError(gemmSpec()), "loaded");
}

TEST(TensorMapVerifier, TheAttentionSpecIsValid) {
  EXPECT_EQ(loadError(attentionSpec()), "loaded");
  // A cache map whose dimensions do not match the bound [2, 128, 64] cache.
  ArtifactSpec bad = attentionSpec();
  bad.kernels.back().tensorMaps[1].globalDim = {64, 256};
  bad.kernels.back().tensorMaps[1].rank = 2;
  bad.kernels.back().tensorMaps[1].globalStrides = {128};
  bad.kernels.back().tensorMaps[1].boxDim = {64, 128};
  bad.kernels.back().tensorMaps[1].elementStrides = {1, 1};
  EXPECT_THAT(loadError(bad), HasSubstr("'hopper_attention'.tensor_maps[1]"));
}

TEST(TensorMapVerifier, LaunchShapeErrors) {
  ArtifactSpec spec = gemmSpec();
  spec.kernels[3].block = {128, 1};
  EXPECT_THAT(loadError(spec),
              HasSubstr("gpu.colossus: kernels[3] 'hopper_gemm': grid and "
                        "block must both have 3 entries"));
  spec = gemmSpec();
  spec.kernels[3].grid = {1, 0, 1};
  EXPECT_THAT(loadError(spec), HasSubstr("kernels[3] 'hopper_gemm': grid.y = "
                                         "0 is not in [1, 65535]"));
  spec = gemmSpec();
  spec.kernels[3].block = {256, 1, 1};
  EXPECT_THAT(loadError(spec),
              HasSubstr("kernels[3] 'hopper_gemm': block has 256 threads but "
                        "block_dim = 128"));
  spec = gemmSpec();
  spec.kernels[3].grid.clear(); // tensor maps without a launch shape
  EXPECT_THAT(loadError(spec),
              HasSubstr("kernels[3] 'hopper_gemm': grid and block must both "
                        "have 3 entries (a kernel with tensor_maps needs "
                        "them)"));
}

TEST(TensorMapVerifier, MapFieldErrors) {
  auto withMap = [](auto edit) {
    ArtifactSpec spec = gemmSpec();
    edit(spec.kernels[3].tensorMaps[1]);
    return loadError(spec);
  };
  EXPECT_THAT(withMap([](TensorMapSpec &t) { t.arg = 3; }),
              HasSubstr("kernels[3] 'hopper_gemm'.tensor_maps[1].arg = 3 is "
                        "out of range (num_args = 3)"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) { t.arg = 0; }),
              HasSubstr("tensor_maps[1].arg = 0 has another tensor map"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) {
                t.boxDim = {64, 512};
              }),
              HasSubstr("tensor_maps[1].box_dim[1] = 512 is not in [1, "
                        "min(256, global_dim[1] = 64)]"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) { t.globalStrides = {120}; }),
              HasSubstr("tensor_maps[1].global_strides[0] = 120 must be a "
                        "multiple of 16 below 2^40 and at least 128 bytes"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) { t.elementStrides = {1}; }),
              HasSubstr("tensor_maps[1]: global_dim, box_dim and "
                        "element_strides need rank = 2 entries"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) {
                t.globalDim = {128, 32};
                t.globalStrides = {256};
                t.boxDim = {128, 32};
              }),
              HasSubstr("tensor_maps[1]: box_dim[0] * element size = 256 "
                        "bytes exceeds the 128-byte swizzle span"));
  EXPECT_THAT(withMap([](TensorMapSpec &t) { t.rank = 6; }),
              HasSubstr("tensor_maps[1].rank = 6 is not in [1, 5]"));
}

TEST(TensorMapVerifier, BoundBufferErrors) {
  ArtifactSpec spec = gemmSpec();
  spec.buffers[7].dtype = schema::DType::f32;
  spec.buffers[7].size = 16384;
  EXPECT_THAT(loadError(spec),
              HasSubstr("gpu.colossus: steps[0].launches[3].args[1] "
                        "(kernels[3] 'hopper_gemm'.tensor_maps[1]): "
                        "buffers[7] 'w' is f32, the tensor map's data_type "
                        "is bfloat16"));
  spec = gemmSpec();
  spec.buffers[7].shape = {32, 64};
  spec.buffers[7].size = 4096;
  EXPECT_THAT(loadError(spec),
              HasSubstr("launches[3].args[1] (kernels[3] "
                        "'hopper_gemm'.tensor_maps[1]): buffers[7] 'w' has "
                        "4096 bytes, the tensor map describes 8192"));
  spec = gemmSpec();
  spec.buffers[7].shape = {32, 128};
  EXPECT_THAT(loadError(spec),
              HasSubstr("buffers[7] 'w' has shape [32, 128], the tensor map's "
                        "global_dim is [64, 64] (outermost first)"));
  spec = gemmSpec();
  spec.buffers[6].offset = 584;
  EXPECT_THAT(loadError(spec), HasSubstr("buffers[6] 'x': arena offset 584 is "
                                         "not 16-byte aligned"));
  spec = gemmSpec();
  spec.target = schema::Target::cpu;
  spec.cpuObject = {1};
  EXPECT_THAT(loadError(spec),
              HasSubstr("kernels[3] 'hopper_gemm': grid, block and "
                        "tensor_maps are for sm_90a kernels"));
}
