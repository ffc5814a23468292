//===- Status.h - Error handling of the Colossus runtime ------------------===//
//
// The runtime never throws across its API and never aborts on bad input.
// Fallible functions return `Status` (success or an error message) or
// `Expected<T>` (a value or an error message). Messages are complete
// sentences fragments meant for the user: they name the file, the field and
// the index concerned, e.g. "m.colossus: steps[0].launches[3].args[1] = 42 is
// out of range (12 buffers)".
//
//===----------------------------------------------------------------------===//

#ifndef COLOSSUS_RUNTIME_STATUS_H
#define COLOSSUS_RUNTIME_STATUS_H

#include <cassert>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace colossus {

/// Concatenates anything that has an `operator<<` into a string.
template <typename... Args> std::string strCat(const Args &...args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// An error message; converts into a failed `Status` or `Expected<T>`.
struct Error {
  std::string message;
};

template <typename... Args> Error makeError(const Args &...args) {
  return Error{strCat(args...)};
}

/// Success, or failure with a message.
class [[nodiscard]] Status {
public:
  Status() = default;
  Status(Error e) : ok_(false), message_(std::move(e.message)) {}
  static Status success() { return Status(); }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const std::string &message() const { return message_; }
  Error error() const { return Error{message_}; }

private:
  bool ok_ = true;
  std::string message_;
};

/// A value of type T, or an error message.
template <typename T> class [[nodiscard]] Expected {
public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Error e) : v_(std::move(e)) {}
  /// A failed Status becomes an error (must not be called with success).
  Expected(const Status &s) : v_(s.error()) { assert(!s.ok()); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T &value() & { return std::get<0>(v_); }
  const T &value() const & { return std::get<0>(v_); }
  T &&value() && { return std::get<0>(std::move(v_)); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }

  const std::string &message() const { return std::get<1>(v_).message; }
  Error error() const { return std::get<1>(v_); }
  Status status() const { return ok() ? Status() : Status(error()); }

private:
  std::variant<T, Error> v_;
};

} // namespace colossus

/// Evaluates a Status expression and returns its error from the enclosing
/// function (which returns Status or Expected<T>) when it failed.
#define COLOSSUS_RETURN_IF_ERROR(expr)                                         \
  do {                                                                         \
    ::colossus::Status _colossus_status = (expr);                              \
    if (!_colossus_status.ok())                                                \
      return _colossus_status.error();                                         \
  } while (0)

#endif // COLOSSUS_RUNTIME_STATUS_H
