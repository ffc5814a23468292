// hopper_gemm_check: runs one sm_90a TMA + wgmma GEMM kernel emitted by
// `colossus-compile GRAPH.mlir --target=sm_90a --emit=ptx` on the GPU,
// checks it against a float64 CPU reference and times it.
//
//   nvcc -arch=sm_90a -O2 -o hopper_gemm_check scripts/gpu/hopper_gemm_check.cu -lcuda -lpthread
//   ./hopper_gemm_check KERNELS.ptx [--kernel NAME] [--repeats N] [--rows R]
//                       [--nt NT] [--pos0 P]
//
// The kernel's launch ABI (docs/hopper-gemm.md) is read from the
// `// colossus.hopper_gemm ...` line that --emit=ptx prints before its PTX:
// operand layouts (a_layout, b_layout), summed products (a_arg, b_arg,
// kparts), the dual GEMM (b2_arg), weight gradients (mask_k: K is the token
// dimension, rows >= --rows of both operands are poisoned with NaN and must
// not count), the epilogue expression of every output, the outputs the
// kernel adds into (accumulate) and the KV cache outputs (cache: row r is
// stored at cache[r / nt, pos0 + r % nt]; --nt and --pos0 set nt and pos0,
// nb = R / nt, and every cache row not written must keep its sentinel).
// Host code only (CUDA driver API); exit status 0 = numerics within bf16
// tolerance, 1 = mismatch, 2 = usage or CUDA error.
#include "harness.h"

#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace harness;

/// Finds kernel `name` (or the first Hopper GEMM) in the --emit=ptx output:
/// its ABI line and its PTX module text.
bool findKernel(const std::string &text, std::string &name, Abi &abi,
                std::string &ptx) {
  return findAbiKernel(text, name, abi, ptx, {"// colossus.hopper_gemm "});
}

/// A tensor map of a bf16 operand with `rows` rows (M or N) and `kPart`
/// columns of K: K-contiguous ([rows, kPart] in memory, box {64, boxRows})
/// or M/N-contiguous ([kPart, rows], box {64, 64}).
CUtensorMap encode(CUdeviceptr base, bool mn, uint64_t rows, uint64_t kPart,
                   uint32_t boxRows) {
  CUtensorMap map;
  // Dimension 0 is the contiguous one; strides exclude dimension 0.
  cuuint64_t dims[2] = {mn ? rows : kPart, mn ? kPart : rows};
  cuuint64_t strides[1] = {dims[0] * 2};
  cuuint32_t box[2] = {64, mn ? 64u : boxRows};
  cuuint32_t elementStrides[2] = {1, 1};
  CHECK_CU(cuTensorMapEncodeTiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, reinterpret_cast<void *>(base),
      dims, strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

std::vector<long long> numbers(const std::string &s) {
  std::vector<long long> out;
  std::istringstream in(s);
  std::string part;
  while (std::getline(in, part, ','))
    out.push_back(std::atoll(part.c_str()));
  return out;
}

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string part;
  while (std::getline(in, part, sep))
    out.push_back(part);
  return out;
}

/// One node of an epilogue expression (docs/hopper-gemm.md "Launch ABI"):
/// acc0 / acc1, a group input `row<arg>:<type>` (at [row, col]) or
/// `col<arg>:<type>` (at [col]), or a function of nodes.
struct Expr {
  std::string fn; // "acc0", "acc1", "row", "col" or the function
  int arg = -1;
  bool f32 = false;
  std::vector<Expr> args;
};

bool parseExpr(const std::string &s, size_t &i, Expr &e) {
  size_t start = i;
  while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) ||
                          s[i] == '_' || s[i] == ':'))
    ++i;
  std::string tok = s.substr(start, i - start);
  if (tok.empty())
    return false;
  if (i < s.size() && s[i] == '(') {
    e.fn = tok;
    ++i;
    while (true) {
      Expr a;
      if (!parseExpr(s, i, a))
        return false;
      e.args.push_back(std::move(a));
      if (i < s.size() && s[i] == ',') {
        ++i;
        continue;
      }
      if (i < s.size() && s[i] == ')') {
        ++i;
        return true;
      }
      return false;
    }
  }
  if (tok == "acc0" || tok == "acc1") {
    e.fn = tok;
    return true;
  }
  if (tok.rfind("row", 0) == 0 || tok.rfind("col", 0) == 0) {
    size_t colon = tok.find(':');
    if (colon == std::string::npos)
      return false;
    e.fn = tok.substr(0, 3);
    e.arg = std::atoi(tok.substr(3, colon - 3).c_str());
    e.f32 = tok.substr(colon + 1) == "f32";
    return true;
  }
  return false;
}

