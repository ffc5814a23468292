//===- CudaDevice.cpp - The cuda device: CUDA driver API via dlopen -------===//
//
// libcuda is opened at run time (dlopen "libcuda.so.1", then "libcuda.so"),
// so the runtime builds and runs its CPU paths on machines without a GPU.
// No CUDA header is used: the handful of types, constants and entry points
// the runtime needs are declared below with the driver API's ABI, and the
// entry points are resolved with dlsym, using the `_v2` names where the
// driver has them.
//
// COLOSSUS_LIBCUDA, when set, names the one library to open instead (tests:
// test/runtime/FakeCuda.cpp). At load: cuInit, device 0, compute capability
// check (sm_90a needs 9.0), primary context (cuDevicePrimaryCtxRetain +
// cuCtxSetCurrent), one stream, one module per kernel (cuModuleLoadData of the
// cubin, the PTX only if the cubin does not load and the driver is new enough
// for its PTX ISA), cuModuleGetFunction, and cuFuncSetAttribute for dynamic
// shared memory above 48 KiB. Buffers are cuMemAlloc'ed once by the executor. A
// launch is one cuLaunchKernel on the stream with a 1-D grid of ceil(R * cols /
// block_dim) blocks, or the kernel's fixed 3-D grid and block when it has one
// (docs/artifact-format.md). Kernels with tensor maps (the Hopper GEMM) get,
// in prepareLaunches (once, after the buffers exist), one
// cuTensorMapEncodeTiled per (map, bound buffer) copied into its own
// cuMemAlloc'ed 128 bytes; the launch passes that device pointer in place of
// the buffer's (the kernel reads CUtensorMap objects from global memory). A
// step (runStep) is timed with two events and, unless CudaOptions::graphs is
// off, captured once per (step, nb, nt, pos0) as a CUDA graph on its
// graphAfterRuns-th run (default the second; earlier runs launch kernel by
// kernel) and replayed with cuGraphLaunch (bounded LRU cache of instances).
// With profiling (Device::setProfiling) a step is launched kernel by kernel
// with an event after each launch, and the per-launch times are read when it is
// done.
//
// The device is used from one thread at a time (the one that created it).
//
//===----------------------------------------------------------------------===//

#include "colossus/runtime/Device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <string_view>
#include <tuple>
#include <vector>

namespace colossus {
namespace {

// ---- The subset of the CUDA driver API used here (cuda.h ABI) ----
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;
using CUcontext = CUctx_st *;
using CUmodule = CUmod_st *;
using CUfunction = CUfunc_st *;
using CUstream = CUstream_st *;
using CUevent = CUevent_st *;
using CUgraph = CUgraph_st *;
using CUgraphExec = CUgraphExec_st *;
using CUjit_option = int;
/// cuda.h's CUtensorMap: 128 opaque bytes, 64-byte aligned.
struct alignas(64) CUtensorMap {
  unsigned long long opaque[16];
};
static_assert(sizeof(CUtensorMap) == 128, "CUtensorMap is 128 bytes");

constexpr CUresult CUDA_SUCCESS = 0;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
constexpr int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
constexpr unsigned CU_STREAM_DEFAULT = 0;
constexpr unsigned CU_EVENT_DEFAULT = 0;
constexpr int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;

struct DriverApi {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDriverGetVersion)(int *);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned,
                                 CUjit_option *, void **);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*cuStreamCreate)(CUstream *, unsigned);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, CUstream, void **,
                             void **);
  CUresult (*cuEventCreate)(CUevent *, unsigned);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  CUresult (*cuStreamBeginCapture)(CUstream, int);
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
  CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph,
                                          unsigned long long);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  // CUDA 12.0+; resolved when present, needed only by kernels with tensor
  // maps. The enum parameters are C enums (int).
  CUresult (*cuTensorMapEncodeTiled)(CUtensorMap *, int, unsigned, void *,
                                     const unsigned long long *,
                                     const unsigned long long *,
                                     const unsigned *, const unsigned *, int,
                                     int, int, int);
};

class CudaDevice final : public Device {
public:
  explicit CudaDevice(const CudaOptions &options) : options_(options) {
    if (options_.graphCacheSize == 0)
      options_.graphCacheSize = 1;
    if (options_.graphAfterRuns == 0)
      options_.graphAfterRuns = 1;
  }

