// harness.h: host-side pieces shared by the standalone GPU checks
// hopper_gemm_check.cu and hopper_attention_check.cu (CUDA driver API):
// the CHECK_CU macro, bf16 rounding, the `// colossus.hopper_* key=value`
// ABI line, finding a kernel in the --emit=ptx output, loading it on an
// sm_90 GPU and timing it. Included by `#include "harness.h"` from the .cu
// files next to it (nvcc finds it without -I).
#ifndef COLOSSUS_SCRIPTS_GPU_HARNESS_H
#define COLOSSUS_SCRIPTS_GPU_HARNESS_H

#include <cuda.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#define CHECK_CU(call)                                                         \
  do {                                                                         \
    CUresult rc_ = (call);                                                     \
    if (rc_ != CUDA_SUCCESS) {                                                 \
      const char *msg_ = nullptr;                                              \
      cuGetErrorString(rc_, &msg_);                                            \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,       \
                   #call, msg_ ? msg_ : "?");                                  \
      std::exit(2);                                                            \
    }                                                                          \
  } while (0)

namespace harness {

inline uint16_t toBf16(float f) { // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
inline float fromBf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// `count` values uniform in `dist`, rounded to bf16: the bf16 bits, and
/// the rounded values in `ref` (the reference uses the rounded values).
inline std::vector<uint16_t>
fillBf16(std::mt19937 &rng, std::uniform_real_distribution<float> &dist,
         size_t count, std::vector<float> &ref) {
  std::vector<uint16_t> h(count);
  ref.resize(count);
  for (size_t i = 0; i < count; ++i) {
    h[i] = toBf16(dist(rng));
    ref[i] = fromBf16(h[i]);
  }
  return h;
}

/// The `key=value` pairs of a kernel's ABI line.
struct Abi {
  std::map<std::string, std::string> kv;
  long long num(const std::string &k) const {
    auto it = kv.find(k);
    if (it == kv.end()) {
      std::fprintf(stderr, "ABI line lacks %s\n", k.c_str());
      std::exit(2);
    }
    return std::atoll(it->second.c_str());
  }
  std::string str(const std::string &k) const {
    auto it = kv.find(k);
    return it == kv.end() ? "none" : it->second;
  }
  /// `key=x,y,z` (grid, block): three positive integers.
  void dims(const std::string &k, unsigned out[3]) const {
    auto it = kv.find(k);
    if (it == kv.end() ||
        std::sscanf(it->second.c_str(), "%u,%u,%u", &out[0], &out[1],
                    &out[2]) != 3 ||
        !out[0] || !out[1] || !out[2]) {
      std::fprintf(stderr, "ABI line lacks %s=X,Y,Z\n", k.c_str());
      std::exit(2);
    }
  }
};

/// Parses `KERNELS.ptx [--kernel NAME] [--repeats N]` and the options of
/// `extra(a, i)` (true when argument `a` = argv[i] is one of them; it reads
/// its value at argv[++i]); `--help` prints `usage: PROG usageTail`.
/// Returns -1 to go on, or the exit status (0 after --help, 2 on a usage
/// error).
template <typename Extra>
int parseArgs(int argc, char **argv, const char *usageTail, std::string &path,
              std::string &kernel, int &repeats, Extra extra) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--kernel" && i + 1 < argc)
      kernel = argv[++i];
    else if (a == "--repeats" && i + 1 < argc)
      repeats = std::max(1, std::atoi(argv[++i]));
    else if (extra(a, i))
      continue;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: %s %s\n", argv[0], usageTail);
      return 0;
    } else if (path.empty())
      path = a;
    else {
      std::fprintf(stderr, "unexpected argument %s\n", a.c_str());
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: %s KERNELS.ptx [--kernel NAME]\n", argv[0]);
    return 2;
  }
  return -1;
}

/// The whole of file `path` in `text`; false when it cannot be read.
inline bool readFile(const std::string &path, std::string &text) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  text = ss.str();
  return static_cast<bool>(f);
}

/// Finds kernel `name` (or the first kernel with an ABI line) in the
/// --emit=ptx output: its ABI line (one starting with one of `abiTags`,
/// e.g. "// colossus.hopper_gemm "; `*tagIndex` says which) and its PTX
/// module text.
inline bool findAbiKernel(const std::string &text, std::string &name, Abi &abi,
                          std::string &ptx,
                          const std::vector<std::string> &abiTags,
                          size_t *tagIndex = nullptr) {
  std::istringstream in(text);
  std::string line, current, body, abiLine;
  bool found = false;
  size_t lineTag = 0;
  auto finish = [&]() {
    if (!found && !current.empty() && !abiLine.empty() &&
        (name.empty() || name == current)) {
      name = current;
      ptx = body;
      if (tagIndex)
        *tagIndex = lineTag;
      std::istringstream ws(abiLine);
      std::string tok;
      while (ws >> tok)
        if (auto eq = tok.find('='); eq != std::string::npos)
          abi.kv[tok.substr(0, eq)] = tok.substr(eq + 1);
      found = true;
    }
  };
  const std::string header = "// ----- kernel ";
  while (std::getline(in, line)) {
    if (line.rfind(header, 0) == 0) {
      finish();
      std::istringstream hs(line.substr(header.size()));
      hs >> current;
      body.clear();
      abiLine.clear();
      continue;
    }
    bool isAbi = false;
    for (size_t t = 0; t < abiTags.size() && !isAbi; ++t)
      if (line.rfind(abiTags[t], 0) == 0) {
        lineTag = t;
        abiLine = line.substr(abiTags[t].size());
        isAbi = true;
      }
    if (isAbi)
      continue;
    body += line;
    body += '\n';
  }
  finish();
  return found;
}

