// The one logger: levels ERROR..TRACE, subsystems, one line per message carrying host, pid, rank.
// BRAID_LOG_LEVEL / BRAID_LOG_SUBSYS / BRAID_LOG_FILE are read once, at the first log call.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "src/core/status.h"

namespace braid {

enum class LogLevel { kNone = 0, kError = 1, kWarn = 2, kInfo = 3, kDebug = 4, kTrace = 5 };
enum class Subsys : unsigned {
  kInit = 1,
  kBoot = 2,
  kNet = 4,
  kShm = 8,
  kIb = 16,
  kCuda = 32,
  kColl = 64,
  kPath = 128,
  kAll = 255
};

bool logEnabled(LogLevel level, Subsys subsys);
void logWrite(LogLevel level, Subsys subsys, int rank, std::string_view msg);
// The rank shown by log lines of this thread (-1 when unknown).
void logSetThreadRank(int rank);
int logThreadRank();
// Whether BRAID_LOG_LEVEL and BRAID_LOG_SUBSYS name known levels and subsystems (any case).
Status checkLogSettings(const std::string& level, const std::string& subsys);

// Lets a message that strangers can cause (a rejected connection) through at most `burst`
// times per window, so that a port scan cannot flood the log: allow() says whether to log
// now, and sets *note to what to append: "" or " (N more <what> not shown)", N being those held
// back since the last one logged.
class LogLimiter {
 public:
  explicit LogLimiter(const char* what, int burst = 5, int64_t windowMs = 10000)
      : what_(what), burst_(burst), windowMs_(windowMs) {}
  bool allow(std::string* note);

 private:
  const char* what_;
  const int burst_;
  const int64_t windowMs_;
  std::atomic<int64_t> windowStart_{0};
  std::atomic<int> inWindow_{0};
  std::atomic<uint64_t> held_{0};
};

#define BRAID_LOG(level, subsys, ...)                                             \
  do {                                                                            \
    if (::braid::logEnabled(::braid::LogLevel::level, ::braid::Subsys::subsys)) { \
      ::braid::logWrite(::braid::LogLevel::level, ::braid::Subsys::subsys,        \
                        ::braid::logThreadRank(), ::fmt::format(__VA_ARGS__));    \
    }                                                                             \
  } while (0)

#define LOG_ERROR(subsys, ...) BRAID_LOG(kError, subsys, __VA_ARGS__)
#define LOG_WARN(subsys, ...) BRAID_LOG(kWarn, subsys, __VA_ARGS__)
#define LOG_INFO(subsys, ...) BRAID_LOG(kInfo, subsys, __VA_ARGS__)
#define LOG_DEBUG(subsys, ...) BRAID_LOG(kDebug, subsys, __VA_ARGS__)
#define LOG_TRACE(subsys, ...) BRAID_LOG(kTrace, subsys, __VA_ARGS__)

}  // namespace braid
