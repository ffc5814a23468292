//===- FileIO.h - Durable file writes and file digests --------------------===//
//
// Files the runtime writes for training (safetensors, checkpoint state) are
// written so that a crash or a full disk never leaves a half-written file
// under the final name:
//
//   1. open `<path>.tmp` (truncated), write the bytes,
//   2. fsync the file, close it,
//   3. rename `<path>.tmp` to `<path>` (atomic on POSIX file systems),
//   4. fsync the directory so that the rename itself is durable.
//
// On any failure the `.tmp` file is removed and `<path>` is left as it was.
// While writing, the size and the FNV-1a 64 hash of the bytes are computed,
// so that a checkpoint can record them without reading the file back.
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_FILEIO_H
#define COLOSSUS_RUNTIME_FILEIO_H

#include "colossus/runtime/Status.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace colossus {

/// Size and FNV-1a 64 hash of a file's bytes
/// (h = 0xcbf29ce484222325; for each byte b: h ^= b; h *= 0x100000001b3).
struct FileDigest {
  uint64_t bytes = 0;
  uint64_t fnv1a64 = 0xcbf29ce484222325ULL;
};

/// "0x" followed by 16 lower-case hex digits.
std::string formatDigestHex(uint64_t value);
/// Parses formatDigestHex's output ("0x" + 1..16 hex digits); false if not.
bool parseDigestHex(const std::string &text, uint64_t &value);

/// Reads the whole file and returns its size and hash.
Expected<FileDigest> digestFile(const std::string &path);

/// fsync of a directory, making renames and creations inside it durable.
Status syncDirectory(const std::string &dir);

/// The directory part of a path ("." when there is none).
std::string parentDirectory(const std::string &path);

/// A file written as `<path>.tmp` and renamed to `<path>` by commit().
/// Destroying it without a successful commit() removes the `.tmp` file.
class AtomicFileWriter {
public:
  /// Creates (truncates) `<path>.tmp`.
  static Expected<AtomicFileWriter> create(const std::string &path);
  AtomicFileWriter(AtomicFileWriter &&other) noexcept;
  AtomicFileWriter &operator=(AtomicFileWriter &&other) = delete;
  AtomicFileWriter(const AtomicFileWriter &) = delete;
  ~AtomicFileWriter();

  /// Appends bytes (the digest is updated).
  Status write(const void *data, size_t size);
  /// fsync, close, rename over `path`, fsync the directory.
  Expected<FileDigest> commit();

  const std::string &path() const { return path_; }
  const std::string &tmpPath() const { return tmpPath_; }

private:
  AtomicFileWriter(std::string path, std::string tmpPath, int fd)
      : path_(std::move(path)), tmpPath_(std::move(tmpPath)), fd_(fd) {}
  void abandon();
  std::string path_;
  std::string tmpPath_;
  int fd_ = -1;
  bool committed_ = false;
  FileDigest digest_;
};

/// Writes `contents` to `path` with the protocol above.
Expected<FileDigest> writeFileAtomically(const std::string &path,
                                         const std::string &contents);

} // namespace colossus

#endif // COLOSSUS_RUNTIME_FILEIO_H
