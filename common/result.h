// Typed results across module boundaries.
//
// Every public function that can fail because of its environment (a file, a library, hostile input)
// returns Result<T>. A caller's bug (a broken precondition) asserts instead. Each Error carries a code
// that the CLI maps to an exit status, the context in which it happened, and a hint for the user.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace mailark {

enum class ErrorCode {
  kInvalidArgument,  // the user asked for something malformed (bad query, bad id)
  kNotFound,         // a record, file or key does not exist
  kCorrupt,          // stored data fails its checks (hash chain, checksum, format)
  kIo,               // the operating system refused (open, read, write, fsync, disk full)
  kLimit,            // input exceeded a configured limit
  kUnsupported,      // a format version or feature this build does not know
  kBadInput,         // input is not what it claims to be (not an email message)
  kInternal,         // a library failed in a way we did not anticipate
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string context;  // what failed, with the object it failed on
  std::string hint;     // what the user can do about it; may be empty

  std::string to_string() const {
    std::string s = std::string(error_code_name(code)) + ": " + context;
    if (!hint.empty()) s += " (hint: " + hint + ")";
    return s;
  }
};

inline Error make_error(ErrorCode code, std::string context, std::string hint = {}) {
  return Error{code, std::move(context), std::move(hint)};
}

// Result<T> holds either a T or an Error. Accessing the wrong alternative is a caller bug and asserts.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  // By value, not T&&: `for (auto& x : f().value())` would otherwise iterate a destroyed temporary.
  T value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return err_;
  }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() {
  return Status();
}

// Propagates an error from an expression returning Result<...>.
#define MAILARK_TRY(expr)                            \
  do {                                               \
    auto _mailark_r = (expr);                        \
    if (!_mailark_r.ok()) return _mailark_r.error(); \
  } while (0)

#define MAILARK_CONCAT_INNER(a, b) a##b
#define MAILARK_CONCAT(a, b) MAILARK_CONCAT_INNER(a, b)
#define MAILARK_ASSIGN_OR_RETURN(lhs, expr)                                                              \
  auto MAILARK_CONCAT(_mailark_r_, __LINE__) = (expr);                                                   \
  if (!MAILARK_CONCAT(_mailark_r_, __LINE__).ok()) return MAILARK_CONCAT(_mailark_r_, __LINE__).error(); \
  lhs = std::move(MAILARK_CONCAT(_mailark_r_, __LINE__)).value()

}  // namespace mailark
