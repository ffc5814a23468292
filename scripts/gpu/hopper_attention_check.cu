// hopper_attention_check: runs one sm_90a TMA + wgmma attention kernel
// emitted by `colossus-compile GRAPH.mlir --target=sm_90a --hopper-attention
// --emit=ptx` on the GPU, checks it against a float64 CPU reference and
// times it.
//
//   nvcc -arch=sm_90a -O2 -o hopper_attention_check
//   scripts/gpu/hopper_attention_check.cu -lcuda -lpthread
//   ./hopper_attention_check KERNELS.ptx [--kernel NAME] [--repeats N]
//                            [--nb NB] [--nt NT] [--pos0 P] [--samples N]
//
// The kernel's launch ABI (docs/hopper-attention.md) is read from the
// `// colossus.hopper_attention ...` line that --emit=ptx prints before its
// PTX; a `// colossus.hopper_attention_bwd ...` kernel (the backward:
// part=dkdv or part=dq) is checked by runBackward (dk and dv, or dq,
// against float64; --samples defaults to 256 there). Defaults: every sequence
// (nb = B), nt = S, pos0 = 0 (prefill of the whole cache); with a smaller nt /
// a pos0 the cache rows past pos0 + nt hold random values the kernel must not
// read (causal) and q rows past nb * nt must stay untouched. Host code only
// (CUDA driver API); exit status 0 = numerics within bf16 tolerance, 1 =
// mismatch, 2 = usage or CUDA error.
#include "harness.h"

#include <cuda.h>

#include <algorithm>
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

using namespace harness;

/// Finds kernel `name` (or the first Hopper attention kernel) in the
/// --emit=ptx output: its ABI line and its PTX module text.
bool findKernel(const std::string &text, std::string &name, Abi &abi,
                std::string &ptx, bool &backward) {
  size_t tag = 0;
  bool found = findAbiKernel(
      text, name, abi, ptx,
      {"// colossus.hopper_attention ", "// colossus.hopper_attention_bwd "},
      &tag);
  if (found)
    backward = tag == 1;
  return found;
}

/// Points the nb, nt, pos0 parameters (after the last buffer) at `rowArgs`;
/// false when the ABI left a parameter unset.
bool setRowArgs(std::vector<void *> &params, int lastBuffer,
                int64_t rowArgs[3]) {
  for (int i = 0; i < 3; ++i)
    params[lastBuffer + 1 + i] = &rowArgs[i];
  return allParamsSet(params);
}