/// Every leaf input of `e` (argument, is a row input, is f32).
void leaves(const Expr &e, std::map<int, std::pair<bool, bool>> &out) {
  if (e.fn == "row" || e.fn == "col")
    out[e.arg] = {e.fn == "row", e.f32};
  for (const Expr &a : e.args)
    leaves(a, out);
}

double roundBf16(double x) { return fromBf16(toBf16(static_cast<float>(x))); }

/// The epilogue in float64, with the formulas of the SIMT kernels.
double evalExpr(const Expr &e, double acc0, double acc1,
                const std::function<double(int)> &leaf) {
  if (e.fn == "acc0")
    return acc0;
  if (e.fn == "acc1")
    return acc1;
  if (e.fn == "row" || e.fn == "col")
    return leaf(e.arg);
  std::vector<double> v;
  for (const Expr &a : e.args)
    v.push_back(evalExpr(a, acc0, acc1, leaf));
  auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  auto siluPrime = [](double x, double s) { return s * (1.0 + x * (1.0 - s)); };
  const double k = std::sqrt(2.0 / M_PI);
  if (e.fn == "add")
    return v[0] + v[1];
  if (e.fn == "mul")
    return v[0] * v[1];
  if (e.fn == "silu")
    return v[0] * sigmoid(v[0]);
  if (e.fn == "swiglu")
    return v[0] * sigmoid(v[0]) * v[1];
  if (e.fn == "gelu_tanh")
    return 0.5 * v[0] *
           (1.0 + std::tanh(k * (v[0] + 0.044715 * v[0] * v[0] * v[0])));
  if (e.fn == "gelu_erf")
    return 0.5 * v[0] * (1.0 + std::erf(v[0] * M_SQRT1_2));
  if (e.fn == "f32")
    return v[0];
  if (e.fn == "bf16")
    return roundBf16(v[0]);
  if (e.fn == "silu_grad")
    return v[1] * siluPrime(v[0], sigmoid(v[0]));
  if (e.fn == "swiglu_dgate")
    return v[2] * v[1] * siluPrime(v[0], sigmoid(v[0]));
  if (e.fn == "swiglu_dup")
    return v[2] * v[0] * sigmoid(v[0]);
  if (e.fn == "gelu_grad_tanh") {
    double x = v[0], t = std::tanh(k * (x + 0.044715 * x * x * x));
    double d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k *
                                     (1.0 + 3 * 0.044715 * x * x);
    return v[1] * d;
  }
  if (e.fn == "gelu_grad_erf") {
    double x = v[0];
    double d = 0.5 * (1.0 + std::erf(x * M_SQRT1_2)) +
               x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    return v[1] * d;
  }
  std::fprintf(stderr, "unknown epilogue function %s\n", e.fn.c_str());
  std::exit(2);
}

} // namespace

