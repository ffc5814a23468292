//===- FileIO.cpp - Durable file writes and file digests ------------------===//

#include "colossus/runtime/FileIO.h"
#include "colossus/runtime/ArtifactChecksum.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace colossus {

std::string formatDigestHex(uint64_t value) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx",
                static_cast<unsigned long long>(value));
  return buf;
}

bool parseDigestHex(const std::string &text, uint64_t &value) {
  if (text.size() < 3 || text.size() > 18 || text[0] != '0' ||
      (text[1] != 'x' && text[1] != 'X'))
    return false;
  uint64_t v = 0;
  for (size_t i = 2; i < text.size(); ++i) {
    char c = text[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0)
      return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  value = v;
  return true;
}

Expected<FileDigest> digestFile(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeError(path, ": cannot open: ", std::strerror(errno));
  FileDigest d;
  std::vector<uint8_t> buf(size_t(1) << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int err = errno;
      ::close(fd);
      return makeError(path, ": read failed: ", std::strerror(err));
    }
    if (n == 0)
      break;
    d.fnv1a64 = fnv1a64(buf.data(), static_cast<size_t>(n), d.fnv1a64);
    d.bytes += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return d;
}

Status syncDirectory(const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return makeError(dir, ": cannot open directory: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories; that is not an
  // error of ours.
  if (rc != 0 && err != EINVAL && err != ENOTSUP)
    return makeError(dir, ": fsync failed: ", std::strerror(err));
  return Status::success();
}

std::string parentDirectory(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

Expected<AtomicFileWriter> AtomicFileWriter::create(const std::string &path) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return makeError(tmp, ": cannot open for writing: ", std::strerror(errno));
  return AtomicFileWriter(path, tmp, fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter &&o) noexcept
    : path_(std::move(o.path_)), tmpPath_(std::move(o.tmpPath_)), fd_(o.fd_),
      committed_(o.committed_), digest_(o.digest_) {
  o.fd_ = -1;
  o.committed_ = true; // the moved-from object owns nothing
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_)
    abandon();
}

void AtomicFileWriter::abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!tmpPath_.empty())
    ::unlink(tmpPath_.c_str());
  committed_ = true;
}

Status AtomicFileWriter::write(const void *data, size_t size) {
  if (fd_ < 0)
    return makeError(tmpPath_, ": write after commit or failure");
  const uint8_t *p = static_cast<const uint8_t *>(data);
  digest_.fnv1a64 = fnv1a64(p, size, digest_.fnv1a64);
  digest_.bytes += size;
  while (size > 0) {
    size_t chunk = size < (size_t(1) << 30) ? size : (size_t(1) << 30);
    ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int err = errno;
      abandon();
      return makeError(tmpPath_, ": write failed: ", std::strerror(err));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::success();
}

Expected<FileDigest> AtomicFileWriter::commit() {
  if (fd_ < 0)
    return makeError(tmpPath_, ": commit after commit or failure");
  if (::fsync(fd_) != 0) {
    int err = errno;
    abandon();
    return makeError(tmpPath_, ": fsync failed: ", std::strerror(err));
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int err = errno;
    abandon();
    return makeError(tmpPath_, ": close failed: ", std::strerror(err));
  }
  if (::rename(tmpPath_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    abandon();
    return makeError("cannot rename ", tmpPath_, " to ", path_, ": ",
                     std::strerror(err));
  }
  committed_ = true;
  COLOSSUS_RETURN_IF_ERROR(syncDirectory(parentDirectory(path_)));
  return digest_;
}

Expected<FileDigest> writeFileAtomically(const std::string &path,
                                         const std::string &contents) {
  auto w = AtomicFileWriter::create(path);
  if (!w)
    return w.error();
  COLOSSUS_RETURN_IF_ERROR(w->write(contents.data(), contents.size()));
  return w->commit();
}

} // namespace colossus
