//===- Device.h - Execution devices (cpu, cuda) ---------------------------===//
//
// A Device owns the kernels of one artifact and the memory of its buffers.
// The lifecycle is: create -> loadKernels(artifact) once (the CPU device
// dlopens the shared object and resolves every Kernel.name; the CUDA device
// loads every module and function) -> alloc the buffers once -> per step,
// copies and launches. Nothing is loaded or allocated per launch.
//
// Device pointers are opaque `void *` values (a host pointer on cpu, a
// CUdeviceptr on cuda); byte arithmetic on them (arena + offset) is valid on
// both.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_DEVICE_H
#define COLOSSUS_RUNTIME_DEVICE_H

#include "colossus/runtime/Artifact.h"
#include "colossus/runtime/Status.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace colossus {

/// One launch of a step, for Device::runStep.
struct StepLaunch {
  uint32_t kernel = 0;
  void *const *args = nullptr;
  size_t numArgs = 0;
};

/// Device time of one kernel, summed over the launches made while
/// profiling (Device::setProfiling).
struct KernelTime {
  uint32_t kernel = 0;   ///< index in Artifact.kernels
  uint64_t launches = 0; ///< launches timed
  double seconds = 0.0;  ///< their summed device time
};

/// Options of the cuda device (ignored by the cpu device).
struct CudaOptions {
  /// Capture the first run of a step with a given (step, nb, nt, pos0) as a
  /// CUDA graph and replay it for later runs with the same arguments.
  bool graphs = true;
  /// Instantiated graphs kept (least recently used evicted), >= 1.
  size_t graphCacheSize = 32;
  /// The run of a (step, nb, nt, pos0) that is captured: 1 = its first run,
  /// 2 (default) = its second, the first launched kernel by kernel. A key
  /// seen once is not worth a capture and an instantiation: every decode
  /// step of generation has its own pos0 and runs once.
  unsigned graphAfterRuns = 2;
};

class Device {
public:
  virtual ~Device() = default;

  virtual DeviceKind kind() const = 0;
  /// Human-readable description ("cpu", "cuda:0 NVIDIA H100 (sm_90)").
  virtual std::string description() const = 0;

  /// Loads every kernel of the artifact; kernels are then named by their
  /// index in Artifact.kernels. Called once; the artifact must outlive the
  /// device.
  virtual Status loadKernels(const Artifact &artifact) = 0;

  /// Allocates `bytes` (64-byte aligned at least). `what` names the buffer in
  /// messages. A 0-byte request returns a null pointer.
  virtual Expected<void *> alloc(size_t bytes, const std::string &what) = 0;
  virtual void free(void *ptr) = 0;
  /// Host address of device memory when the device shares the host's memory
  /// (cpu), nullptr otherwise.
  virtual void *hostAddress(void * /*ptr*/) { return nullptr; }

  virtual Status copyToDevice(void *dst, const void *src, size_t bytes) = 0;
  virtual Status copyToHost(void *dst, const void *src, size_t bytes) = 0;
  virtual Status fillZero(void *dst, size_t bytes) = 0;

  /// Called once after the buffers are allocated, with every launch of a
  /// step (the same argument arrays later given to launch / runStep). The
  /// cuda device encodes here the TMA tensor maps of kernels that take them
  /// (Kernel.tensor_maps: cuTensorMapEncodeTiled, one device copy per map
  /// and bound buffer); launch then passes the map's device pointer in place
  /// of the buffer's. The default does nothing.
  virtual Status prepareLaunches(const StepLaunch *launches, size_t count) {
    (void)launches;
    (void)count;
    return Status::success();
  }
  /// Launches kernel `kernel` with the buffer pointers `args[0..numArgs)`
  /// and the active region (nb, nt, pos0). May be asynchronous; ordered with
  /// the copies.
  virtual Status launch(uint32_t kernel, void *const *args, size_t numArgs,
                        int64_t nb, int64_t nt, int64_t pos0) = 0;
  /// Waits for all launched work.
  virtual Status synchronize() = 0;

  /// Runs the launches of one step in order, all with the region (nb, nt,
  /// pos0). `step` identifies the step (the session passes its StepKind):
  /// the same id must always come with the same launches and arguments.
  /// The default launches each; the cuda device also times the step with
  /// events and captures / replays it as a CUDA graph (CudaOptions).
  /// With profiling on, the default times each launch with the host clock
  /// (launch, then synchronize).
  virtual Status runStep(uint32_t step, const StepLaunch *launches,
                         size_t count, int64_t nb, int64_t nt, int64_t pos0) {
    (void)step;
    for (size_t i = 0; i < count; ++i) {
      auto start = std::chrono::steady_clock::now();
      COLOSSUS_RETURN_IF_ERROR(launch(launches[i].kernel, launches[i].args,
                                      launches[i].numArgs, nb, nt, pos0));
      if (!profiling_)
        continue;
      COLOSSUS_RETURN_IF_ERROR(synchronize());
      addKernelTime(launches[i].kernel,
                    std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count());
    }
    return Status::success();
  }
  /// The device time of the last runStep in seconds (waits for it to
  /// finish); negative when the device does not time steps (cpu) or no
  /// step ran.
  virtual Expected<double> lastStepSeconds() { return -1.0; }

  /// Per-launch timing (`colossus-run --profile`). When on, runStep launches
  /// the kernels one by one (the cuda device replays no CUDA graph), times
  /// each launch (cuda: an event before and after each, read when the step
  /// is done; cpu: the host clock) and adds the time to kernelTimes(). Off
  /// by default: it waits for every step and, on the cpu, for every launch.
  void setProfiling(bool on) { profiling_ = on; }
  bool profiling() const { return profiling_; }
  /// The kernels launched while profiling, by kernel index (launches == 0:
  /// not launched).
  const std::vector<KernelTime> &kernelTimes() const { return kernelTimes_; }

protected:
  void addKernelTime(uint32_t kernel, double seconds) {
    if (kernel >= kernelTimes_.size())
      kernelTimes_.resize(kernel + 1);
    KernelTime &t = kernelTimes_[kernel];
    t.kernel = kernel;
    t.launches += 1;
    t.seconds += seconds;
  }

private:
  bool profiling_ = false;
  std::vector<KernelTime> kernelTimes_;
};

/// The CPU device: runs Artifact.cpu_object (an x86-64 ELF shared object)
/// loaded from memory (memfd_create, or a temporary file in $TMPDIR).
std::unique_ptr<Device> createCpuDevice();

/// The CUDA device (driver API through dlopen of libcuda.so.1, device 0).
/// Fails with a message containing "no CUDA driver" when libcuda cannot be
/// loaded.
Expected<std::unique_ptr<Device>>
createCudaDevice(const CudaOptions &options = {});

/// createCpuDevice or createCudaDevice.
Expected<std::unique_ptr<Device>> createDevice(DeviceKind kind,
                                               const CudaOptions &options = {});

} // namespace colossus

#endif // COLOSSUS_RUNTIME_DEVICE_H