  ~CudaDevice() override {
    if (api_.cuCtxSetCurrent && ctx_)
      api_.cuCtxSetCurrent(ctx_);
    if (stream_) {
      api_.cuStreamSynchronize(stream_);
      for (GraphEntry &g : graphs_)
        api_.cuGraphExecDestroy(g.exec);
      for (CUevent e : {stepStart_, stepEnd_})
        if (e)
          api_.cuEventDestroy(e);
      for (CUevent e : launchEvents_)
        api_.cuEventDestroy(e);
      api_.cuStreamDestroy(stream_);
    }
    for (const auto &[key, ptr] : tensorMaps_)
      api_.cuMemFree(ptr);
    for (CUmodule m : modules_)
      if (m)
        api_.cuModuleUnload(m);
    if (ctx_)
      api_.cuDevicePrimaryCtxRelease(device_);
    if (lib_)
      ::dlclose(lib_);
  }

  /// dlopen + cuInit + device 0 + primary context + stream.
  Status init() {
    std::string errors;
    // COLOSSUS_LIBCUDA names the driver library to open instead (the tests'
    // fake driver, or a driver outside the loader's search path).
    std::vector<std::string> names = {"libcuda.so.1", "libcuda.so"};
    if (const char *env = std::getenv("COLOSSUS_LIBCUDA"); env && *env)
      names = {env};
    for (const std::string &nameStr : names) {
      const char *name = nameStr.c_str();
      lib_ = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib_)
        break;
      const char *e = ::dlerror();
      errors += strCat(errors.empty() ? "" : "; ", e ? e : name);
    }
    if (!lib_)
      return makeError("no CUDA driver: ", names.front(),
                       " could not be loaded (", errors,
                       "); run on a machine with an NVIDIA driver or use an "
                       "artifact compiled for --target=cpu");
    COLOSSUS_RETURN_IF_ERROR(resolveSymbols());

