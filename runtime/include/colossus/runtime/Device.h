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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace colossus {

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

  /// Launches kernel `kernel` with the buffer pointers `args[0..numArgs)`
  /// and the active region (nb, nt, pos0). May be asynchronous; ordered with
  /// the copies.
  virtual Status launch(uint32_t kernel, void *const *args, size_t numArgs,
                        int64_t nb, int64_t nt, int64_t pos0) = 0;
  /// Waits for all launched work.
  virtual Status synchronize() = 0;
};

/// The CPU device: runs Artifact.cpu_object (an x86-64 ELF shared object)
/// loaded from memory (memfd_create, or a temporary file in $TMPDIR).
std::unique_ptr<Device> createCpuDevice();

/// The CUDA device (driver API through dlopen of libcuda.so.1, device 0).
/// Fails with a message containing "no CUDA driver" when libcuda cannot be
/// loaded.
Expected<std::unique_ptr<Device>> createCudaDevice();

/// createCpuDevice or createCudaDevice.
Expected<std::unique_ptr<Device>> createDevice(DeviceKind kind);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_DEVICE_H
