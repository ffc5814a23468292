//===- Npy.h - Writing NumPy .npy files -----------------------------------===//
//
// Format 1.0: "\x93NUMPY", version 1.0, a little-endian uint16 header length,
// then the header dict
//   {'descr': '<f4', 'fortran_order': False, 'shape': (R, C), }
// padded with spaces and ended by '\n' so that the data starts at a multiple
// of 64 bytes, then the row-major float32 data.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_NPY_H
#define COLOSSUS_RUNTIME_NPY_H

#include "colossus/runtime/Status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace colossus {

/// The magic, version, length and padded header for a '<f4' array.
std::string npyHeader(const std::vector<int64_t> &shape);

/// Writes `data` (product(shape) floats, row-major) to `path` as .npy.
Status writeNpyF32(const std::string &path, const float *data,
                   const std::vector<int64_t> &shape);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_NPY_H
