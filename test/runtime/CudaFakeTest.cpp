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
  auto s = open(cudaTinySpec()); // graphs are on by default
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

TEST_F(CudaFake, GraphCacheIsBoundedLeastRecentlyUsed) {
  auto art = Artifact::loadBuffer(buildArtifact(cudaTinySpec()), "g.colossus");
  ASSERT_TRUE(art);
  {
    CudaOptions options;
    options.graphCacheSize = 2;
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
  auto s = open(cudaTinySpec());
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
