//===- FakeCuda.cpp - A fake libcuda for the runtime tests ----------------===//
//
// A shared library exporting the CUDA driver entry points the cuda device
// resolves (runtime/src/CudaDevice.cpp), implemented on the host, so that
// the cuda device can be tested without a GPU: COLOSSUS_LIBCUDA=<this .so>.
//
// - "Device memory" is host memory (cuMemAlloc = zeroed aligned_alloc, 256-byte
//   aligned like the driver's); a CUdeviceptr is a
//   host address. Pointers are logged as `aN+OFF` (the N-th allocation).
// - A module image is text: "fake-cubin NAME=NARGS NAME=NARGS ..." declares
//   its kernels and their number of pointer parameters ("fake-ptx ..." the
//   same for cuModuleLoadDataEx); an image starting with "bad" fails to
//   load (CUDA_ERROR_INVALID_IMAGE, or CUDA_ERROR_INVALID_PTX with a JIT
//   log).
// - A launch reads NARGS pointers then nb, nt, pos0 (int64) from the
//   parameter array. A kernel registered with fakecuda_register_kernel runs
//   on the host (the cpu calling convention, once per launch); others are
//   no-ops. Each kernel run advances a fake clock by 0.25 ms, which the
//   events read.
// - Stream capture records launches into a graph instead of running them;
//   cuGraphLaunch runs the recorded launches. Copies during a capture fail
//   as the driver's do (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED).
// - cuTensorMapEncodeTiled logs its arguments and writes the main ones into
//   the 128-byte map (FakeTensorMap: magic "fakemap", the global address,
//   data type, rank, global dims and box dims), so a test can read back what
//   a kernel's tensor-map parameter points at. It fails as the driver does
//   for a map not 64-byte aligned, an address not 16-byte aligned, a rank
//   outside [1, 5] or a box dimension outside [1, 256].
//
// Every call is appended to a log the tests read (fakecuda_log). The
// fakecuda_* functions control it. Not thread-safe; one device at a time.
//
//===----------------------------------------------------------------------===//

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

using CUresult = int;
using HostKernel = void (*)(void **, int64_t, int64_t, int64_t);

constexpr CUresult OK = 0;
constexpr CUresult INVALID_VALUE = 1;
constexpr CUresult INVALID_IMAGE = 200;
constexpr CUresult INVALID_PTX = 218;
constexpr CUresult NOT_FOUND = 500;
constexpr CUresult CAPTURE_UNSUPPORTED = 900;

struct Function {
  std::string name;
  unsigned numArgs = 0;
};
struct Module {
  std::vector<Function *> functions;
};
struct Recorded {
  Function *fn;
  std::vector<uint64_t> params; // numArgs pointers, then nb, nt, pos0
  unsigned grid[3], block[3], smem;
};
struct Graph {
  std::vector<Recorded> launches;
};
struct Event {
  double ms = -1;
};

struct State {
  std::ostringstream log;
  std::string logText;
  std::map<std::string, CUresult> failures;
  std::map<std::string, HostKernel> hostKernels;
  std::map<int, int> attributes;
  int driverVersion = 13000;
  std::vector<std::pair<uint64_t, size_t>> allocations; // base, bytes
  bool capturing = false;
  Graph *capture = nullptr;
  double clockMs = 0;
  int graphsInstantiated = 0;
  int liveGraphExecs = 0;
  int liveModules = 0;
  int liveAllocations = 0;
};

State &state() {
  static State s;
  return s;
}

CUresult failure(const char *call) {
  auto it = state().failures.find(call);
  return it == state().failures.end() ? OK : it->second;
}

std::string ptrName(uint64_t p) {
  if (!p)
    return "null";
  const auto &allocs = state().allocations;
  for (size_t i = 0; i < allocs.size(); ++i)
    if (p >= allocs[i].first && p < allocs[i].first + allocs[i].second)
      return "a" + std::to_string(i) + "+" +
             std::to_string(p - allocs[i].first);
  std::ostringstream os;
  os << "0x" << std::hex << p;
  return os.str();
}

void run(const Recorded &r) {
  State &s = state();
  const unsigned n = r.fn->numArgs;
  int64_t nb = static_cast<int64_t>(r.params[n]);
  int64_t nt = static_cast<int64_t>(r.params[n + 1]);
  int64_t pos0 = static_cast<int64_t>(r.params[n + 2]);
  s.log << "run " << r.fn->name << " " << nb << "," << nt << "," << pos0
        << "\n";
  auto it = s.hostKernels.find(r.fn->name);
  if (it != s.hostKernels.end()) {
    std::vector<void *> args(n);
    for (unsigned i = 0; i < n; ++i)
      args[i] = reinterpret_cast<void *>(static_cast<uintptr_t>(r.params[i]));
    it->second(args.data(), nb, nt, pos0);
  }
  s.clockMs += 0.25;
}

