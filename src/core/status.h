// Internal error type: a result code plus a human sentence. Never thrown across the C ABI.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "braid/braid.h"

namespace braid {

// Every wait in braid is bounded by a deadline on this clock.
using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline deadlineIn(int64_t ms) { return Clock::now() + std::chrono::milliseconds(ms); }

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(braidResult_t code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  static Status ok() { return Status(); }

  bool isOk() const { return code_ == braidSuccess; }
  explicit operator bool() const { return isOk(); }
  braidResult_t code() const { return code_; }
  const std::string& message() const { return msg_; }

 private:
  braidResult_t code_ = braidSuccess;
  std::string msg_;
};

inline Status invalidArgument(std::string m) { return {braidInvalidArgument, std::move(m)}; }
inline Status invalidUsage(std::string m) { return {braidInvalidUsage, std::move(m)}; }
inline Status systemError(std::string m) { return {braidSystemError, std::move(m)}; }
inline Status internalError(std::string m) { return {braidInternalError, std::move(m)}; }
inline Status remoteError(std::string m) { return {braidRemoteError, std::move(m)}; }
inline Status timeoutError(std::string m) { return {braidTimeout, std::move(m)}; }

// Evaluates an expression yielding Status and returns it from the caller when not ok.
#define BRAID_TRY(expr)                            \
  do {                                             \
    ::braid::Status braid_try_s_ = (expr);         \
    if (!braid_try_s_.isOk()) return braid_try_s_; \
  } while (0)

}  // namespace braid