    COLOSSUS_RETURN_IF_ERROR(check(api_.cuInit(0), "cuInit"));
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuDriverGetVersion(&driverVersion_), "cuDriverGetVersion"));
    int count = 0;
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuDeviceGetCount(&count), "cuDeviceGetCount"));
    if (count < 1)
      return makeError("cuda: no CUDA device is visible (cuDeviceGetCount "
                       "returned 0; check CUDA_VISIBLE_DEVICES)");
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuDeviceGet(&device_, 0), "cuDeviceGet"));
    char name[256] = {0};
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuDeviceGetName(name, sizeof(name) - 1, device_),
              "cuDeviceGetName"));
    name_ = name;
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuDeviceGetAttribute(
            &ccMajor_, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_),
        "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)"));
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuDeviceGetAttribute(
            &ccMinor_, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_),
        "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)"));
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuDeviceGetAttribute(
            &maxSharedOptin_,
            CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, device_),
        "cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)"));
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuDevicePrimaryCtxRetain(&ctx_, device_),
              "cuDevicePrimaryCtxRetain"));
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"));
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuStreamCreate(&stream_, CU_STREAM_DEFAULT), "cuStreamCreate"));
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuEventCreate(&stepStart_, CU_EVENT_DEFAULT), "cuEventCreate"));
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuEventCreate(&stepEnd_, CU_EVENT_DEFAULT), "cuEventCreate"));
    return Status::success();
  }

  DeviceKind kind() const override { return DeviceKind::Cuda; }
  std::string description() const override {
    return strCat("cuda:0 ", name_, " (sm_", ccMajor_, ccMinor_, ")");
  }

  Status loadKernels(const Artifact &artifact) override {
    const schema::Artifact &a = artifact.root();
    const std::string &n = artifact.name();
    if (a.target() == schema::Target::sm_90a &&
        !(ccMajor_ == 9 && ccMinor_ == 0))
      return makeError(n,
                       ": artifact target sm_90a needs a GPU of compute "
                       "capability 9.0 (H100/H200); cuda device 0 '",
                       name_, "' has compute capability ", ccMajor_, ".",
                       ccMinor_);
    uint32_t numKernels = artifact.numKernels();
    modules_.assign(numKernels, nullptr);
    kernels_.assign(numKernels, KernelInfo{});
    size_t maxArgs = 0;
    for (uint32_t k = 0; k < numKernels; ++k) {
      const schema::Kernel *kernel = a.kernels()->Get(k);
      const std::string kname = kernel->name()->str();
      const std::string label = strCat(n, ": kernels[", k, "] '", kname, "'");
      std::string cubinError;
      CUmodule module = nullptr;
      if (kernel->cubin() && kernel->cubin()->size() > 0) {
        // Copy into 8-byte aligned storage: the ELF image is read in place.
        std::vector<uint64_t> image((kernel->cubin()->size() + 7) / 8 + 1, 0);
        std::memcpy(image.data(), kernel->cubin()->data(),
                    kernel->cubin()->size());
        CUresult r = api_.cuModuleLoadData(&module, image.data());
        if (r != CUDA_SUCCESS) {
          cubinError = strCat("cuModuleLoadData(cubin) failed: ", errorText(r));
          module = nullptr;
        }
      }
      if (!module && kernel->ptx() && kernel->ptx()->size() > 0) {
        // JIT the PTX only when this driver can: a PTX ISA newer than the
        // driver is refused with the versions instead of the JIT's error.
        int isaMajor = 0, isaMinor = 0;
        int needed =
            ptxDriverVersion(kernel->ptx()->string_view(), isaMajor, isaMinor);
        if (needed > driverVersion_)
          return makeError(
              label, ": ", cubinError.empty() ? "" : cubinError + "; ",
              "its PTX (ISA ", isaMajor, ".", isaMinor,
              ") cannot be JIT-compiled by this driver: it needs CUDA ",
              needed / 1000, ".", (needed % 1000) / 10,
              " or newer, the driver is CUDA ", driverVersion_ / 1000, ".",
              (driverVersion_ % 1000) / 10);
        char log[8192] = {0};
        CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER,
                               CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
        void *vals[] = {log, reinterpret_cast<void *>(
                                 static_cast<uintptr_t>(sizeof(log) - 1))};
        CUresult r = api_.cuModuleLoadDataEx(&module, kernel->ptx()->c_str(), 2,
                                             opts, vals);
        if (r != CUDA_SUCCESS)
          return makeError(label, ": ",
                           cubinError.empty() ? "" : cubinError + "; ",
                           "cuModuleLoadDataEx(ptx) failed: ", errorText(r),
                           log[0] ? strCat(": ", log) : std::string());
      }
      if (!module)
        return makeError(label, ": ",
                         cubinError.empty() ? "no cubin or ptx" : cubinError);
      modules_[k] = module;
      CUfunction fn = nullptr;
      CUresult r = api_.cuModuleGetFunction(&fn, module, kname.c_str());
      if (r != CUDA_SUCCESS)
        return makeError(label, ": cuModuleGetFunction failed: ", errorText(r));
      uint32_t shared = kernel->shared_mem_bytes();
      if (shared > 48u * 1024u) {
        if (static_cast<int64_t>(shared) > maxSharedOptin_)
          return makeError(label, ": shared_mem_bytes = ", shared,
                           " exceeds the device limit of ", maxSharedOptin_);
        r = api_.cuFuncSetAttribute(
            fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            static_cast<int>(shared));
        if (r != CUDA_SUCCESS)
          return makeError(label,
                           ": cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES"
                           ", ",
                           shared, ") failed: ", errorText(r));
      }
      KernelInfo &info = kernels_[k];
      info.fn = fn;
      info.name = kname;
      info.fixedRows = kernel->rows() == schema::RowExtent::fixed;
      info.rows = kernel->fixed_rows();
      info.cols = kernel->cols();
      info.blockDim = kernel->block_dim();
      info.sharedBytes = shared;
      if (kernel->grid() && kernel->block()) { // verified: 3 entries each
        info.fixedShape = true;
        for (int i = 0; i < 3; ++i) {
          info.grid[i] = kernel->grid()->Get(i);
          info.block[i] = kernel->block()->Get(i);
        }
      }
      if (kernel->tensor_maps())
        for (const schema::TensorMap *t : *kernel->tensor_maps())
          info.tensorMaps.push_back(t);
      maxArgs = std::max<size_t>(maxArgs, kernel->num_args());
    }
    argValues_.assign(maxArgs, 0);
    paramPtrs_.assign(maxArgs + 3, nullptr);
    return Status::success();
  }

  Expected<void *> alloc(size_t bytes, const std::string &what) override {
    if (bytes == 0)
      return static_cast<void *>(nullptr);
    CUdeviceptr p = 0;
    CUresult r = api_.cuMemAlloc(&p, bytes);
    if (r != CUDA_SUCCESS)
      return makeError("cuMemAlloc(", bytes, " bytes for ", what,
                       ") failed: ", errorText(r));
    return reinterpret_cast<void *>(static_cast<uintptr_t>(p));
  }
  void free(void *ptr) override {
    if (ptr)
      api_.cuMemFree(toDev(ptr));
  }

  Status copyToDevice(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return Status::success();
    return check(api_.cuMemcpyHtoDAsync(toDev(dst), src, bytes, stream_),
                 "cuMemcpyHtoDAsync");
  }
  Status copyToHost(void *dst, const void *src, size_t bytes) override {
    if (!bytes)
      return Status::success();
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuMemcpyDtoHAsync(dst, toDev(src), bytes, stream_),
              "cuMemcpyDtoHAsync"));
    return synchronize();
  }
  Status fillZero(void *dst, size_t bytes) override {
    if (!bytes)
      return Status::success();
    return check(api_.cuMemsetD8Async(toDev(dst), 0, bytes, stream_),
                 "cuMemsetD8Async");
  }

  Status prepareLaunches(const StepLaunch *launches, size_t count) override {
    bool copied = false;
    for (size_t l = 0; l < count; ++l) {
      const StepLaunch &launch = launches[l];
      if (launch.kernel >= kernels_.size())
        return makeError("cuda: kernel index ", launch.kernel, " out of range");
      const KernelInfo &k = kernels_[launch.kernel];
      for (uint32_t m = 0; m < k.tensorMaps.size(); ++m) {
        const schema::TensorMap &t = *k.tensorMaps[m];
        if (t.arg() >= launch.numArgs)
          return makeError("cuda: kernel '", k.name, "': tensor_maps[", m,
                           "].arg = ", t.arg(), " but the launch has ",
                           launch.numArgs, " arguments");
        CUdeviceptr buffer = toDev(launch.args[t.arg()]);
        auto key = std::make_tuple(launch.kernel, m, buffer);
        if (tensorMaps_.count(key))
          continue; // the same map of the same buffer: encoded once
        CUdeviceptr dev = 0;
        COLOSSUS_RETURN_IF_ERROR(encodeTensorMap(k, m, t, buffer, dev));
        tensorMaps_.emplace(key, dev);
        copied = true;
      }
    }
    // The host copies of the maps are gone when this returns.
    return copied ? synchronize() : Status::success();
  }

  Status launch(uint32_t kernel, void *const *args, size_t numArgs, int64_t nb,
                int64_t nt, int64_t pos0) override {
    if (kernel >= kernels_.size())
      return makeError("cuda: kernel index ", kernel, " out of range");
    const KernelInfo &k = kernels_[kernel];
    if (k.fixedShape)
      return launchFixed(kernel, k, args, numArgs, nb, nt, pos0);
    int64_t rows = k.fixedRows ? k.rows : nb * nt;
    int64_t total = 0;
    if (__builtin_mul_overflow(rows, k.cols, &total) || total < 0)
      return makeError("cuda: kernel '", k.name, "': rows * cols overflows");
    if (total == 0)
      return Status::success(); // nothing to do; a 0-block grid is invalid
    int64_t grid = (total + k.blockDim - 1) / k.blockDim;
    if (grid > 0x7fffffff)
      return makeError("cuda: kernel '", k.name, "': grid of ", grid,
                       " blocks exceeds the 2^31-1 limit");
    COLOSSUS_RETURN_IF_ERROR(bindArgs(k, args, numArgs));
    region_[0] = nb;
    region_[1] = nt;
    region_[2] = pos0;
    for (size_t i = 0; i < 3; ++i)
      paramPtrs_[numArgs + i] = &region_[i];
    CUresult r = api_.cuLaunchKernel(k.fn, static_cast<unsigned>(grid), 1, 1,
                                     k.blockDim, 1, 1, k.sharedBytes, stream_,
                                     paramPtrs_.data(), nullptr);
    if (r != CUDA_SUCCESS)
      return makeError("cuLaunchKernel('", k.name, "', grid ", grid, ", block ",
                       k.blockDim, ", shared ", k.sharedBytes,
                       ") failed: ", errorText(r));
    return Status::success();
  }

  Status synchronize() override {
    return check(api_.cuStreamSynchronize(stream_), "cuStreamSynchronize");
  }

  /// Events around the step; with graphs, the first run of a (step, nb, nt,
  /// pos0) is captured, instantiated and launched, later runs launch the
  /// cached instance.
  Status runStep(uint32_t step, const StepLaunch *launches, size_t count,
                 int64_t nb, int64_t nt, int64_t pos0) override {
    stepTimed_ = false;
    if (profiling())
      return runStepProfiled(launches, count, nb, nt, pos0);
    COLOSSUS_RETURN_IF_ERROR(check(api_.cuEventRecord(stepStart_, stream_),
                                   "cuEventRecord(step start)"));
    if (options_.graphs) {
      COLOSSUS_RETURN_IF_ERROR(runGraph(step, launches, count, nb, nt, pos0));
    } else {
      for (size_t i = 0; i < count; ++i)
        COLOSSUS_RETURN_IF_ERROR(launch(launches[i].kernel, launches[i].args,
                                        launches[i].numArgs, nb, nt, pos0));
    }
    COLOSSUS_RETURN_IF_ERROR(check(api_.cuEventRecord(stepEnd_, stream_),
                                   "cuEventRecord(step end)"));
    stepTimed_ = true;
    return Status::success();
  }

  Expected<double> lastStepSeconds() override {
    if (!stepTimed_)
      return -1.0;
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuEventSynchronize(stepEnd_), "cuEventSynchronize"));
    float ms = 0.0f;
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuEventElapsedTime(&ms, stepStart_, stepEnd_),
              "cuEventElapsedTime"));
    return static_cast<double>(ms) / 1000.0;
  }