/// A bf16, 128-byte swizzled map of a dense row-major tensor; `dims`
/// innermost first.
CUtensorMap encode(CUdeviceptr base, std::vector<cuuint64_t> dims,
                   std::vector<cuuint32_t> box) {
  CUtensorMap map;
  const unsigned rank = dims.size();
  std::vector<cuuint64_t> strides;
  cuuint64_t s = 2;
  for (unsigned d = 0; d + 1 < rank; ++d)
    strides.push_back(s *= dims[d]);
  std::vector<cuuint32_t> elementStrides(rank, 1);
  CHECK_CU(cuTensorMapEncodeTiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank,
      reinterpret_cast<void *>(base), dims.data(), strides.data(), box.data(),
      elementStrides.data(), CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

/// The dQ kernel's check (`part=dq`): dq[r, h] = scale sum_j p_rj (dout_r .
/// v_j - dout_r . out_r) k_j over the keys row r sees, in float64, on
/// sampled (row, head) pairs; rows past nb * nt keep the poison.
template <typename Launch>
int finishDq(CUfunction, CUmodule mod, CUdevice dev, CUstream stream,
             Launch &launch, int repeats, const std::string &,
             const std::vector<float> &got, const std::vector<float> &Q,
             const std::vector<float> &K, const std::vector<float> &V,
             const std::vector<float> &DO, const std::vector<float> &O,
             const std::vector<float> &L, long long nb, long long nt,
             long long pos0, long long S, long long H, long long KVH,
             long long D, bool causal, double scale, long long samples,
             long long bq) {
  const long long C = H * D, KC = KVH * D, group = H / KVH;
  std::mt19937 rng(99);
  struct Pair {
    long long r, h;
  };
  std::vector<Pair> pairs;
  std::uniform_int_distribution<long long> pickR(0, nb * nt - 1),
      pickH(0, H - 1);
  for (long long t0 = 0; t0 < nt && (long long)pairs.size() < samples / 2;
       t0 += bq) {
    pairs.push_back({t0, pickH(rng)});
    pairs.push_back({std::min(t0 + bq, nt) - 1, pickH(rng)});
  }
  while ((long long)pairs.size() < samples)
    pairs.push_back({pickR(rng), pickH(rng)});
  struct Partial {
    double errSq = 0, refSq = 0;
  };
  auto checkPair = [&](const Pair &w, Partial &p) {
    const long long b = w.r / nt, t = w.r % nt, g = w.h / group;
    const long long end = causal ? pos0 + t + 1 : pos0 + nt;
    const float *q = &Q[size_t(w.r) * C + w.h * D],
                *dout = &DO[size_t(w.r) * C + w.h * D],
                *out = &O[size_t(w.r) * C + w.h * D];
    double dd = 0;
    for (long long d = 0; d < D; ++d)
      dd += double(dout[d]) * out[d];
    std::vector<double> dq(D, 0.0);
    for (long long j = 0; j < end; ++j) {
      const float *k = &K[(size_t(b) * S + j) * KC + g * D];
      const float *v = &V[(size_t(b) * S + j) * KC + g * D];
      double s = 0, dp = 0;
      for (long long d = 0; d < D; ++d) {
        s += double(q[d]) * k[d];
        dp += double(dout[d]) * v[d];
      }
      double ds = std::exp(s * scale - L[size_t(w.r) * H + w.h]) * (dp - dd);
      for (long long d = 0; d < D; ++d)
        dq[d] += scale * ds * k[d];
    }
    for (long long d = 0; d < D; ++d) {
      double v = got[size_t(w.r) * C + w.h * D + d];
      double e = std::isfinite(v) ? v - dq[d] : 1e30;
      p.errSq += e * e;
      p.refSq += dq[d] * dq[d];
    }
  };
  std::vector<Partial> partials = checkInParallel<Partial>(pairs, checkPair);
  double errSq = 0, refSq = 0;
  for (const Partial &p : partials) {
    errSq += p.errSq;
    refSq += p.refSq;
  }
  long long touched = 0;
  for (size_t i = size_t(nb * nt) * C; i < got.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &got[i], 4);
    touched += u != 0xFFFFFFFFu;
  }
  double rel = std::sqrt(errSq / std::max(refSq, 1e-300));
  const double tol = 1e-2; // dS is rounded to bf16 before dS K
  bool ok = rel <= tol && touched == 0;
  std::printf("numerics: %zu (row, head) pairs of dq checked, norm-wise "
              "relative error %.3e (tolerance %.1e), %lld elements written "
              "past the active rows: %s\n",
              pairs.size(), rel, tol, touched, ok ? "PASS" : "FAIL");
  // Three products of 2 * d FLOPs per visible (query, key) pair and head
  // (S, dP, dQ).
  double visible = causal ? double(nt) * nt / 2 + double(pos0) * nt
                          : double(nt) * (pos0 + nt);
  timeKernel(stream, launch, repeats, 6.0 * nb * H * D * visible);
  cuModuleUnload(mod);
  cuDevicePrimaryCtxRelease(dev);
  return ok ? 0 : 1;
}

/// A backward kernel (`// colossus.hopper_attention_bwd` ABI line; dq via
/// finishDq when part=dq, else dK/dV):
/// random bf16 q, k, v, dout, out; lse[r, h] = log(visible keys of row r)
/// (not the forward's statistic of these q, k: it keeps P = exp(s - lse) in
/// the range of a softmax, and the check is of the backward formulas on
/// the given inputs); dk, dv poisoned, then compared with a float64
/// reference on sampled (sequence, key, kv head) rows:
///   dv_j = sum_{h in group} sum_i p_ij dout_i
///   dk_j = scale sum_{h in group} sum_i p_ij (dout_i . v_j - dout_i . out_i)
///   q_i
/// Rows outside the active keys (pos0 <= j < pos0 + nt of the nb
/// sequences) must keep the poison.
int runBackward(const std::string &kernel, const Abi &abi,
                const std::string &ptx, int repeats, long long nbOpt,
                long long ntOpt, long long pos0, long long samples) {
  const long long B = abi.num("b"), S = abi.num("s"), T = abi.num("t");
  const long long H = abi.num("h"), KVH = abi.num("kvh"), D = abi.num("d");
  const long long bn = abi.num("bn"), bq = abi.num("bq");
  const bool causal = abi.num("causal") != 0;
  const bool dqPart = abi.str("part") == "dq";
  const int qArg = abi.num("q_arg"), kArg = abi.num("k_arg"),
            vArg = abi.num("v_arg"), doArg = abi.num("dout_arg"),
            outArg = abi.num("out_arg"), lseArg = abi.num("lse_arg"),
            dkArg = dqPart ? -1 : abi.num("dk_arg"),
            dvArg = dqPart ? -1 : abi.num("dv_arg"),
            dqArg = dqPart ? abi.num("dq_arg") : -1;
  const unsigned smem = abi.num("dynamic_smem");
  unsigned grid[3], block[3];
  if (std::sscanf(abi.str("grid").c_str(), "%u,%u,%u", &grid[0], &grid[1],
                  &grid[2]) != 3 ||
      std::sscanf(abi.str("block").c_str(), "%u,%u,%u", &block[0], &block[1],
                  &block[2]) != 3) {
    std::fprintf(stderr, "ABI line has no grid / block\n");
    return 2;
  }
  const long long nb = nbOpt < 0 ? B : nbOpt, nt = ntOpt < 0 ? S : ntOpt;
  if (nb < 1 || nb > B || nt < 1 || pos0 < 0 || pos0 + nt > S || nb * nt > T) {
    std::fprintf(stderr, "bad extents: nb=%lld nt=%lld pos0=%lld\n", nb, nt,
                 pos0);
    return 2;
  }
  const long long C = H * D, KC = KVH * D, group = H / KVH;
  const double scale = std::atof(abi.str("scale").c_str());
  // sched=v3 (--hopper-attention-bwd=v3): the CTAs decode their
  // longest-first order from the launch grid, which is the line's as for
  // the other schedules (nothing else changes for the launch).
  const std::string sched =
      abi.str("sched") == "none" ? "default" : abi.str("sched");
  std::printf("kernel %s (backward %s, schedule %s): B=%lld S=%lld T=%lld "
              "heads %lld "
              "kv heads %lld d %lld %s, %lld keys x %lld queries, grid "
              "%ux%ux%u block %u smem %u; nb %lld nt %lld pos0 %lld\n",
              kernel.c_str(), dqPart ? "dQ" : "dK/dV", sched.c_str(), B, S, T,
              H, KVH, D, causal ? "causal" : "not causal", bn, bq, grid[0],
              grid[1], grid[2], block[0], smem, nb, nt, pos0);

  CUdevice dev;
  CUmodule mod;
  CUfunction fn;
  if (!loadKernel(ptx, kernel, smem, dev, mod, fn, /*anyMinor=*/true))
    return 2;

  std::mt19937 rng(4321);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto fill = [&](size_t count, std::vector<float> &ref) {
    return fillBf16(rng, dist, count, ref);
  };
  std::vector<float> Q, K, V, DO, O;
  auto hQ = fill(size_t(T) * C, Q);
  auto hK = fill(size_t(B) * S * KC, K);
  auto hV = fill(size_t(B) * S * KC, V);
  auto hDO = fill(size_t(T) * C, DO);
  auto hO = fill(size_t(T) * C, O);
  std::vector<float> L(size_t(T) * H, 0.f);
  for (long long r = 0; r < nb * nt; ++r) {
    long long t = r % nt;
    double keys = causal ? double(pos0 + t + 1) : double(pos0 + nt);
    for (long long h = 0; h < H; ++h)
      L[size_t(r) * H + h] = float(std::log(keys));
  }
  CUdeviceptr dQ = upload(hQ.data(), hQ.size() * 2),
              dK = upload(hK.data(), hK.size() * 2),
              dV = upload(hV.data(), hV.size() * 2),
              dDO = upload(hDO.data(), hDO.size() * 2),
              dO = upload(hO.data(), hO.size() * 2),
              dL = upload(L.data(), L.size() * 4);
  // Outputs poisoned (0xFF bytes: NaN); dQ: dq [T, C]; else dk, dv.
  const size_t gradBytes = dqPart ? size_t(T) * C * 4 : size_t(B) * S * KC * 4;
  CUdeviceptr dDK, dDV = 0;
  CHECK_CU(cuMemAlloc(&dDK, gradBytes));
  CHECK_CU(cuMemsetD8(dDK, 0xFF, gradBytes));
  if (!dqPart) {
    CHECK_CU(cuMemAlloc(&dDV, gradBytes));
    CHECK_CU(cuMemsetD8(dDV, 0xFF, gradBytes));
  }
  CUtensorMap maps[4] = {
      encode(dQ, {cuuint64_t(C), cuuint64_t(T)}, {64, cuuint32_t(bq)}),
      encode(dK, {cuuint64_t(KC), cuuint64_t(S), cuuint64_t(B)},
             {64, cuuint32_t(bn), 1}),
      encode(dV, {cuuint64_t(KC), cuuint64_t(S), cuuint64_t(B)},
             {64, cuuint32_t(bn), 1}),
      encode(dDO, {cuuint64_t(C), cuuint64_t(T)}, {64, cuuint32_t(bq)})};
  CUdeviceptr dMaps[4];
  for (int i = 0; i < 4; ++i)
    dMaps[i] = uploadMap(maps[i]);
  const int lastBuffer = dqPart ? dqArg : std::max(dkArg, dvArg);
  std::vector<void *> params(lastBuffer + 4, nullptr);
  int64_t rowArgs[3] = {nb, nt, pos0};
  params[qArg] = &dMaps[0];
  params[kArg] = &dMaps[1];
  params[vArg] = &dMaps[2];
  params[doArg] = &dMaps[3];
  params[outArg] = &dO;
  params[lseArg] = &dL;
  if (dqPart) {
    params[dqArg] = &dDK;
  } else {
    params[dkArg] = &dDK;
    params[dvArg] = &dDV;
  }
  if (!setRowArgs(params, lastBuffer, rowArgs))
    return 2;
  Launcher launch(fn, grid, block, smem, params);
  CUstream stream = launch.stream;
  launch.once();
  std::vector<float> gK(gradBytes / 4), gV(dqPart ? 0 : gK.size());
  CHECK_CU(cuMemcpyDtoH(gK.data(), dDK, gradBytes));
  if (!dqPart)
    CHECK_CU(cuMemcpyDtoH(gV.data(), dDV, gradBytes));
  if (dqPart)
    return finishDq(fn, mod, dev, stream, launch, repeats, kernel, gK, Q, K, V,
                    DO, O, L, nb, nt, pos0, S, H, KVH, D, causal, scale,
                    samples, bq);

  // Sampled (sequence, key, kv head): the first and last key of every key
  // block of sequence 0, then random ones.
  struct Row {
    long long b, j, g;
  };
  std::vector<Row> rows;
  std::uniform_int_distribution<long long> pickB(0, nb - 1),
      pickJ(pos0, pos0 + nt - 1), pickG(0, KVH - 1);
  for (long long j0 = pos0;
       j0 < pos0 + nt && (long long)rows.size() < samples / 2; j0 += bn)
    rows.push_back({0, j0, pickG(rng)}),
        rows.push_back({0, std::min(j0 + bn, pos0 + nt) - 1, pickG(rng)});
  while ((long long)rows.size() < samples)
    rows.push_back({pickB(rng), pickJ(rng), pickG(rng)});
  struct Partial {
    double errSq = 0, refSq = 0;
  };
  auto checkRow = [&](const Row &w, Partial &p) {
    std::vector<double> dk(D, 0.0), dv(D, 0.0);
    const float *k = &K[(size_t(w.b) * S + w.j) * KC + w.g * D];
    const float *v = &V[(size_t(w.b) * S + w.j) * KC + w.g * D];
    long long tLo = causal ? std::max(0LL, w.j - pos0) : 0;
    for (long long h = w.g * group; h < (w.g + 1) * group; ++h)
      for (long long t = tLo; t < nt; ++t) {
        size_t r = size_t(w.b * nt + t);
        const float *q = &Q[r * C + h * D], *dout = &DO[r * C + h * D],
                    *out = &O[r * C + h * D];
        double s = 0, dp = 0, dd = 0;
        for (long long d = 0; d < D; ++d) {
          s += double(q[d]) * k[d];
          dp += double(dout[d]) * v[d];
          dd += double(dout[d]) * out[d];
        }
        double pr = std::exp(s * scale - L[r * H + h]);
        double ds = pr * (dp - dd);
        for (long long d = 0; d < D; ++d) {
          dv[d] += pr * dout[d];
          dk[d] += scale * ds * q[d];
        }
      }
    for (long long d = 0; d < D; ++d) {
      size_t at = (size_t(w.b) * S + w.j) * KC + w.g * D + d;
      for (auto [got, want] :
           {std::pair<double, double>{gK[at], dk[d]}, {gV[at], dv[d]}}) {
        double e = std::isfinite(got) ? got - want : 1e30;
        p.errSq += e * e;
        p.refSq += want * want;
      }
    }
  };
  std::vector<Partial> partials = checkInParallel<Partial>(rows, checkRow);
  double errSq = 0, refSq = 0;
  for (const Partial &p : partials) {
    errSq += p.errSq;
    refSq += p.refSq;
  }
  // Rows outside the active keys keep the poison (0xFFFFFFFF).
  long long touched = 0;
  for (long long b = 0; b < B; ++b)
    for (long long j = 0; j < S; ++j) {
      if (b < nb && j >= pos0 && j < pos0 + nt)
        continue;
      for (long long c = 0; c < KC; ++c) {
        size_t at = (size_t(b) * S + j) * KC + c;
        uint32_t u, w;
        std::memcpy(&u, &gK[at], 4);
        std::memcpy(&w, &gV[at], 4);
        touched += (u != 0xFFFFFFFFu) + (w != 0xFFFFFFFFu);
      }
    }
  double rel = std::sqrt(errSq / std::max(refSq, 1e-300));
  // P and dS are rounded to bf16 before the dV / dK products.
  const double tol = 1e-2;
  bool ok = rel <= tol && touched == 0;
  std::printf("numerics: %zu (sequence, key, kv head) rows of dk and dv "
              "checked, norm-wise relative error %.3e (tolerance %.1e), "
              "%lld elements written outside the active keys: %s\n",
              rows.size(), rel, tol, touched, ok ? "PASS" : "FAIL");

  // Four products of 2 * d FLOPs per visible (query, key) pair and head
  // (S, dP, dV, dK; dQ would be the fifth).
  double pairs = causal ? double(nt) * nt / 2 + double(pos0) * nt
                        : double(nt) * (pos0 + nt);
  double flops = 8.0 * nb * H * D * pairs;
  timeKernel(stream, launch, repeats, flops);
  cuModuleUnload(mod);
  cuDevicePrimaryCtxRelease(dev);
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  std::string path, kernel;
  int repeats = 20;
  long long nbOpt = -1, ntOpt = -1, pos0Opt = 0, samples = 1024;
  bool samplesSet = false;
  auto option = [&](const std::string &a, int &i) {
    if (i + 1 >= argc)
      return false;
    if (a == "--nb")
      nbOpt = std::atoll(argv[++i]);
    else if (a == "--nt")
      ntOpt = std::atoll(argv[++i]);
    else if (a == "--pos0")
      pos0Opt = std::atoll(argv[++i]);
    else if (a == "--samples") {
      samples = std::max(1LL, std::atoll(argv[++i]));
      samplesSet = true;
    } else
      return false;
    return true;
  };
  int rc = parseArgs(argc, argv,
                     "KERNELS.ptx [--kernel NAME] [--repeats N] [--nb NB] "
                     "[--nt NT] [--pos0 P] [--samples N]",
                     path, kernel, repeats, option);
  if (rc >= 0)
    return rc;
  std::string text;
  Abi abi;
  std::string ptx;
  bool backward = false;
  if (!readFile(path, text) || !findKernel(text, kernel, abi, ptx, backward)) {
    std::fprintf(stderr, "%s: no Hopper attention kernel%s%s\n", path.c_str(),
                 kernel.empty() ? "" : " named ", kernel.c_str());
    return 2;
  }
  if (backward)
    return runBackward(kernel, abi, ptx, repeats, nbOpt, ntOpt, pos0Opt,
                       samplesSet ? samples : 256);
  const long long B = abi.num("b"), S = abi.num("s"), T = abi.num("t");
  const long long H = abi.num("h"), KVH = abi.num("kvh"), D = abi.num("d");
  const long long bm = abi.num("bm"), bn = abi.num("bn");
  const bool causal = abi.num("causal") != 0;
  const int qArg = abi.num("q_arg"), kArg = abi.num("k_arg"),
            vArg = abi.num("v_arg"), outArg = abi.num("out_arg"),
            lseArg = abi.num("lse_arg");
  const bool outF32 = abi.str("out") == "f32";
  const unsigned smem = abi.num("dynamic_smem");
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  if (std::sscanf(abi.str("grid").c_str(), "%u,%u,%u", &grid[0], &grid[1],
                  &grid[2]) != 3 ||
      std::sscanf(abi.str("block").c_str(), "%u,%u,%u", &block[0], &block[1],
                  &block[2]) != 3) {
    std::fprintf(stderr, "ABI line has no grid / block\n");
    return 2;
  }
  const long long nb = nbOpt < 0 ? B : nbOpt, nt = ntOpt < 0 ? S : ntOpt,
                  pos0 = pos0Opt;
  if (nb < 1 || nb > B || nt < 1 || pos0 < 0 || pos0 + nt > S ||
      nb * nt > T) {
    std::fprintf(stderr,
                 "bad extents: nb=%lld (1..%lld), nt=%lld, pos0=%lld "
                 "(pos0 + nt <= %lld, nb * nt <= %lld)\n",
                 nb, B, nt, pos0, S, T);
    return 2;
  }
  const long long C = H * D, KC = KVH * D, group = H / KVH;
  const double scale = std::atof(abi.str("scale").c_str());
  if (!(scale > 0)) {
    std::fprintf(stderr, "ABI line has no positive scale\n");
    return 2;
  }
  std::printf("kernel %s: B=%lld S=%lld T=%lld heads %lld kv heads %lld d %lld "
              "%s, tile %lldx%lld stages %lld, grid %ux%ux%u block %u smem %u; "
              "nb %lld nt %lld pos0 %lld\n",
              kernel.c_str(), B, S, T, H, KVH, D,
              causal ? "causal" : "not causal", bm, bn, abi.num("stages"),
              grid[0], grid[1], grid[2], block[0], smem, nb, nt, pos0);

  CUdevice dev;
  CUmodule mod;
  CUfunction fn;
  if (!loadKernel(ptx, kernel, smem, dev, mod, fn))
    return 2;

  // Inputs: uniform in [-1, 1), rounded to bf16 (the reference uses the
  // rounded values). The whole cache is filled: keys a row may not see
  // (causal, past pos0 + nt) hold values that would change its output.
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto fill = [&](size_t count, std::vector<float> &ref) {
    return fillBf16(rng, dist, count, ref);
  };
  std::vector<float> Q, K, V;
  auto hQ = fill(size_t(T) * C, Q);
  auto hK = fill(size_t(B) * S * KC, K);
  auto hV = fill(size_t(B) * S * KC, V);
  CUdeviceptr dQ = upload(hQ.data(), hQ.size() * 2),
              dK = upload(hK.data(), hK.size() * 2),
              dV = upload(hV.data(), hV.size() * 2);
  const size_t outBytes = size_t(T) * C * (outF32 ? 4 : 2);
  const size_t lseBytes = size_t(T) * H * 4;
  CUdeviceptr dOut, dLse = 0;
  CHECK_CU(cuMemAlloc(&dOut, outBytes));
  // Poisoned: 0xFF bytes are NaN in bf16 and f32; rows past nb * nt must
  // keep them.
  CHECK_CU(cuMemsetD8(dOut, 0xFF, outBytes));
  if (lseArg >= 0) {
    CHECK_CU(cuMemAlloc(&dLse, lseBytes));
    CHECK_CU(cuMemsetD8(dLse, 0xFF, lseBytes));
  }

  // The tensor maps live in device memory (64-byte aligned: cuMemAlloc).
  CUtensorMap maps[3] = {
      encode(dQ, {cuuint64_t(C), cuuint64_t(T)}, {64, cuuint32_t(bm)}),
      encode(dK, {cuuint64_t(KC), cuuint64_t(S), cuuint64_t(B)},
             {64, cuuint32_t(bn), 1}),
      encode(dV, {cuuint64_t(KC), cuuint64_t(S), cuuint64_t(B)},
             {64, cuuint32_t(bn), 1})};
  CUdeviceptr dMaps[3];
  for (int i = 0; i < 3; ++i)
    dMaps[i] = uploadMap(maps[i]);

  // Parameters: q, k, v (tensor-map pointers), out, lse, nb, nt, pos0.
  const int lastBuffer = std::max(outArg, lseArg);
  std::vector<void *> params(lastBuffer + 4, nullptr);
  int64_t rowArgs[3] = {nb, nt, pos0};
  params[qArg] = &dMaps[0];
  params[kArg] = &dMaps[1];
  params[vArg] = &dMaps[2];
  params[outArg] = &dOut;
  if (lseArg >= 0)
    params[lseArg] = &dLse;
  if (!setRowArgs(params, lastBuffer, rowArgs))
    return 2;

  Launcher launch(fn, grid, block, smem, params);
  CUstream stream = launch.stream;
  launch.once();
  std::vector<uint8_t> hOut(outBytes);
  CHECK_CU(cuMemcpyDtoH(hOut.data(), dOut, outBytes));
  std::vector<float> hLse(lseArg >= 0 ? size_t(T) * H : 0);
  if (lseArg >= 0)
    CHECK_CU(cuMemcpyDtoH(hLse.data(), dLse, lseBytes));
  auto outAt = [&](size_t i) -> double {
    if (outF32) {
      float v;
      std::memcpy(&v, &hOut[4 * i], 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, &hOut[2 * i], 2);
    return fromBf16(h);
  };

  // Reference in float64 for sampled (row, head) pairs: every pair when
  // there are at most `samples`, else the first and last row of each query
  // tile of sequence 0 (a random head each) and random others.
  struct Pair {
    long long r, h;
  };
  std::vector<Pair> pairs;
  const long long active = nb * nt;
  if (active * H <= samples) {
    for (long long r = 0; r < active; ++r)
      for (long long h = 0; h < H; ++h)
        pairs.push_back({r, h});
  } else {
    std::uniform_int_distribution<long long> pickR(0, active - 1),
        pickH(0, H - 1);
    for (long long t0 = 0; t0 < nt && (long long)pairs.size() < samples / 2;
         t0 += bm) {
      pairs.push_back({t0, pickH(rng)});
      pairs.push_back({std::min(t0 + bm, nt) - 1, pickH(rng)});
    }
    while ((long long)pairs.size() < samples)
      pairs.push_back({pickR(rng), pickH(rng)});
  }
  struct Partial {
    double errSq = 0, refSq = 0, maxAbs = 0, lseMax = 0;
  };
  auto checkPair = [&](const Pair &pr, Partial &p) {
    const long long b = pr.r / nt, t = pr.r % nt, pos = pos0 + t;
    const long long kvh = pr.h / group;
    const long long end = causal ? pos + 1 : pos0 + nt;
    std::vector<double> s(end);
    double m = -INFINITY;
    const float *q = &Q[size_t(pr.r) * C + pr.h * D];
    for (long long j = 0; j < end; ++j) {
      const float *k = &K[(size_t(b) * S + j) * KC + kvh * D];
      double acc = 0;
      for (long long d = 0; d < D; ++d)
        acc += double(q[d]) * k[d];
      s[j] = acc * scale;
      m = std::max(m, s[j]);
    }
    double l = 0;
    for (long long j = 0; j < end; ++j)
      l += (s[j] = std::exp(s[j] - m));
    for (long long d = 0; d < D; ++d) {
      double acc = 0;
      for (long long j = 0; j < end; ++j)
        acc += s[j] * V[(size_t(b) * S + j) * KC + kvh * D + d];
      acc /= l;
      double got = outAt(size_t(pr.r) * C + pr.h * D + d);
      double e = std::isfinite(got) ? got - acc : 1e30;
      p.errSq += e * e;
      p.refSq += acc * acc;
      p.maxAbs = std::max(p.maxAbs, std::fabs(e));
    }
    if (lseArg >= 0) {
      double want = m + std::log(l);
      double got = hLse[size_t(pr.r) * H + pr.h];
      p.lseMax = std::max(p.lseMax, std::isfinite(got) ? std::fabs(got - want)
                                                       : 1e30);
    }
  };
  std::vector<Partial> partials = checkInParallel<Partial>(pairs, checkPair);
  double errSq = 0, refSq = 0, maxAbs = 0, lseMax = 0;
  for (const Partial &p : partials) {
    errSq += p.errSq;
    refSq += p.refSq;
    maxAbs = std::max(maxAbs, p.maxAbs);
    lseMax = std::max(lseMax, p.lseMax);
  }
  // Rows past the active ones keep the poison (all bytes 0xFF).
  long long touched = 0;
  for (size_t i = size_t(active) * C * (outF32 ? 4 : 2); i < outBytes; ++i)
    touched += hOut[i] != 0xFF;
  double rel = std::sqrt(errSq / std::max(refSq, 1e-300));
  // bf16: P is rounded to bf16 before P V (as in FlashAttention) and the
  // output once: about 2^-9 relative each; f32 output: P's rounding only.
  double tol = outF32 ? 8e-3 : 1e-2;
  double lseTol = 1e-3; // f32 row statistics, ex2.approx
  bool ok = rel <= tol && touched == 0 && (lseArg < 0 || lseMax <= lseTol);
  std::printf("numerics: %zu (row, head) pairs checked, norm-wise relative "
              "error %.3e (tolerance %.1e), max abs error %.3e, lse max abs "
              "error %s, %lld bytes written past the active rows: %s\n",
              pairs.size(), rel, tol, maxAbs,
              lseArg >= 0 ? std::to_string(lseMax).c_str() : "n/a", touched,
              ok ? "PASS" : "FAIL");

  // Timing: median of `repeats` launches after 3 warm-up launches. FLOPs
  // as torch_bench.py counts SDPA's: 4 * nb * H * d * (visible keys summed
  // over the rows); causal with pos0 = 0 and nt = S: 4 * B * H * S^2 * d / 2.
  double keys = causal ? double(nt) * nt / 2 + double(pos0) * nt
                       : double(nt) * (pos0 + nt);
  double flops = 4.0 * nb * H * D * keys;
  timeKernel(stream, launch, repeats, flops);

  cuModuleUnload(mod);
  cuDevicePrimaryCtxRelease(dev);
  return ok ? 0 : 1;
}
