//===- ArtifactChecksum.h - Whole-file checksum of a .colossus artifact ---===//
//
// Header-only, shared by the compiler (which stamps the checksum) and the
// runtime (which checks it). See docs/artifact-format.md, check 4:
//
//   checksum = FNV-1a 64 of the whole file, computed with the 8 bytes of the
//              `Artifact.checksum` field set to zero.
//
// The field's address is found by walking the FlatBuffers root table and its
// vtable by hand, with every offset bounds-checked against `size`, so these
// functions never read outside [data, data + size) even on a corrupt buffer.
// The whole file is never copied: the hash runs over the bytes before the
// field, eight zero bytes, and the bytes after the field.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_ARTIFACTCHECKSUM_H
#define COLOSSUS_RUNTIME_ARTIFACTCHECKSUM_H

#include "colossus/schema/colossus_generated.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace colossus {

/// FNV-1a 64-bit over `size` bytes, continuing from hash state `h`.
inline uint64_t fnv1a64(const uint8_t *data, size_t size,
                        uint64_t h = 0xcbf29ce484222325ULL) {
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

namespace detail {

template <typename T> inline T loadLE(const uint8_t *p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return flatbuffers::EndianScalar(v);
}

/// Byte offset of the 8-byte `Artifact.checksum` field inside the buffer, or
/// -1 when the buffer is too malformed to tell or the field is absent.
inline int64_t checksumFieldOffset(const uint8_t *data, size_t size) {
  using flatbuffers::soffset_t;
  using flatbuffers::uoffset_t;
  using flatbuffers::voffset_t;
  if (!data || size < 8)
    return -1;
  uint64_t table = loadLE<uoffset_t>(data);
  if (table + sizeof(soffset_t) > size)
    return -1;
  int64_t vtable =
      static_cast<int64_t>(table) - loadLE<soffset_t>(data + table);
  if (vtable < 0 ||
      static_cast<uint64_t>(vtable) + 2 * sizeof(voffset_t) > size)
    return -1;
  uint64_t vtableBytes = loadLE<voffset_t>(data + vtable);
  const uint64_t slot = schema::Artifact::VT_CHECKSUM;
  if (slot + sizeof(voffset_t) > vtableBytes ||
      static_cast<uint64_t>(vtable) + slot + sizeof(voffset_t) > size)
    return -1;
  uint64_t fieldOffset = loadLE<voffset_t>(data + vtable + slot);
  if (fieldOffset == 0)
    return -1;
  uint64_t field = table + fieldOffset;
  if (field + sizeof(uint64_t) > size)
    return -1;
  return static_cast<int64_t>(field);
}

} // namespace detail

/// FNV-1a 64 of the artifact with the checksum field's 8 bytes read as zero.
/// When the field is absent (or the buffer is not a FlatBuffer at all) this
/// is the hash of the bytes as they are; such a file fails the Verifier or the
/// comparison anyway.
inline uint64_t artifactChecksum(const uint8_t *data, size_t size) {
  int64_t field = detail::checksumFieldOffset(data, size);
  if (field < 0)
    return fnv1a64(data, size);
  static const uint8_t kZeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t at = static_cast<size_t>(field);
  uint64_t h = fnv1a64(data, at);
  h = fnv1a64(kZeros, sizeof(kZeros), h);
  return fnv1a64(data + at + 8, size - at - 8, h);
}

/// The checksum field as stored in the file; false if it is absent.
inline bool readArtifactChecksum(const uint8_t *data, size_t size,
                                 uint64_t &out) {
  int64_t field = detail::checksumFieldOffset(data, size);
  if (field < 0)
    return false;
  out = detail::loadLE<uint64_t>(data + field);
  return true;
}

/// Computes the checksum and writes it into the field in place. The field
/// must be present (build with FlatBufferBuilder::ForceDefaults(true));
/// returns false if it is absent.
inline bool stampArtifactChecksum(uint8_t *data, size_t size) {
  int64_t field = detail::checksumFieldOffset(data, size);
  if (field < 0)
    return false;
  uint64_t sum = flatbuffers::EndianScalar(artifactChecksum(data, size));
  std::memcpy(data + field, &sum, sizeof(sum));
  return true;
}

} // namespace colossus

#endif // COLOSSUS_RUNTIME_ARTIFACTCHECKSUM_H