int main(int argc, char **argv) {
  std::string path, kernel;
  int repeats = 20;
  long long activeRows = -1, ntArg = 1, pos0Arg = 0;
  int rc = parseArgs(argc, argv,
                     "KERNELS.ptx [--kernel NAME] [--repeats N] [--rows R] "
                     "[--nt NT] [--pos0 P]",
                     path, kernel, repeats, [&](const std::string &a, int &i) {
                       if (a == "--rows" && i + 1 < argc) {
                         activeRows = std::atoll(argv[++i]);
                         return true;
                       }
                       if (a == "--nt" && i + 1 < argc) {
                         ntArg = std::atoll(argv[++i]);
                         return true;
                       }
                       if (a == "--pos0" && i + 1 < argc) {
                         pos0Arg = std::atoll(argv[++i]);
                         return true;
                       }
                       return false;
                     });
  if (rc >= 0)
    return rc;
  std::string text;
  Abi abi;
  std::string ptx;
  if (!readFile(path, text) || !findKernel(text, kernel, abi, ptx)) {
    std::fprintf(stderr, "%s: no Hopper GEMM kernel%s%s\n", path.c_str(),
                 kernel.empty() ? "" : " named ", kernel.c_str());
    return 2;
  }
  const long long m = abi.num("m"), n = abi.num("n"), k = abi.num("k");
  const long long bm = abi.num("bm"), bn = abi.num("bn"), bk = abi.num("bk");
  const std::vector<long long> aArgs = numbers(abi.str("a_arg"));
  const std::vector<long long> bArgs = numbers(abi.str("b_arg"));
  const std::vector<long long> kParts =
      abi.kv.count("kparts") ? numbers(abi.str("kparts"))
                             : std::vector<long long>{k};
  const int b2Arg = abi.kv.count("b2_arg") ? abi.num("b2_arg") : -1;
  const bool aMn = abi.str("a_layout") == "mn";
  const bool bMn = abi.str("b_layout") == "mn";
  const bool maskK = abi.kv.count("mask_k") && abi.num("mask_k") == 1;
  const int outArg = abi.num("out_arg");
  const int numOuts = abi.kv.count("outs") ? abi.num("outs") : 1;
  std::vector<bool> outF32;
  for (const std::string &t : split(abi.str("out"), ','))
    outF32.push_back(t == "f32");
  // The epilogue of each output; older ABI lines: bias and residual keys.
  std::vector<Expr> epilogue(numOuts);
  if (abi.kv.count("epilogue")) {
    std::vector<std::string> exprs = split(abi.str("epilogue"), ';');
    for (int o = 0; o < numOuts; ++o) {
      size_t i = 0;
      if (o >= int(exprs.size()) || !parseExpr(exprs[o], i, epilogue[o]) ||
          i != exprs[o].size()) {
        std::fprintf(stderr, "bad epilogue in the ABI line\n");
        return 2;
      }
    }
  } else {
    std::string e = "acc0";
    if (abi.num("bias_arg") >= 0)
      e = "add(" + e + ",col" + std::to_string(abi.num("bias_arg")) + ":" +
          abi.str("bias") + ")";
    if (abi.num("residual_arg") >= 0)
      e = "add(" + e + ",row" + std::to_string(abi.num("residual_arg")) +
          ":" + abi.str("residual") + ")";
    size_t i = 0;
    parseExpr(e, i, epilogue[0]);
  }
  std::vector<bool> accumulate(numOuts, false);
  if (abi.kv.count("accumulate"))
    for (long long o : numbers(abi.str("accumulate")))
      accumulate.at(o) = true;
  // KV cache outputs (`cache=<output>:<B>x<S>,...`): [B, S, N], row r at
  // [r / nt, pos0 + r % nt]; {0, 0} for an [M, N] output.
  std::vector<std::pair<long long, long long>> cacheDims(numOuts, {0, 0});
  if (abi.kv.count("cache"))
    for (const std::string &c : split(abi.str("cache"), ',')) {
      int o = -1;
      long long nbCap = 0, sCap = 0;
      if (std::sscanf(c.c_str(), "%d:%lldx%lld", &o, &nbCap, &sCap) != 3 ||
          o < 0 || o >= numOuts || nbCap <= 0 || sCap <= 0) {
        std::fprintf(stderr, "bad cache=%s in the ABI line\n", c.c_str());
        return 2;
      }
      cacheDims[o] = {nbCap, sCap};
    }
  if (aArgs.empty() || aArgs.size() != bArgs.size() ||
      aArgs.size() != kParts.size() || int(outF32.size()) != numOuts) {
    std::fprintf(stderr, "inconsistent ABI line\n");
    return 2;
  }
  const unsigned smem = abi.num("dynamic_smem");
  // The launch shape comes from the ABI line (the persistent grid and the
  // producer + consumer warpgroups: docs/hopper-gemm.md "Launch ABI").
  unsigned grid[3], block[3];
  abi.dims("grid", grid);
  abi.dims("block", block);
  // Active rows: of the output (token rows), or of K (weight gradients).
  const long long tokens = maskK ? k : m;
  if (activeRows < 0)
    activeRows = tokens;
  // nb sequences of nt active tokens each, the first at position pos0.
  if (ntArg <= 0 || activeRows % ntArg != 0 || pos0Arg < 0) {
    std::fprintf(stderr,
                 "--rows %lld is not a multiple of --nt %lld (or "
                 "--pos0 < 0)\n",
                 activeRows, ntArg);
    return 2;
  }
  for (int o = 0; o < numOuts; ++o)
    if (cacheDims[o].first && (activeRows / ntArg > cacheDims[o].first ||
                               pos0Arg + ntArg > cacheDims[o].second)) {
      std::fprintf(stderr,
                   "output %d: %lld sequences of %lld tokens from "
                   "position %lld do not fit the cache [%lld, %lld]\n",
                   o, activeRows / ntArg, ntArg, pos0Arg, cacheDims[o].first,
                   cacheDims[o].second);
      return 2;
    }
  std::printf("kernel %s: M=%lld N=%lld K=%lld (%zu product%s) A %s B %s%s "
              "tile %lldx%lldx%lld stages %lld grid %ux%ux%u block %ux%ux%u "
              "smem %u, active %s %lld (nt %lld, pos0 %lld), %d output%s\n",
              kernel.c_str(), m, n, k, aArgs.size(),
              aArgs.size() == 1 ? "" : "s", aMn ? "M-major" : "K-major",
              bMn ? "N-major" : "K-major", b2Arg >= 0 ? " + B2 (dual)" : "", bm,
              bn, bk, abi.num("stages"), grid[0], grid[1], grid[2], block[0],
              block[1], block[2], smem, maskK ? "token rows of K" : "rows",
              activeRows, ntArg, pos0Arg, numOuts, numOuts == 1 ? "" : "s");

  CUdevice dev0;
  CUmodule mod;
  CUfunction fn;
  if (!loadKernel(ptx, kernel, smem, dev0, mod, fn))
    return 2;

  // Inputs: uniform in [-1, 1), rounded to bf16 (the reference uses the
  // rounded values, so only the kernel's arithmetic is measured). Operands
  // are also kept K-contiguous in float64 for the reference. Weight
  // gradients: token rows >= activeRows of both operands hold NaN, which
  // the kernel must not read into the sums.
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
  auto upload = [&](const std::vector<uint8_t> &h) {
    CUdeviceptr d = 0;
    CHECK_CU(cuMemAlloc(&d, std::max<size_t>(h.size(), 1)));
    if (!h.empty())
      CHECK_CU(cuMemcpyHtoD(d, h.data(), h.size()));
    return d;
  };
  // An operand with `rows` rows (M or N) and kPart columns of K, in its
  // layout; returns the device buffer and fills `ref` [rows][kPart].
  auto operand = [&](bool mn, long long rows, long long kPart,
                     std::vector<double> &ref) {
    std::vector<double> raw;
    std::vector<uint8_t> bytes = fill(size_t(rows) * kPart, false, raw);
    ref.assign(size_t(rows) * kPart, 0);
    for (long long r = 0; r < rows; ++r)
      for (long long kk = 0; kk < kPart; ++kk) {
        size_t at = mn ? size_t(kk) * rows + r : size_t(r) * kPart + kk;
        if (maskK && kk >= activeRows) {
          uint16_t nan = 0x7FC0;
          std::memcpy(&bytes[2 * at], &nan, 2);
          ref[size_t(r) * kPart + kk] = 0; // not summed
          continue;
        }
        ref[size_t(r) * kPart + kk] = raw[at];
      }
    return upload(bytes);
  };
  const int numParams = outArg + numOuts + 3;
  std::vector<CUdeviceptr> dev(numParams, 0);
  std::vector<CUtensorMap> maps(numParams);
  std::vector<bool> isMap(numParams, false);
  std::vector<std::vector<double>> refA(aArgs.size()), refB(aArgs.size());
  std::vector<double> refB2;
  for (size_t i = 0; i < aArgs.size(); ++i) {
    dev[aArgs[i]] = operand(aMn, m, kParts[i], refA[i]);
    maps[aArgs[i]] = encode(dev[aArgs[i]], aMn, m, kParts[i], bm);
    dev[bArgs[i]] = operand(bMn, n, kParts[i], refB[i]);
    maps[bArgs[i]] = encode(dev[bArgs[i]], bMn, n, kParts[i], bn);
    isMap[aArgs[i]] = isMap[bArgs[i]] = true;
  }
  if (b2Arg >= 0) {
    dev[b2Arg] = operand(bMn, n, kParts[0], refB2);
    maps[b2Arg] = encode(dev[b2Arg], bMn, n, kParts[0], bn);
    isMap[b2Arg] = true;
  }
  // Epilogue inputs: [M, N] (row) or [N] (col), bf16 or f32.
  std::map<int, std::pair<bool, bool>> inputs;
  for (const Expr &e : epilogue)
    leaves(e, inputs);
  std::map<int, std::vector<double>> refIn;
  for (auto [arg, kind] : inputs) {
    auto [isRow, f32] = kind;
    dev[arg] = upload(fill(isRow ? size_t(m) * n : size_t(n), f32, refIn[arg]));
  }
  // Outputs: 0xFF sentinel (rows at or past the active rows must stay
  // untouched), or random values for the outputs the kernel adds into.
  std::vector<std::vector<uint8_t>> initOut(numOuts);
  std::vector<std::vector<double>> refInit(numOuts);
  std::vector<size_t> outBytes(numOuts);
  // A cache output holds B * S rows of N.
  auto outRows = [&](int o) -> size_t {
    return cacheDims[o].first ? size_t(cacheDims[o].first) * cacheDims[o].second
                              : size_t(m);
  };
  for (int o = 0; o < numOuts; ++o) {
    outBytes[o] = outRows(o) * n * (outF32[o] ? 4 : 2);
    if (accumulate[o])
      initOut[o] = fill(outRows(o) * n, outF32[o], refInit[o]);
    else
      initOut[o].assign(outBytes[o], 0xFF);
    dev[outArg + o] = upload(initOut[o]);
  }

  // Inputs the kernel does not read (the cache a cache_write updates in
  // place: the kernel writes the output, which the runtime aliases with
  // it): a small buffer, so every parameter is a valid pointer.
  for (int i = 0; i < outArg; ++i)
    if (!dev[i] && !isMap[i])
      dev[i] = upload(std::vector<uint8_t>(256, 0xFF));

  // The tensor maps live in device memory (64-byte aligned: cuMemAlloc).
  std::vector<CUdeviceptr> mapDev(numParams, 0);
  for (int i = 0; i < numParams; ++i)
    if (isMap[i])
      mapDev[i] = uploadMap(maps[i]);

  // Parameters: the fusion's operands (A and B as tensor-map pointers), the
  // outputs, then nb, nt, pos0 (active rows = nb * nt).
  std::vector<void *> params(numParams, nullptr);
  int64_t nb = activeRows / ntArg, nt = ntArg, pos0 = pos0Arg;
  for (int i = 0; i < outArg + numOuts; ++i)
    if (isMap[i])
      params[i] = &mapDev[i];
    else if (dev[i])
      params[i] = &dev[i];
  params[outArg + numOuts] = &nb;
  params[outArg + numOuts + 1] = &nt;
  params[outArg + numOuts + 2] = &pos0;
  if (!allParamsSet(params))
    return 2;

  Launcher launch(fn, grid, block, smem, params);
  CUstream stream = launch.stream;
  launch.once();
  std::vector<std::vector<uint8_t>> hC(numOuts);
  for (int o = 0; o < numOuts; ++o) {
    hC[o].resize(outBytes[o]);
    CHECK_CU(cuMemcpyDtoH(hC[o].data(), dev[outArg + o], outBytes[o]));
  }
  auto outAt = [&](int o, size_t i) -> double {
    if (outF32[o]) {
      float v;
      std::memcpy(&v, &hC[o][4 * i], 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, &hC[o][2 * i], 2);
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
  // 512 rows of 67M multiply-adds each); each thread keeps its own sums,
  // per output.
  struct Partial {
    std::vector<double> errSq, refSq, maxAbs;
    long long touched = 0;
  };
  auto checkRow = [&](long long r, Partial &p) {
    if (!maskK && r >= activeRows) {
      // Untouched: still the initial bytes (caches: checked below).
      for (int o = 0; o < numOuts; ++o) {
        if (cacheDims[o].first)
          continue;
        size_t w = outF32[o] ? 4 : 2;
        for (size_t i = size_t(r) * n * w; i < size_t(r + 1) * n * w; ++i)
          p.touched += hC[o][i] != initOut[o][i];
      }
      return;
    }
    for (long long c = 0; c < n; ++c) {
      double acc0 = 0, acc1 = 0;
      for (size_t t = 0; t < aArgs.size(); ++t) {
        const double *a = &refA[t][size_t(r) * kParts[t]];
        const double *b = &refB[t][size_t(c) * kParts[t]];
        for (long long kk = 0; kk < kParts[t]; ++kk)
          acc0 += a[kk] * b[kk];
      }
      if (b2Arg >= 0) {
        const double *a = &refA[0][size_t(r) * kParts[0]];
        const double *b = &refB2[size_t(c) * kParts[0]];
        for (long long kk = 0; kk < kParts[0]; ++kk)
          acc1 += a[kk] * b[kk];
      }
      auto leaf = [&](int arg) {
        return inputs[arg].first ? refIn[arg][size_t(r) * n + c]
                                 : refIn[arg][size_t(c)];
      };
      for (int o = 0; o < numOuts; ++o) {
        // The element's place: [r, c], or in a cache [r / nt, pos0 +
        // r % nt, c].
        size_t at = size_t(r) * n + c;
        if (cacheDims[o].first)
          at = (size_t(r / nt) * cacheDims[o].second + pos0 + r % nt) * n + c;
        double want = evalExpr(epilogue[o], acc0, acc1, leaf);
        if (accumulate[o])
          want += refInit[o][at];
        double got = outAt(o, at);
        double d = std::isfinite(got) ? got - want : 1e30;
        p.errSq[o] += d * d;
        p.refSq[o] += want * want;
        p.maxAbs[o] = std::max(p.maxAbs[o], std::fabs(d));
      }
    }
  };
  Partial init;
  init.errSq = init.refSq = init.maxAbs = std::vector<double>(numOuts, 0.0);
  std::vector<Partial> partials = checkInParallel(rows, checkRow, init);
  long long touched = 0;
  double worst = 0, worstTol = 0, worstMax = 0;
  bool ok = true;
  for (const Partial &p : partials)
    touched += p.touched;
  // Cache rows no active row maps to (other sequences, positions outside
  // [pos0, pos0 + nt)) keep their initial bytes.
  for (int o = 0; o < numOuts; ++o) {
    if (!cacheDims[o].first)
      continue;
    size_t w = outF32[o] ? 4 : 2;
    for (long long sq = 0; sq < cacheDims[o].first; ++sq)
      for (long long ps = 0; ps < cacheDims[o].second; ++ps) {
        if (sq < nb && ps >= pos0 && ps < pos0 + nt)
          continue;
        size_t row = size_t(sq) * cacheDims[o].second + ps;
        for (size_t i = row * n * w; i < (row + 1) * n * w; ++i)
          touched += hC[o][i] != initOut[o][i];
      }
  }
  for (int o = 0; o < numOuts; ++o) {
    double errSq = 0, refSq = 0, maxAbs = 0;
    for (const Partial &p : partials) {
      errSq += p.errSq[o];
      refSq += p.refSq[o];
      maxAbs = std::max(maxAbs, p.maxAbs[o]);
    }
    double rel = std::sqrt(errSq / std::max(refSq, 1e-300));
    // bf16 output: one rounding (relative 2^-9) dominates; f32 output: the
    // f32 accumulation over K.
    double tol = outF32[o] ? 1e-4 : 8e-3;
    ok = ok && rel <= tol;
    if (numOuts > 1)
      std::printf("  output %d (%s%s): norm-wise relative error %.3e "
                  "(tolerance %.1e), max abs error %.3e\n",
                  o, outF32[o] ? "f32" : "bf16",
                  accumulate[o] ? ", accumulated" : "", rel, tol, maxAbs);
    if (o == 0 || rel / tol > worst / worstTol) {
      worst = rel;
      worstTol = tol;
      worstMax = maxAbs;
    }
  }
  ok = ok && touched == 0;
  std::printf("numerics: %zu rows checked, norm-wise relative error %.3e "
              "(tolerance %.1e), max abs error %.3e, %lld bytes written past "
              "the active rows: %s\n",
              rows.size(), worst, worstTol, worstMax, touched,
              ok ? "PASS" : "FAIL");

  // Timing: median of `repeats` launches after 3 warm-up launches.
  // Useful work: active rows (of the output, or of K for weight gradients).
  double flops = 2.0 * double(maskK ? m : activeRows) * n *
                 double(maskK ? activeRows : k) * (b2Arg >= 0 ? 2 : 1);
  timeKernel(stream, launch, repeats, flops);

  cuModuleUnload(mod);
  cuDevicePrimaryCtxRelease(dev0);
  return ok ? 0 : 1;
}