/// Initializes the driver on device 0, which must be sm_90 (with
/// `anyMinor`, any sm_9x), loads `ptx` and gets `kernel` with `smem` bytes
/// of dynamic shared memory. Prints why and returns false on failure.
inline bool loadKernel(const std::string &ptx, const std::string &kernel,
                       unsigned smem, CUdevice &dev, CUmodule &mod,
                       CUfunction &fn, bool anyMinor = false) {
  CHECK_CU(cuInit(0));
  CHECK_CU(cuDeviceGet(&dev, 0));
  int major = 0, minor = 0;
  CHECK_CU(cuDeviceGetAttribute(
      &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  if (anyMinor) {
    if (major != 9) {
      std::fprintf(stderr, "sm_90a kernels need an sm_90 GPU\n");
      return false;
    }
  } else {
    CHECK_CU(cuDeviceGetAttribute(
        &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    if (major != 9 || minor != 0) {
      std::fprintf(stderr, "sm_90a kernels need an sm_90 GPU (found sm_%d%d)\n",
                   major, minor);
      return false;
    }
  }
  CUcontext ctx;
  CHECK_CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK_CU(cuCtxSetCurrent(ctx));

  char log[8192] = {0};
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER,
                         CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {log, reinterpret_cast<void *>(sizeof(log))};
  if (cuModuleLoadDataEx(&mod, ptx.c_str(), 2, opts, vals) != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuModuleLoadDataEx failed:\n%s\n", log);
    return false;
  }
  CHECK_CU(cuModuleGetFunction(&fn, mod, kernel.c_str()));
  CHECK_CU(cuFuncSetAttribute(
      fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem));
  return true;
}

/// Launches `fn` on its own stream with the kernel parameters `params`
/// (read at each launch).
struct Launcher {
  CUfunction fn;
  unsigned grid[3], block[3], smem;
  std::vector<void *> &params;
  CUstream stream;
  Launcher(CUfunction fn, const unsigned g[3], const unsigned b[3],
           unsigned smem, std::vector<void *> &params)
      : fn(fn), grid{g[0], g[1], g[2]}, block{b[0], b[1], b[2]}, smem(smem),
        params(params) {
    CHECK_CU(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  }
  void operator()() const {
    CHECK_CU(cuLaunchKernel(fn, grid[0], grid[1], grid[2], block[0], block[1],
                            block[2], smem, stream, params.data(), nullptr));
  }
  /// One launch, waited for.
  void once() const {
    (*this)();
    CHECK_CU(cuStreamSynchronize(stream));
  }
};

/// A device copy of `bytes` bytes at `p`.
inline CUdeviceptr upload(const void *p, size_t bytes) {
  CUdeviceptr d = 0;
  CHECK_CU(cuMemAlloc(&d, bytes));
  CHECK_CU(cuMemcpyHtoD(d, p, bytes));
  return d;
}

/// A tensor map in device memory (64-byte aligned: cuMemAlloc), for a
/// kernel parameter that is a pointer to one.
inline CUdeviceptr uploadMap(const CUtensorMap &map) {
  return upload(&map, sizeof(CUtensorMap));
}

/// False (and says which) when the ABI left a kernel parameter unset.
inline bool allParamsSet(const std::vector<void *> &params) {
  for (size_t i = 0; i < params.size(); ++i)
    if (!params[i]) {
      std::fprintf(stderr, "ABI leaves parameter %zu unset\n", i);
      return false;
    }
  return true;
}

/// Runs `check(item, partial)` on every item on all hardware threads (item
/// i on thread i mod threads), each thread with its own `Partial` (a copy
/// of `init`); returns the partials to combine.
template <typename Partial, typename Item, typename Check>
std::vector<Partial> checkInParallel(const std::vector<Item> &items,
                                     Check &check,
                                     const Partial &init = Partial()) {
  unsigned numThreads =
      std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                                      unsigned(items.size())));
  std::vector<Partial> partials(numThreads, init);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < numThreads; ++t)
    threads.emplace_back([&, t]() {
      for (size_t i = t; i < items.size(); i += numThreads)
        check(items[i], partials[t]);
    });
  for (std::thread &t : threads)
    t.join();
  return partials;
}

/// Median of `repeats` launches after 3 warm-ups; prints the time line
/// with `flops` per launch.
template <typename Launch>
void timeKernel(CUstream stream, Launch &launch, int repeats, double flops) {
  CUevent start, stop;
  CHECK_CU(cuEventCreate(&start, CU_EVENT_DEFAULT));
  CHECK_CU(cuEventCreate(&stop, CU_EVENT_DEFAULT));
  for (int i = 0; i < 3; ++i)
    launch();
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    CHECK_CU(cuEventRecord(start, stream));
    launch();
    CHECK_CU(cuEventRecord(stop, stream));
    CHECK_CU(cuEventSynchronize(stop));
    float t = 0;
    CHECK_CU(cuEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  double med = ms[ms.size() / 2];
  std::printf("time: median %.3f ms of %d (min %.3f, max %.3f): %.1f TFLOP/s\n",
              med, repeats, ms.front(), ms.back(), flops / (med * 1e-3) / 1e12);
}

} // namespace harness

#endif // COLOSSUS_SCRIPTS_GPU_HARNESS_H
