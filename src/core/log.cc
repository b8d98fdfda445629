#include "src/core/log.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "src/core/config.h"

namespace braid {
namespace {

struct LogState {
  LogLevel level = LogLevel::kWarn;
  unsigned mask = static_cast<unsigned>(Subsys::kAll);
  std::string filePattern;
  FILE* out = stderr;
  bool fileTried = false;
  char host[64] = {};
  std::mutex mu;
};

// Names are matched without regard to case (NCCL_DEBUG=info works too); Config::fromEnv has
// already rejected unknown ones through checkLogSettings.
std::string upper(std::string_view s) {
  std::string u(s);
  for (char& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return u;
}

bool parseLevel(const std::string& text, LogLevel* level) {
  static const std::pair<const char*, LogLevel> kNames[] = {
      {"NONE", LogLevel::kNone}, {"ERROR", LogLevel::kError}, {"WARN", LogLevel::kWarn},
      {"INFO", LogLevel::kInfo}, {"DEBUG", LogLevel::kDebug}, {"TRACE", LogLevel::kTrace}};
  const std::string u = upper(text);
  for (const auto& [n, l] : kNames) {
    if (u == n) {
      *level = l;
      return true;
    }
  }
  return false;
}

unsigned subsysBit(std::string_view name) {
  static const std::pair<const char*, Subsys> kNames[] = {
      {"INIT", Subsys::kInit}, {"BOOT", Subsys::kBoot}, {"NET", Subsys::kNet},
      {"SHM", Subsys::kShm},   {"IB", Subsys::kIb},     {"CUDA", Subsys::kCuda},
      {"COLL", Subsys::kColl}, {"PATH", Subsys::kPath}, {"ALL", Subsys::kAll}};
  const std::string u = upper(name);
  for (const auto& [n, s] : kNames) {
    if (u == n) return static_cast<unsigned>(s);
  }
  return 0;
}

// The subsystems of a BRAID_LOG_SUBSYS list; *unknown gets the first name that is none.
unsigned parseSubsys(const std::string& s, std::string* unknown) {
  bool exclude = !s.empty() && s[0] == '^';
  unsigned mask = 0;
  for (const std::string& item : splitList(std::string_view(s).substr(exclude ? 1 : 0))) {
    const unsigned bit = subsysBit(item);
    if (bit == 0 && unknown != nullptr && unknown->empty()) *unknown = item;
    mask |= bit;
  }
  return exclude ? (static_cast<unsigned>(Subsys::kAll) & ~mask) : mask;
}

LogState& state() {
  static LogState* s = [] {
    auto* st = new LogState();  // never destroyed: logging may happen during exit
    Config c;
    if (Config::fromEnv(&c).isOk()) {
      (void)parseLevel(c.logLevel, &st->level);
      st->mask = parseSubsys(c.logSubsys, nullptr);
      st->filePattern = c.logFile;
    }
    gethostname(st->host, sizeof(st->host) - 1);
    return st;
  }();
  return *s;
}

thread_local int tlsRank = -1;

const char* levelName(LogLevel l) {
  switch (l) {
    case LogLevel::kError:
      return "ERROR";
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kTrace:
      return "TRACE";
    default:
      return "";
  }
}

const char* subsysName(Subsys s) {
  switch (s) {
    case Subsys::kInit:
      return "INIT";
    case Subsys::kBoot:
      return "BOOT";
    case Subsys::kNet:
      return "NET";
    case Subsys::kShm:
      return "SHM";
    case Subsys::kIb:
      return "IB";
    case Subsys::kCuda:
      return "CUDA";
    case Subsys::kColl:
      return "COLL";
    case Subsys::kPath:
      return "PATH";
    default:
      return "ALL";
  }
}

// %r of BRAID_LOG_FILE. The file opens at the process's first log line, which may come before
// its communicator knows its rank: then the launcher's rank, else "p" and the pid, so that the
// ranks of a job never share a file named "-1".
std::string rankForFileName(int rank) {
  if (rank >= 0) return std::to_string(rank);
  for (const char* v : {"BRAID_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const char* r = std::getenv(v);
    if (r != nullptr && *r >= '0' && *r <= '9' && std::strspn(r, "0123456789") == std::strlen(r)) {
      return r;
    }
  }
  return "p" + std::to_string(getpid());
}

std::string expandPattern(const std::string& pat, const char* host, int rank) {
  std::string out;
  for (size_t i = 0; i < pat.size(); ++i) {
    if (pat[i] == '%' && i + 1 < pat.size()) {
      char c = pat[++i];
      if (c == 'h') {
        out += host;
      } else if (c == 'p') {
        out += std::to_string(getpid());
      } else if (c == 'r') {
        out += rankForFileName(rank);
      } else {
        out += c;
      }
    } else {
      out += pat[i];
    }
  }
  return out;
}

}  // namespace

Status checkLogSettings(const std::string& level, const std::string& subsys) {
  LogLevel l;
  if (!parseLevel(level, &l)) {
    return invalidArgument(fmt::format(
        "BRAID_LOG_LEVEL='{}' must be one of NONE, ERROR, WARN, INFO, DEBUG, TRACE", level));
  }
  std::string unknown;
  (void)parseSubsys(subsys, &unknown);
  if (!unknown.empty()) {
    return invalidArgument(fmt::format(
        "BRAID_LOG_SUBSYS names '{}': the subsystems are INIT, BOOT, NET, SHM, IB, CUDA, COLL, "
        "PATH and ALL (a list, '^' first to exclude)",
        unknown));
  }
  return Status::ok();
}

bool logEnabled(LogLevel level, Subsys subsys) {
  LogState& s = state();
  return level <= s.level && (s.mask & static_cast<unsigned>(subsys)) != 0;
}

void logWrite(LogLevel level, Subsys subsys, int rank, std::string_view msg) {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.fileTried && !s.filePattern.empty()) {
    s.fileTried = true;
    std::string path = expandPattern(s.filePattern, s.host, rank);
    if (FILE* f = std::fopen(path.c_str(), "a")) {
      s.out = f;
    } else {
      std::fprintf(stderr,
                   "%s:%d [%d] braid WARN INIT cannot open BRAID_LOG_FILE '%s' (%s): "
                   "logging to stderr\n",
                   s.host, getpid(), rank, path.c_str(), std::strerror(errno));
    }
  }
  auto now = std::chrono::system_clock::now().time_since_epoch();
  double secs = std::chrono::duration<double>(now).count();
  std::fprintf(s.out, "%s:%d:%d [%d] %.6f braid %s %s %.*s\n", s.host, getpid(), gettid(), rank,
               secs, levelName(level), subsysName(subsys), static_cast<int>(msg.size()),
               msg.data());
  std::fflush(s.out);
}

void logSetThreadRank(int rank) { tlsRank = rank; }
int logThreadRank() { return tlsRank; }

bool LogLimiter::allow(std::string* note) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t start = windowStart_.load(std::memory_order_relaxed);
  if (now - start >= windowMs_ &&
      windowStart_.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
    inWindow_.store(0, std::memory_order_relaxed);
  }
  if (inWindow_.fetch_add(1, std::memory_order_relaxed) >= burst_) {
    held_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const uint64_t held = held_.exchange(0, std::memory_order_relaxed);
  *note = held == 0 ? std::string() : fmt::format(" ({} more {} not shown)", held, what_);
  return true;
}

}  // namespace braid
