// hopper_gemm_check: runs one sm_90a TMA + wgmma GEMM kernel emitted by
// `colossus-compile GRAPH.mlir --target=sm_90a --emit=ptx` on the GPU,
// checks it against a float64 CPU reference and times it.
//
//   nvcc -arch=sm_90a -O2 -o hopper_gemm_check scripts/gpu/hopper_gemm_check.cu -lcuda -lpthread
//   ./hopper_gemm_check KERNELS.ptx [--kernel NAME] [--repeats N] [--rows R]
//
// The kernel's launch ABI (docs/hopper-gemm.md) is read from the
// `// colossus.hopper_gemm ...` line that --emit=ptx prints before its PTX.
// Host code only (CUDA driver API); exit status 0 = numerics within bf16
// tolerance, 1 = mismatch, 2 = usage or CUDA error.
#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
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

namespace {

#define CHECK_CU(call)                                                         \
  do {                                                                         \
    CUresult rc_ = (call);                                                     \
    if (rc_ != CUDA_SUCCESS) {                                                 \
      const char *msg_ = nullptr;                                              \
      cuGetErrorString(rc_, &msg_);                                            \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,      \
                   #call, msg_ ? msg_ : "?");                                  \
      std::exit(2);                                                            \
    }                                                                          \
  } while (0)

uint16_t toBf16(float f) { // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
float fromBf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

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

/// Finds kernel `name` (or the first Hopper GEMM) in the --emit=ptx output:
/// its ABI line and its PTX module text.
bool findKernel(const std::string &text, std::string &name, Abi &abi,
                std::string &ptx) {
  std::istringstream in(text);
  std::string line, current, body, abiLine;
  bool found = false;
  auto finish = [&]() {
    if (!found && !current.empty() && !abiLine.empty() &&
        (name.empty() || name == current)) {
      name = current;
      ptx = body;
      std::istringstream ws(abiLine);
      std::string tok;
      while (ws >> tok)
        if (auto eq = tok.find('='); eq != std::string::npos)
          abi.kv[tok.substr(0, eq)] = tok.substr(eq + 1);
      found = true;
    }
  };
  const std::string header = "// ----- kernel ", abiTag = "// colossus.hopper_gemm ";
  while (std::getline(in, line)) {
    if (line.rfind(header, 0) == 0) {
      finish();
      std::istringstream hs(line.substr(header.size()));
      hs >> current;
      body.clear();
      abiLine.clear();
      continue;
    }
    if (line.rfind(abiTag, 0) == 0) {
      abiLine = line.substr(abiTag.size());
      continue;
    }
    body += line;
    body += '\n';
  }
  finish();
  return found;
}

CUtensorMap encode(CUdeviceptr base, uint64_t rows, uint64_t cols,
                   uint32_t boxRows, uint32_t boxCols) {
  CUtensorMap map;
  // Dimension 0 is the contiguous one (K); strides exclude dimension 0.
  cuuint64_t dims[2] = {cols, rows};
  cuuint64_t strides[1] = {cols * 2};
  cuuint32_t box[2] = {boxCols, boxRows};
  cuuint32_t elementStrides[2] = {1, 1};
  CHECK_CU(cuTensorMapEncodeTiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, reinterpret_cast<void *>(base),
      dims, strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

} // namespace

int main(int argc, char **argv) {
  std::string path, kernel;
  int repeats = 20;
  long long activeRows = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--kernel" && i + 1 < argc)
      kernel = argv[++i];
    else if (a == "--repeats" && i + 1 < argc)
      repeats = std::max(1, std::atoi(argv[++i]));
    else if (a == "--rows" && i + 1 < argc)
      activeRows = std::atoll(argv[++i]);
    else if (a == "--help" || a == "-h") {
      std::printf("usage: %s KERNELS.ptx [--kernel NAME] [--repeats N] "
                  "[--rows R]\n",
                  argv[0]);
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
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  Abi abi;
  std::string ptx;
  if (!f || !findKernel(ss.str(), kernel, abi, ptx)) {
    std::fprintf(stderr, "%s: no Hopper GEMM kernel%s%s\n", path.c_str(),
                 kernel.empty() ? "" : " named ", kernel.c_str());
    return 2;
  }
  const long long m = abi.num("m"), n = abi.num("n"), k = abi.num("k");
  const long long bm = abi.num("bm"), bn = abi.num("bn"), bk = abi.num("bk");
  const int aArg = abi.num("a_arg"), bArg = abi.num("b_arg");
  const int biasArg = abi.num("bias_arg"), resArg = abi.num("residual_arg");
  const int outArg = abi.num("out_arg");
  const bool outF32 = abi.str("out") == "f32";
  const bool biasF32 = abi.str("bias") == "f32";
  const bool resF32 = abi.str("residual") == "f32";
  const unsigned smem = abi.num("dynamic_smem");
  // The launch shape comes from the ABI line (the persistent grid and the
  // producer + consumer warpgroups: docs/hopper-gemm.md "Launch ABI").
  unsigned grid[3], block[3];
  abi.dims("grid", grid);
  abi.dims("block", block);
  if (activeRows < 0)
    activeRows = m;
  std::printf("kernel %s: M=%lld N=%lld K=%lld tile %lldx%lldx%lld stages %lld "
              "grid %ux%ux%u block %ux%ux%u smem %u, active rows %lld\n",
              kernel.c_str(), m, n, k, bm, bn, bk, abi.num("stages"), grid[0],
              grid[1], grid[2], block[0], block[1], block[2], smem, activeRows);

  CHECK_CU(cuInit(0));
  CUdevice dev;
  CHECK_CU(cuDeviceGet(&dev, 0));
  int major = 0, minor = 0;
  CHECK_CU(cuDeviceGetAttribute(
      &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  CHECK_CU(cuDeviceGetAttribute(
      &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  if (major != 9 || minor != 0) {
    std::fprintf(stderr, "sm_90a kernels need an sm_90 GPU (found sm_%d%d)\n",
                 major, minor);
    return 2;
  }
  CUcontext ctx;
  CHECK_CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK_CU(cuCtxSetCurrent(ctx));

  char log[8192] = {0};
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER,
                         CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[] = {log, reinterpret_cast<void *>(sizeof(log))};
  CUmodule mod;
  if (cuModuleLoadDataEx(&mod, ptx.c_str(), 2, opts, vals) != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuModuleLoadDataEx failed:\n%s\n", log);
    return 2;
  }
  CUfunction fn;
  CHECK_CU(cuModuleGetFunction(&fn, mod, kernel.c_str()));
  CHECK_CU(cuFuncSetAttribute(
      fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem));

  // Inputs: uniform in [-1, 1), rounded to bf16 (the reference uses the
  // rounded values, so only the kernel's arithmetic is measured).
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto fill = [&](size_t count, bool f32, std::vector<double> &ref) {
    std::vector<uint8_t> bytes(count * (f32 ? 4 : 2));
    ref.resize(count);
    for (size_t i = 0; i < count; ++i) {
      float v = dist(rng);
      if (f32) {
        std::memcpy(&bytes[4 * i], &v, 4);
        ref[i] = v;
      } else {
        uint16_t h = toBf16(v);
        std::memcpy(&bytes[2 * i], &h, 2);
        ref[i] = fromBf16(h);
      }
    }
    return bytes;
  };
  std::vector<double> A, B, bias, res;
  auto hA = fill(size_t(m) * k, false, A);
  auto hB = fill(size_t(n) * k, false, B);
  std::vector<uint8_t> hBias, hRes;
  if (biasArg >= 0)
    hBias = fill(n, biasF32, bias);
  if (resArg >= 0)
    hRes = fill(size_t(m) * n, resF32, res);
  auto upload = [&](const std::vector<uint8_t> &h) {
    CUdeviceptr d = 0;
    CHECK_CU(cuMemAlloc(&d, std::max<size_t>(h.size(), 1)));
    if (!h.empty())
      CHECK_CU(cuMemcpyHtoD(d, h.data(), h.size()));
    return d;
  };
  CUdeviceptr dA = upload(hA), dB = upload(hB);
  CUdeviceptr dBias = upload(hBias), dRes = upload(hRes);
  const size_t outBytes = size_t(m) * n * (outF32 ? 4 : 2);
  CUdeviceptr dC;
  CHECK_CU(cuMemAlloc(&dC, outBytes));
  // Sentinel: rows at or past the active rows must stay untouched.
  CHECK_CU(cuMemsetD8(dC, 0xFF, outBytes));

  // The tensor maps live in device memory (64-byte aligned: cuMemAlloc).
  CUtensorMap mapA = encode(dA, m, k, bm, bk);
  CUtensorMap mapB = encode(dB, n, k, bn, bk);
  CUdeviceptr dMapA, dMapB;
  CHECK_CU(cuMemAlloc(&dMapA, sizeof(CUtensorMap)));
  CHECK_CU(cuMemAlloc(&dMapB, sizeof(CUtensorMap)));
  CHECK_CU(cuMemcpyHtoD(dMapA, &mapA, sizeof(CUtensorMap)));
  CHECK_CU(cuMemcpyHtoD(dMapB, &mapB, sizeof(CUtensorMap)));

  // Parameters: the fusion's operands (A and B as tensor-map pointers), the
  // output, then nb, nt, pos0 (rows = nb * nt).
  std::vector<void *> params(outArg + 4);
  int64_t nb = activeRows, nt = 1, pos0 = 0;
  params[aArg] = &dMapA;
  params[bArg] = &dMapB;
  if (biasArg >= 0)
    params[biasArg] = &dBias;
  if (resArg >= 0)
    params[resArg] = &dRes;
  params[outArg] = &dC;
  params[outArg + 1] = &nb;
  params[outArg + 2] = &nt;
  params[outArg + 3] = &pos0;
  for (size_t i = 0; i < params.size(); ++i)
    if (!params[i]) {
      std::fprintf(stderr, "ABI leaves parameter %zu unset\n", i);
      return 2;
    }

  CUstream stream;
  CHECK_CU(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  auto launch = [&]() {
    CHECK_CU(cuLaunchKernel(fn, grid[0], grid[1], grid[2], block[0], block[1],
                            block[2], smem, stream, params.data(), nullptr));
  };
  launch();
  CHECK_CU(cuStreamSynchronize(stream));
  std::vector<uint8_t> hC(outBytes);
  CHECK_CU(cuMemcpyDtoH(hC.data(), dC, outBytes));
  auto outAt = [&](size_t i) -> double {
    if (outF32) {
      float v;
      std::memcpy(&v, &hC[4 * i], 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, &hC[2 * i], 2);
    return fromBf16(h);
  };

  // Reference in float64: every row when the problem is small, else 512
  // sampled rows (the first and last of each row tile among them).
  std::vector<long long> rows;
  if (double(m) * n * k <= 4.0e9) {
    for (long long r = 0; r < m; ++r)
      rows.push_back(r);
  } else {
    for (long long r = 0; r < m; r += bm)
      rows.push_back(r), rows.push_back(r + bm - 1);
    std::uniform_int_distribution<long long> pick(0, m - 1);
    while (rows.size() < 512)
      rows.push_back(pick(rng));
  }
  // The rows are split among the host's threads (the 8192^3 check reads
  // 512 rows of 67M multiply-adds each); each thread keeps its own sums.
  struct Partial {
    double errSq = 0, refSq = 0, maxAbs = 0;
    long long touched = 0;
  };
  auto checkRow = [&](long long r, Partial &p) {
    if (r >= activeRows) {
      // Untouched: still the 0xFF sentinel bytes.
      for (long long c = 0; c < n; ++c) {
        size_t i = size_t(r) * n + c;
        for (int b = 0; b < (outF32 ? 4 : 2); ++b)
          p.touched += hC[i * (outF32 ? 4 : 2) + b] != 0xFF;
      }
      return;
    }
    for (long long c = 0; c < n; ++c) {
      double acc = 0;
      const double *a = &A[size_t(r) * k], *b = &B[size_t(c) * k];
      for (long long kk = 0; kk < k; ++kk)
        acc += a[kk] * b[kk];
      if (biasArg >= 0)
        acc += bias[c];
      if (resArg >= 0)
        acc += res[size_t(r) * n + c];
      double got = outAt(size_t(r) * n + c);
      double d = std::isfinite(got) ? got - acc : 1e30;
      p.errSq += d * d;
      p.refSq += acc * acc;
      p.maxAbs = std::max(p.maxAbs, std::fabs(d));
    }
  };
  unsigned numThreads = std::max(1u, std::min<unsigned>(
      std::thread::hardware_concurrency(), unsigned(rows.size())));
  std::vector<Partial> partials(numThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < numThreads; ++t)
    threads.emplace_back([&, t]() {
      for (size_t i = t; i < rows.size(); i += numThreads)
        checkRow(rows[i], partials[t]);
    });
  for (std::thread &t : threads)
    t.join();
  double errSq = 0, refSq = 0, maxAbs = 0;
  long long touched = 0;
  for (const Partial &p : partials) {
    errSq += p.errSq;
    refSq += p.refSq;
    maxAbs = std::max(maxAbs, p.maxAbs);
    touched += p.touched;
  }
  double rel = std::sqrt(errSq / std::max(refSq, 1e-300));
  // bf16 output: one rounding (relative 2^-9) dominates; f32 output: the f32
  // accumulation over K.
  double tol = outF32 ? 1e-4 : 8e-3;
  bool ok = rel <= tol && touched == 0;
  std::printf("numerics: %zu rows checked, norm-wise relative error %.3e "
              "(tolerance %.1e), max abs error %.3e, %lld bytes written past "
              "the active rows: %s\n",
              rows.size(), rel, tol, maxAbs, touched, ok ? "PASS" : "FAIL");

  // Timing: median of `repeats` launches after 3 warm-up launches.
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
  double flops = 2.0 * double(activeRows) * n * k;
  std::printf("time: median %.3f ms of %d (min %.3f, max %.3f): %.1f TFLOP/s\n",
              med, repeats, ms.front(), ms.back(), flops / (med * 1e-3) / 1e12);

  cuModuleUnload(mod);
  cuDevicePrimaryCtxRelease(dev);
  return ok ? 0 : 1;
}
