//===- SafetensorsWriter.h - Writing f32 safetensors files ----------------===//
//
// Writes the files that training produces (checkpoints, --grads-out) in the
// safetensors format, readable by SafetensorsFile / WeightSource, by the
// Python `safetensors` package and by Hugging Face transformers:
//
//   [8 bytes: little-endian u64 N][N bytes: JSON header][data]
//
// - The header is compact JSON with sorted keys (the tensors' names, and
//   "__metadata__" when metadata is given: a map of strings to strings).
//   Each tensor entry is {"data_offsets":[begin,end],"dtype":"F32",
//   "shape":[...]}.
// - The header is padded with spaces so that the data starts at a multiple
//   of 8 bytes from the start of the file.
// - Tensors are laid out contiguously, without gaps, in the order of their
//   sorted names (the order of the header), so offsets increase with the
//   names and the last `end` is the size of the data section.
// - Values are written as little-endian f32 (the host's order on x86-64 and
//   aarch64; the runtime does not support big-endian hosts).
//
// The output depends only on the names, shapes, values and metadata: the
// same inputs give the same bytes, whatever the order of `tensors`.
// Files are written with the protocol of FileIO.h (`<path>.tmp`, fsync,
// rename, fsync of the directory).
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_SAFETENSORSWRITER_H
#define COLOSSUS_RUNTIME_SAFETENSORSWRITER_H

#include "colossus/runtime/FileIO.h"
#include "colossus/runtime/Status.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace colossus {

/// An f32 tensor to write: `data` points to product(shape) floats
/// (row-major); it may be null when the tensor has no elements.
struct TensorViewF32 {
  std::string name;
  std::vector<int64_t> shape;
  const float *data = nullptr;
};

using SafetensorsMetadata = std::map<std::string, std::string>;

/// The first 8 + N bytes of the file (length, JSON header, padding) for
/// these tensors. Checks: names non-empty, unique and not "__metadata__";
/// dimensions non-negative; data non-null when the tensor has elements; the
/// byte size does not overflow.
Expected<std::string>
safetensorsHeaderF32(const std::vector<TensorViewF32> &tensors,
                     const SafetensorsMetadata &metadata = {});

/// Writes the file (see the top of this file); returns its size and FNV-1a
/// 64 hash.
Expected<FileDigest>
writeSafetensorsF32(const std::string &path,
                    const std::vector<TensorViewF32> &tensors,
                    const SafetensorsMetadata &metadata = {});

} // namespace colossus

#endif // COLOSSUS_RUNTIME_SAFETENSORSWRITER_H