private:
  /// runStep with profiling: no graph, an event after every launch (the
  /// step's start event before the first), then waits for the step and adds
  /// each launch's time (its event minus the one before) to the profile.
  Status runStepProfiled(const StepLaunch *launches, size_t count, int64_t nb,
                         int64_t nt, int64_t pos0) {
    while (launchEvents_.size() < count) {
      CUevent e = nullptr;
      COLOSSUS_RETURN_IF_ERROR(
          check(api_.cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate"));
      launchEvents_.push_back(e);
    }
    COLOSSUS_RETURN_IF_ERROR(check(api_.cuEventRecord(stepStart_, stream_),
                                   "cuEventRecord(step start)"));
    for (size_t i = 0; i < count; ++i) {
      COLOSSUS_RETURN_IF_ERROR(launch(launches[i].kernel, launches[i].args,
                                      launches[i].numArgs, nb, nt, pos0));
      COLOSSUS_RETURN_IF_ERROR(check(
          api_.cuEventRecord(launchEvents_[i], stream_), "cuEventRecord"));
    }
    COLOSSUS_RETURN_IF_ERROR(check(api_.cuEventRecord(stepEnd_, stream_),
                                   "cuEventRecord(step end)"));
    stepTimed_ = true;
    COLOSSUS_RETURN_IF_ERROR(
        check(api_.cuEventSynchronize(stepEnd_), "cuEventSynchronize"));
    for (size_t i = 0; i < count; ++i) {
      float ms = 0.0f;
      COLOSSUS_RETURN_IF_ERROR(check(
          api_.cuEventElapsedTime(&ms, i ? launchEvents_[i - 1] : stepStart_,
                                  launchEvents_[i]),
          "cuEventElapsedTime"));
      addKernelTime(launches[i].kernel, static_cast<double>(ms) / 1000.0);
    }
    return Status::success();
  }

  struct GraphEntry {
    uint32_t step;
    int64_t nb, nt, pos0;
    CUgraphExec exec;
  };

  Status runGraph(uint32_t step, const StepLaunch *launches, size_t count,
                  int64_t nb, int64_t nt, int64_t pos0) {
    for (size_t i = 0; i < graphs_.size(); ++i) {
      GraphEntry &g = graphs_[i];
      if (g.step == step && g.nb == nb && g.nt == nt && g.pos0 == pos0) {
        // Most recently used first.
        std::rotate(graphs_.begin(), graphs_.begin() + i,
                    graphs_.begin() + i + 1);
        return check(api_.cuGraphLaunch(graphs_.front().exec, stream_),
                     "cuGraphLaunch");
      }
    }
    // Not captured before its graphAfterRuns-th run: launched directly.
    auto key = std::make_tuple(step, nb, nt, pos0);
    auto seen = std::find_if(runsSeen_.begin(), runsSeen_.end(),
                             [&](const auto &e) { return e.first == key; });
    unsigned runs = seen == runsSeen_.end() ? 1 : seen->second + 1;
    if (seen != runsSeen_.end())
      runsSeen_.erase(seen);
    if (runs < options_.graphAfterRuns) {
      // Most recent first, bounded: keys seen once long ago are forgotten.
      runsSeen_.insert(runsSeen_.begin(), {key, runs});
      if (runsSeen_.size() > 4 * options_.graphCacheSize)
        runsSeen_.pop_back();
      for (size_t i = 0; i < count; ++i)
        COLOSSUS_RETURN_IF_ERROR(launch(launches[i].kernel, launches[i].args,
                                        launches[i].numArgs, nb, nt, pos0));
      return Status::success();
    }
    COLOSSUS_RETURN_IF_ERROR(check(
        api_.cuStreamBeginCapture(stream_, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
        "cuStreamBeginCapture"));
    Status launched = Status::success();
    for (size_t i = 0; i < count && launched; ++i)
      launched = launch(launches[i].kernel, launches[i].args,
                        launches[i].numArgs, nb, nt, pos0);
    CUgraph graph = nullptr;
    CUresult ended = api_.cuStreamEndCapture(stream_, &graph);
    if (!launched) {
      if (graph)
        api_.cuGraphDestroy(graph);
      return makeError("while capturing a CUDA graph of step ", step, ": ",
                       launched.message());
    }
    COLOSSUS_RETURN_IF_ERROR(check(ended, "cuStreamEndCapture"));
    CUgraphExec exec = nullptr;
    CUresult r = api_.cuGraphInstantiateWithFlags(&exec, graph, 0);
    api_.cuGraphDestroy(graph);
    COLOSSUS_RETURN_IF_ERROR(check(r, "cuGraphInstantiate"));
    if (graphs_.size() >= options_.graphCacheSize) {
      api_.cuGraphExecDestroy(graphs_.back().exec);
      graphs_.pop_back();
    }
    graphs_.insert(graphs_.begin(), GraphEntry{step, nb, nt, pos0, exec});
    return check(api_.cuGraphLaunch(exec, stream_), "cuGraphLaunch");
  }

  struct KernelInfo {
    CUfunction fn = nullptr;
    std::string name;
    bool fixedRows = false;
    int64_t rows = 0;
    int64_t cols = 0;
    unsigned blockDim = 1;
    unsigned sharedBytes = 0;
    bool fixedShape = false; ///< Kernel.grid / Kernel.block
    unsigned grid[3] = {1, 1, 1};
    unsigned block[3] = {1, 1, 1};
    std::vector<const schema::TensorMap *> tensorMaps;
  };

  /// cuTensorMapEncodeTiled of map `m` of kernel `k` over `buffer`, copied
  /// into a fresh 128-byte device allocation (`dev`).
  Status encodeTensorMap(const KernelInfo &k, uint32_t m,
                         const schema::TensorMap &t, CUdeviceptr buffer,
                         CUdeviceptr &dev) {
    const std::string label = strCat("cuda: kernel '", k.name, "' tensor_maps[",
                                     m, "] (argument ", t.arg(), ")");
    if (!api_.cuTensorMapEncodeTiled)
      return makeError(label,
                       ": the CUDA driver does not export "
                       "cuTensorMapEncodeTiled (CUDA 12.0 or newer needed)");
    // Sizes were verified at load (Artifact::checkConsistency).
    const uint32_t rank = t.rank();
    unsigned long long dims[5] = {}, strides[5] = {};
    unsigned box[5] = {}, estrides[5] = {};
    for (uint32_t d = 0; d < rank; ++d) {
      dims[d] = t.global_dim()->Get(d);
      box[d] = t.box_dim()->Get(d);
      estrides[d] = t.element_strides()->Get(d);
      if (d + 1 < rank)
        strides[d] = t.global_strides()->Get(d);
    }
    CUtensorMap map{};
    CUresult r = api_.cuTensorMapEncodeTiled(
        &map, static_cast<int>(t.data_type()), rank,
        reinterpret_cast<void *>(static_cast<uintptr_t>(buffer)), dims, strides,
        box, estrides, static_cast<int>(t.interleave()),
        static_cast<int>(t.swizzle()), static_cast<int>(t.l2_promotion()),
        static_cast<int>(t.oob_fill()));
    if (r != CUDA_SUCCESS)
      return makeError(label,
                       ": cuTensorMapEncodeTiled failed: ", errorText(r));
    r = api_.cuMemAlloc(&dev, sizeof(CUtensorMap));
    if (r != CUDA_SUCCESS)
      return makeError(label,
                       ": cuMemAlloc(128 bytes for the tensor map) "
                       "failed: ",
                       errorText(r));
    if (dev % 64 != 0) {
      api_.cuMemFree(dev);
      return makeError(label, ": cuMemAlloc returned ", dev,
                       ", not 64-byte aligned");
    }
    r = api_.cuMemcpyHtoDAsync(dev, &map, sizeof(map), stream_);
    if (r != CUDA_SUCCESS) {
      api_.cuMemFree(dev);
      return makeError(label, ": cuMemcpyHtoDAsync of the tensor map failed: ",
                       errorText(r));
    }
    return Status::success();
  }

  /// The kernel's pointer arguments into the launch's parameter array.
  Status bindArgs(const KernelInfo &k, void *const *args, size_t numArgs) {
    if (numArgs > argValues_.size())
      return makeError("cuda: kernel '", k.name, "': ", numArgs,
                       " arguments, more than loaded");
    for (size_t i = 0; i < numArgs; ++i) {
      argValues_[i] = toDev(args[i]);
      paramPtrs_[i] = &argValues_[i];
    }
    return Status::success();
  }

  /// A launch with the kernel's fixed grid and block; tensor-map arguments
  /// get the device pointer of the map encoded for the bound buffer.
  Status launchFixed(uint32_t index, const KernelInfo &k, void *const *args,
                     size_t numArgs, int64_t nb, int64_t nt, int64_t pos0) {
    COLOSSUS_RETURN_IF_ERROR(bindArgs(k, args, numArgs));
    for (uint32_t m = 0; m < k.tensorMaps.size(); ++m) {
      uint32_t arg = k.tensorMaps[m]->arg();
      if (arg >= numArgs)
        return makeError("cuda: kernel '", k.name, "': tensor_maps[", m,
                         "].arg = ", arg, " but the launch has ", numArgs,
                         " arguments");
      auto it = tensorMaps_.find(std::make_tuple(index, m, argValues_[arg]));
      if (it == tensorMaps_.end())
        return makeError("cuda: kernel '", k.name,
                         "': no tensor map encoded "
                         "for argument ",
                         arg,
                         " (Device::prepareLaunches was not called with this "
                         "launch)");
      argValues_[arg] = it->second;
    }
    region_[0] = nb;
    region_[1] = nt;
    region_[2] = pos0;
    for (size_t i = 0; i < 3; ++i)
      paramPtrs_[numArgs + i] = &region_[i];
    CUresult r = api_.cuLaunchKernel(
        k.fn, k.grid[0], k.grid[1], k.grid[2], k.block[0], k.block[1],
        k.block[2], k.sharedBytes, stream_, paramPtrs_.data(), nullptr);
    if (r != CUDA_SUCCESS)
      return makeError("cuLaunchKernel('", k.name, "', grid ", k.grid[0], ",",
                       k.grid[1], ",", k.grid[2], ", block ", k.block[0], ",",
                       k.block[1], ",", k.block[2], ", shared ", k.sharedBytes,
                       ") failed: ", errorText(r));
    return Status::success();
  }

  /// The oldest driver (cuDriverGetVersion's 1000 * major + 10 * minor)
  /// whose JIT reads the PTX's `.version X.Y`; 0 when the version is
  /// missing or not in the table (then the JIT is tried).
  static int ptxDriverVersion(std::string_view ptx, int &major, int &minor) {
    size_t at = ptx.find(".version ");
    if (at == std::string_view::npos)
      return 0;
    const char *p = ptx.data() + at + 9, *end = ptx.data() + ptx.size();
    major = minor = 0;
    while (p < end && *p >= '0' && *p <= '9')
      major = major * 10 + (*p++ - '0');
    if (p < end && *p == '.')
      ++p;
    while (p < end && *p >= '0' && *p <= '9')
      minor = minor * 10 + (*p++ - '0');
    // PTX ISA -> CUDA release (the PTX ISA manual's release notes).
    static const struct {
      int major, minor, driver;
    } table[] = {{7, 8, 11080}, {8, 0, 12000}, {8, 1, 12010}, {8, 2, 12020},
                 {8, 3, 12030}, {8, 4, 12040}, {8, 5, 12050}, {8, 6, 12070},
                 {8, 7, 12080}, {8, 8, 12090}, {9, 0, 13000}};
    for (const auto &e : table)
      if (e.major == major && e.minor == minor)
        return e.driver;
    return 0;
  }

  static CUdeviceptr toDev(const void *p) {
    return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p));
  }

  template <typename Fn>
  Status sym(Fn &fn, std::initializer_list<const char *> names) {
    for (const char *name : names) {
      if (void *p = ::dlsym(lib_, name)) {
        fn = reinterpret_cast<Fn>(p);
        return Status::success();
      }
    }
    return makeError("cuda: the CUDA driver does not export ", *names.begin(),
                     " (driver too old?)");
  }

  Status resolveSymbols() {
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuInit, {"cuInit"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuDriverGetVersion, {"cuDriverGetVersion"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuDeviceGetCount, {"cuDeviceGetCount"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuDeviceGet, {"cuDeviceGet"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuDeviceGetAttribute, {"cuDeviceGetAttribute"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuDeviceGetName, {"cuDeviceGetName"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuDevicePrimaryCtxRelease,
            {"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuCtxSetCurrent, {"cuCtxSetCurrent"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuModuleLoadData, {"cuModuleLoadData"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuModuleLoadDataEx, {"cuModuleLoadDataEx"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuModuleUnload, {"cuModuleUnload"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuModuleGetFunction, {"cuModuleGetFunction"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuFuncSetAttribute, {"cuFuncSetAttribute"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuMemAlloc, {"cuMemAlloc_v2"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuMemFree, {"cuMemFree_v2"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuMemcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuMemcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuMemsetD8Async, {"cuMemsetD8Async"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuStreamCreate, {"cuStreamCreate"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuStreamDestroy, {"cuStreamDestroy_v2", "cuStreamDestroy"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuStreamSynchronize, {"cuStreamSynchronize"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuLaunchKernel, {"cuLaunchKernel"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuEventCreate, {"cuEventCreate"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuEventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuEventRecord, {"cuEventRecord"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuEventSynchronize, {"cuEventSynchronize"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuEventElapsedTime,
            {"cuEventElapsedTime_v2", "cuEventElapsedTime"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuStreamBeginCapture, {"cuStreamBeginCapture_v2"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuStreamEndCapture, {"cuStreamEndCapture"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuGraphInstantiateWithFlags, {"cuGraphInstantiateWithFlags"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuGraphLaunch, {"cuGraphLaunch"}));
    COLOSSUS_RETURN_IF_ERROR(
        sym(api_.cuGraphExecDestroy, {"cuGraphExecDestroy"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuGraphDestroy, {"cuGraphDestroy"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuGetErrorString, {"cuGetErrorString"}));
    COLOSSUS_RETURN_IF_ERROR(sym(api_.cuGetErrorName, {"cuGetErrorName"}));
    // Optional (CUDA 12.0+): checked when a kernel needs it.
    api_.cuTensorMapEncodeTiled =
        reinterpret_cast<decltype(api_.cuTensorMapEncodeTiled)>(
            ::dlsym(lib_, "cuTensorMapEncodeTiled"));
    return Status::success();
  }

  std::string errorText(CUresult r) const {
    const char *name = nullptr;
    const char *text = nullptr;
    if (api_.cuGetErrorName)
      api_.cuGetErrorName(r, &name);
    if (api_.cuGetErrorString)
      api_.cuGetErrorString(r, &text);
    return strCat(name ? name : "CUDA error", " (", r, ")",
                  text ? strCat(": ", text) : std::string());
  }

  Status check(CUresult r, const char *call) const {
    if (r == CUDA_SUCCESS)
      return Status::success();
    return makeError("cuda: ", call, " failed: ", errorText(r));
  }

  void *lib_ = nullptr;
  DriverApi api_{};
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
  CUstream stream_ = nullptr;
  std::string name_;
  int ccMajor_ = 0;
  int ccMinor_ = 0;
  int maxSharedOptin_ = 48 * 1024;
  int driverVersion_ = 0;
  CudaOptions options_;
  CUevent stepStart_ = nullptr;
  CUevent stepEnd_ = nullptr;
  bool stepTimed_ = false;
  std::vector<CUevent> launchEvents_; ///< profiling: one per launch of a step
  std::vector<GraphEntry> graphs_; ///< most recently used first
  /// Keys run fewer than graphAfterRuns times so far, with their count
  /// (most recent first, at most 4 x graphCacheSize).
  std::vector<
      std::pair<std::tuple<uint32_t, int64_t, int64_t, int64_t>, unsigned>>
      runsSeen_;
  std::vector<CUmodule> modules_;
  std::vector<KernelInfo> kernels_;
  /// (kernel, tensor map, bound buffer) -> device copy of the encoded map.
  std::map<std::tuple<uint32_t, uint32_t, CUdeviceptr>, CUdeviceptr>
      tensorMaps_;
  std::vector<CUdeviceptr> argValues_;
  std::vector<void *> paramPtrs_;
  int64_t region_[3] = {0, 0, 0};
};

} // namespace

Expected<std::unique_ptr<Device>> createCudaDevice(const CudaOptions &options) {
  auto device = std::make_unique<CudaDevice>(options);
  COLOSSUS_RETURN_IF_ERROR(device->init());
  return std::unique_ptr<Device>(std::move(device));
}

} // namespace colossus