// "fake-cubin a=2 b=3" -> functions.
Module *parseModule(const char *text) {
  std::istringstream in(text);
  std::string magic, item;
  in >> magic;
  auto *m = new Module();
  while (in >> item) {
    auto eq = item.find('=');
    auto *f = new Function();
    f->name = item.substr(0, eq);
    f->numArgs = eq == std::string::npos
                     ? 0
                     : static_cast<unsigned>(std::atoi(item.c_str() + eq + 1));
    m->functions.push_back(f);
  }
  return m;
}

std::string firstWord(const char *text) {
  std::string s(text, strnlen(text, 64));
  return s.substr(0, s.find(' '));
}

} // namespace

// Types as opaque pointers; the ABI is the driver's (pointers and ints).
extern "C" {

// ---- control ----
void fakecuda_reset() {
  State &s = state();
  s.log.str("");
  s.failures.clear();
  s.hostKernels.clear();
  s.attributes.clear();
  s.driverVersion = 13000;
  s.clockMs = 0;
  s.graphsInstantiated = 0;
  s.allocations.clear();
  s.liveGraphExecs = s.liveModules = s.liveAllocations = 0;
}
const char *fakecuda_log() {
  state().logText = state().log.str();
  return state().logText.c_str();
}
void fakecuda_clear_log() { state().log.str(""); }
void fakecuda_fail(const char *call, int code) {
  state().failures[call] = code;
}
void fakecuda_set_attribute(int attr, int value) {
  state().attributes[attr] = value;
}
void fakecuda_set_driver_version(int v) { state().driverVersion = v; }
void fakecuda_register_kernel(const char *name, HostKernel fn) {
  state().hostKernels[name] = fn;
}
int fakecuda_live_objects() {
  return state().liveGraphExecs + state().liveModules + state().liveAllocations;
}

// ---- driver API ----
struct FakeTensorMap { // 128 bytes, what cuTensorMapEncodeTiled writes
  char magic[8];       // "fakemap"
  uint64_t address;
  uint32_t dataType, rank;
  uint32_t globalDim[5]; // truncated to 32 bits (test shapes are small)
  uint32_t boxDim[5];
  uint32_t swizzle, pad;
  uint8_t rest[128 - 72];
};
static_assert(sizeof(FakeTensorMap) == 128, "a CUtensorMap is 128 bytes");

CUresult cuTensorMapEncodeTiled(void *map, int dataType, unsigned rank,
                                void *address, const uint64_t *globalDim,
                                const uint64_t *globalStrides,
                                const unsigned *boxDim,
                                const unsigned *elementStrides, int interleave,
                                int swizzle, int l2Promotion, int oobFill) {
  State &s = state();
  uint64_t addr = reinterpret_cast<uintptr_t>(address);
  s.log << "cuTensorMapEncodeTiled type=" << dataType << " rank=" << rank
        << " addr=" << ptrName(addr) << " dims=";
  for (unsigned i = 0; i < rank && i < 5; ++i)
    s.log << (i ? "," : "") << globalDim[i];
  s.log << " strides=";
  for (unsigned i = 0; i + 1 < rank && i < 4; ++i)
    s.log << (i ? "," : "") << globalStrides[i];
  s.log << " box=";
  for (unsigned i = 0; i < rank && i < 5; ++i)
    s.log << (i ? "," : "") << boxDim[i];
  s.log << " elementStrides=";
  for (unsigned i = 0; i < rank && i < 5; ++i)
    s.log << (i ? "," : "") << elementStrides[i];
  s.log << " interleave=" << interleave << " swizzle=" << swizzle
        << " l2=" << l2Promotion << " oob=" << oobFill << "\n";
  if (CUresult r = failure("cuTensorMapEncodeTiled"))
    return r;
  if (reinterpret_cast<uintptr_t>(map) % 64 != 0 || addr % 16 != 0 ||
      rank < 1 || rank > 5)
    return INVALID_VALUE;
  FakeTensorMap t{};
  std::memcpy(t.magic, "fakemap", 8);
  t.address = addr;
  t.dataType = static_cast<uint32_t>(dataType);
  t.rank = rank;
  for (unsigned i = 0; i < rank; ++i) {
    if (boxDim[i] < 1 || boxDim[i] > 256)
      return INVALID_VALUE;
    t.globalDim[i] = static_cast<uint32_t>(globalDim[i]);
    t.boxDim[i] = boxDim[i];
  }
  t.swizzle = static_cast<uint32_t>(swizzle);
  std::memcpy(map, &t, sizeof(t));
  return OK;
}

CUresult cuInit(unsigned) { return failure("cuInit"); }
CUresult cuDriverGetVersion(int *v) {
  *v = state().driverVersion;
  return OK;
}
CUresult cuDeviceGetCount(int *n) {
  *n = 1;
  return failure("cuDeviceGetCount");
}
CUresult cuDeviceGet(int *d, int ordinal) {
  *d = ordinal;
  return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int) {
  auto &attrs = state().attributes;
  if (attrs.count(attr))
    *v = attrs[attr];
  else if (attr == 75) // compute capability major
    *v = 9;
  else if (attr == 76) // minor
    *v = 0;
  else if (attr == 97) // max shared memory per block (opt-in)
    *v = 232448;
  else
    *v = 0;
  return OK;
}
CUresult cuDeviceGetName(char *name, int len, int) {
  std::strncpy(name, "Fake H100", static_cast<size_t>(len));
  return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int) {
  static int context;
  *ctx = &context;
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxSetCurrent(void *) { return OK; }

CUresult cuModuleLoadData(void **module, const void *image) {
  const char *text = static_cast<const char *>(image);
  state().log << "cuModuleLoadData " << firstWord(text) << "\n";
  if (CUresult r = failure("cuModuleLoadData"))
    return r;
  if (std::strncmp(text, "bad", 3) == 0)
    return INVALID_IMAGE;
  *module = parseModule(text);
  ++state().liveModules;
  return OK;
}
CUresult cuModuleLoadDataEx(void **module, const void *image, unsigned n,
                            int *options, void **values) {
  const char *text = static_cast<const char *>(image);
  state().log << "cuModuleLoadDataEx " << firstWord(text) << "\n";
  if (std::strncmp(text, "bad", 3) == 0) {
    for (unsigned i = 0; i < n; ++i)
      if (options[i] == 5) // CU_JIT_ERROR_LOG_BUFFER
        std::strcpy(static_cast<char *>(values[i]),
                    "ptxas fatal: fake JIT error");
    return INVALID_PTX;
  }
  *module = parseModule(text);
  ++state().liveModules;
  return OK;
}
CUresult cuModuleUnload(void *module) {
  auto *m = static_cast<Module *>(module);
  for (Function *f : m->functions)
    delete f;
  delete m;
  --state().liveModules;
  return OK;
}
CUresult cuModuleGetFunction(void **fn, void *module, const char *name) {
  for (Function *f : static_cast<Module *>(module)->functions)
    if (f->name == name) {
      *fn = f;
      return OK;
    }
  return NOT_FOUND;
}
CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  state().log << "cuFuncSetAttribute " << static_cast<Function *>(fn)->name
              << " " << attr << " " << value << "\n";
  return OK;
}

CUresult cuMemAlloc_v2(uint64_t *p, size_t bytes) {
  if (CUresult r = failure("cuMemAlloc"))
    return r;
  // 256-byte aligned, as the driver's allocations are.
  size_t rounded = (bytes + 255) / 256 * 256;
  void *m = std::aligned_alloc(256, rounded ? rounded : 256);
  std::memset(m, 0, rounded ? rounded : 256);
  *p = reinterpret_cast<uintptr_t>(m);
  state().allocations.push_back({*p, bytes});
  ++state().liveAllocations;
  return OK;
}
CUresult cuMemFree_v2(uint64_t p) {
  std::free(reinterpret_cast<void *>(static_cast<uintptr_t>(p)));
  for (auto &a : state().allocations)
    if (a.first == p)
      a.second = 0; // keep the index stable for the log
  --state().liveAllocations;
  return OK;
}
CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t n, void *) {
  if (state().capturing)
    return CAPTURE_UNSUPPORTED;
  state().log << "HtoD " << ptrName(dst) << " " << n << "\n";
  std::memcpy(reinterpret_cast<void *>(static_cast<uintptr_t>(dst)), src, n);
  return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t n, void *) {
  if (state().capturing)
    return CAPTURE_UNSUPPORTED;
  std::memcpy(dst, reinterpret_cast<void *>(static_cast<uintptr_t>(src)), n);
  return OK;
}
CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void *) {
  if (state().capturing)
    return CAPTURE_UNSUPPORTED;
  std::memset(reinterpret_cast<void *>(static_cast<uintptr_t>(dst)), v, n);
  return OK;
}

