//===- Npy.cpp - Writing NumPy .npy files ---------------------------------===//

#include "colossus/runtime/Npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace colossus {

std::string npyHeader(const std::vector<int64_t> &shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i)
    dict += strCat(i ? ", " : "", shape[i]);
  if (shape.size() == 1)
    dict += ",";
  dict += "), }";
  // magic (6) + version (2) + header length (2) + dict + padding + '\n'.
  size_t unpadded = 10 + dict.size() + 1;
  size_t padded = (unpadded + 63) / 64 * 64;
  dict.append(padded - unpadded, ' ');
  dict += '\n';
  size_t headerLen = dict.size();
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(headerLen & 0xff);
  out += static_cast<char>((headerLen >> 8) & 0xff);
  return out + dict;
}

Status writeNpyF32(const std::string &path, const float *data,
                   const std::vector<int64_t> &shape) {
  size_t count = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return makeError(path, ": negative dimension in .npy shape");
    count *= static_cast<size_t>(d);
  }
  std::string header = npyHeader(shape);
  if (header.size() - 10 > 0xffff)
    return makeError(path, ": .npy header too long");
  std::FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    return makeError(path, ": cannot open for writing: ", std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  // Data: little-endian float32 (the host order on x86-64 and aarch64).
  if (ok && count)
    ok = std::fwrite(data, sizeof(float), count, f) == count;
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok)
    return makeError(path, ": write failed: ", std::strerror(err ? err : EIO));
  return Status::success();
}

} // namespace colossus
