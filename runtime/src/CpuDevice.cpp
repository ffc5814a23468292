//===- CpuDevice.cpp - The cpu device: kernels from a shared object -------===//
//
// Artifact.cpu_object is written to an anonymous memory file
// (memfd_create) and dlopen'ed through /proc/self/fd/N; where that is not
// possible (no memfd, /proc not mounted, memfd exec forbidden), to a
// temporary file in $TMPDIR (or /tmp) that is unlinked once loaded. Every
// Kernel.name is resolved with dlsym once, in loadKernels. A launch is one
// indirect call: `void name(void **args, int64_t nb, int64_t nt, int64_t
// pos0)`.
//
//===----------------------------------------------------------------------===//

#include "colossus/runtime/Device.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

namespace colossus {
namespace {

using CpuKernelFn = void (*)(void **, int64_t, int64_t, int64_t);

Status writeAll(int fd, const uint8_t *data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return makeError("write failed: ", std::strerror(n < 0 ? errno : EIO));
    done += static_cast<size_t>(n);
  }
  return Status::success();
}

std::string dlerrorString() {
  const char *e = ::dlerror();
  return e ? e : "unknown dlopen error";
}

class CpuDevice final : public Device {
public:
  ~CpuDevice() override {
    if (handle_)
      ::dlclose(handle_);
    for (int fd : fds_)
      ::close(fd);
  }

  DeviceKind kind() const override { return DeviceKind::Cpu; }
  std::string description() const override { return "cpu"; }

  Status loadKernels(const Artifact &artifact) override {
    const schema::Artifact &a = artifact.root();
    const std::string &n = artifact.name();
    if (!a.cpu_object() || a.cpu_object()->size() == 0)
      return makeError(n, ": cpu_object is empty; the artifact has no CPU "
                          "kernels");
    std::string memfdError;
    Status s = loadFromMemfd(a.cpu_object()->data(), a.cpu_object()->size());
    if (!s.ok()) {
      memfdError = s.message();
      s = loadFromTempFile(a.cpu_object()->data(), a.cpu_object()->size());
    }
    if (!s.ok())
      return makeError(
          n, ": cannot load cpu_object as a shared object: ", s.message(),
          memfdError.empty() ? "" : strCat(" (memfd: ", memfdError, ")"));
    uint32_t numKernels = artifact.numKernels();
    kernels_.assign(numKernels, nullptr);
    for (uint32_t k = 0; k < numKernels; ++k) {
      const std::string name = a.kernels()->Get(k)->name()->str();
      ::dlerror();
      void *sym = ::dlsym(handle_, name.c_str());
      if (!sym)
        return makeError(n, ": kernels[", k, "]: symbol '", name,
                         "' not found in cpu_object (", dlerrorString(), ")");
      kernels_[k] = reinterpret_cast<CpuKernelFn>(sym);
    }
    return Status::success();
  }

  Expected<void *> alloc(size_t bytes, const std::string &what) override {
    if (bytes == 0)
      return static_cast<void *>(nullptr);
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded < bytes)
      return makeError("cannot allocate ", bytes, " bytes for ", what);
    void *p = std::aligned_alloc(64, rounded);
    if (!p)
      return makeError("cannot allocate ", bytes, " bytes for ", what,
                       ": out of memory");
    return p;
  }
  void free(void *ptr) override { std::free(ptr); }
  void *hostAddress(void *ptr) override { return ptr; }

  Status copyToDevice(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status copyToHost(void *dst, const void *src, size_t bytes) override {
    if (bytes)
      std::memcpy(dst, src, bytes);
    return Status::success();
  }
  Status fillZero(void *dst, size_t bytes) override {
    if (bytes)
      std::memset(dst, 0, bytes);
    return Status::success();
  }

  Status launch(uint32_t kernel, void *const *args, size_t, int64_t nb,
                int64_t nt, int64_t pos0) override {
    if (kernel >= kernels_.size())
      return makeError("cpu: kernel index ", kernel, " out of range");
    kernels_[kernel](const_cast<void **>(args), nb, nt, pos0);
    return Status::success();
  }
  Status synchronize() override { return Status::success(); }

private:
  Status loadFromMemfd(const uint8_t *data, size_t size) {
    int fd = ::memfd_create("colossus-cpu-object", MFD_CLOEXEC);
    if (fd < 0)
      return makeError("memfd_create: ", std::strerror(errno));
    fds_.push_back(fd);
    COLOSSUS_RETURN_IF_ERROR(writeAll(fd, data, size));
    // The dynamic loader recognises an already loaded object by its path
    // name: if an earlier object was loaded through the same
    // /proc/self/fd/N and is still resident, use another descriptor number.
    for (int attempt = 0; attempt < 64; ++attempt) {
      std::string path = strCat("/proc/self/fd/", fd);
      if (void *old = ::dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
        ::dlclose(old);
        int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, fd + 1);
        if (dup < 0)
          return makeError("fcntl(F_DUPFD): ", std::strerror(errno));
        fds_.push_back(dup);
        fd = dup;
        continue;
      }
      handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!handle_)
        return makeError("dlopen(", path, "): ", dlerrorString());
      return Status::success();
    }
    return makeError("no free descriptor name to dlopen the object");
  }

  Status loadFromTempFile(const uint8_t *data, size_t size) {
    const char *tmp = std::getenv("TMPDIR");
    std::string pattern =
        strCat(tmp && *tmp ? tmp : "/tmp", "/colossus-cpu-object-XXXXXX.so");
    std::vector<char> path(pattern.begin(), pattern.end());
    path.push_back('\0');
    int fd = ::mkstemps(path.data(), 3);
    if (fd < 0)
      return makeError("mkstemps(", pattern, "): ", std::strerror(errno));
    Status s = writeAll(fd, data, size);
    ::close(fd);
    if (s.ok()) {
      handle_ = ::dlopen(path.data(), RTLD_NOW | RTLD_LOCAL);
      if (!handle_)
        s = makeError("dlopen(", path.data(), "): ", dlerrorString());
    }
    ::unlink(path.data());
    return s;
  }

  void *handle_ = nullptr;
  std::vector<int> fds_;
  std::vector<CpuKernelFn> kernels_;
};

} // namespace

std::unique_ptr<Device> createCpuDevice() {
  return std::make_unique<CpuDevice>();
}

Expected<std::unique_ptr<Device>> createDevice(DeviceKind kind,
                                               const CudaOptions &options) {
  if (kind == DeviceKind::Cpu)
    return createCpuDevice();
  return createCudaDevice(options);
}

} // namespace colossus