CUresult cuStreamCreate(void **stream, unsigned) {
  static int theStream;
  *stream = &theStream;
  state().log << "cuStreamCreate\n";
  return OK;
}
CUresult cuStreamDestroy_v2(void *) { return OK; }
CUresult cuStreamSynchronize(void *) {
  if (state().capturing)
    return CAPTURE_UNSUPPORTED;
  return OK;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned bx, unsigned by, unsigned bz, unsigned smem,
                        void *, void **params, void **extra) {
  State &s = state();
  auto *fn = static_cast<Function *>(f);
  if (extra)
    return INVALID_VALUE;
  Recorded r{fn, {}, {gx, gy, gz}, {bx, by, bz}, smem};
  s.log << "launch " << fn->name << (s.capturing ? " [captured]" : "")
        << " grid=" << gx << "," << gy << "," << gz << " block=" << bx << ","
        << by << "," << bz << " smem=" << smem << " args=";
  for (unsigned i = 0; i < fn->numArgs + 3; ++i) {
    uint64_t v = *static_cast<const uint64_t *>(params[i]);
    r.params.push_back(v);
    if (i < fn->numArgs)
      s.log << (i ? "," : "") << ptrName(v);
  }
  s.log << " region=" << static_cast<int64_t>(r.params[fn->numArgs]) << ","
        << static_cast<int64_t>(r.params[fn->numArgs + 1]) << ","
        << static_cast<int64_t>(r.params[fn->numArgs + 2]) << "\n";
  if (CUresult e = failure("cuLaunchKernel"))
    return e;
  if (s.capturing)
    s.capture->launches.push_back(std::move(r));
  else
    run(r);
  return OK;
}

