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
    auto s = open(cudaTinySpec());
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
  auto s = open(spec);
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

} // namespace