CUresult cuEventCreate(void **event, unsigned) {
  *event = new Event();
  return OK;
}
CUresult cuEventDestroy_v2(void *event) {
  delete static_cast<Event *>(event);
  return OK;
}
CUresult cuEventRecord(void *event, void *) {
  if (state().capturing)
    return CAPTURE_UNSUPPORTED; // the runtime records outside captures
  state().log << "cuEventRecord\n";
  static_cast<Event *>(event)->ms = state().clockMs;
  return OK;
}
CUresult cuEventSynchronize(void *) { return OK; }
CUresult cuEventElapsedTime_v2(float *ms, void *start, void *end) {
  auto *a = static_cast<Event *>(start);
  auto *b = static_cast<Event *>(end);
  if (a->ms < 0 || b->ms < 0)
    return 400; // CUDA_ERROR_INVALID_HANDLE: not recorded
  *ms = static_cast<float>(b->ms - a->ms);
  return OK;
}

CUresult cuStreamBeginCapture_v2(void *, int mode) {
  State &s = state();
  if (s.capturing)
    return INVALID_VALUE;
  s.log << "cuStreamBeginCapture mode=" << mode << "\n";
  s.capturing = true;
  s.capture = new Graph();
  return OK;
}
CUresult cuStreamEndCapture(void *, void **graph) {
  State &s = state();
  if (!s.capturing)
    return INVALID_VALUE;
  s.log << "cuStreamEndCapture " << s.capture->launches.size() << " launches\n";
  s.capturing = false;
  *graph = s.capture;
  s.capture = nullptr;
  return OK;
}
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph,
                                     unsigned long long) {
  State &s = state();
  if (CUresult r = failure("cuGraphInstantiate"))
    return r;
  s.log << "cuGraphInstantiate\n";
  *exec = new Graph(*static_cast<Graph *>(graph));
  ++s.graphsInstantiated;
  ++s.liveGraphExecs;
  return OK;
}
CUresult cuGraphDestroy(void *graph) {
  delete static_cast<Graph *>(graph);
  return OK;
}
CUresult cuGraphExecDestroy(void *exec) {
  state().log << "cuGraphExecDestroy\n";
  delete static_cast<Graph *>(exec);
  --state().liveGraphExecs;
  return OK;
}
CUresult cuGraphLaunch(void *exec, void *) {
  auto *g = static_cast<Graph *>(exec);
  state().log << "cuGraphLaunch " << g->launches.size() << " launches\n";
  for (const Recorded &r : g->launches)
    run(r);
  return OK;
}

CUresult cuGetErrorName(CUresult r, const char **name) {
  switch (r) {
  case INVALID_VALUE:
    *name = "CUDA_ERROR_INVALID_VALUE";
    break;
  case INVALID_IMAGE:
    *name = "CUDA_ERROR_INVALID_IMAGE";
    break;
  case INVALID_PTX:
    *name = "CUDA_ERROR_INVALID_PTX";
    break;
  case NOT_FOUND:
    *name = "CUDA_ERROR_NOT_FOUND";
    break;
  case CAPTURE_UNSUPPORTED:
    *name = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
    break;
  default:
    *name = "CUDA_ERROR_UNKNOWN";
  }
  return OK;
}
CUresult cuGetErrorString(CUresult, const char **text) {
  *text = "fake driver error";
  return OK;
}

} // extern "C"
