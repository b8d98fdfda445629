#include "src/core/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
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

LogLevel parseLevel(const std::string& s) {
  if (s == "NONE") return LogLevel::kNone;
  if (s == "ERROR") return LogLevel::kError;
  if (s == "WARN") return LogLevel::kWarn;
  if (s == "INFO") return LogLevel::kInfo;
  if (s == "DEBUG") return LogLevel::kDebug;
  if (s == "TRACE") return LogLevel::kTrace;
  return LogLevel::kWarn;
}

unsigned subsysBit(std::string_view name) {
  static const std::pair<const char*, Subsys> kNames[] = {
      {"INIT", Subsys::kInit}, {"BOOT", Subsys::kBoot}, {"NET", Subsys::kNet},
      {"SHM", Subsys::kShm},   {"IB", Subsys::kIb},     {"CUDA", Subsys::kCuda},
      {"COLL", Subsys::kColl}, {"PATH", Subsys::kPath}, {"ALL", Subsys::kAll}};
  for (const auto& [n, s] : kNames) {
    if (name == n) return static_cast<unsigned>(s);
  }
  return 0;
}

unsigned parseSubsys(const std::string& s) {
  bool exclude = !s.empty() && s[0] == '^';
  unsigned mask = 0;
  for (const std::string& item : splitList(std::string_view(s).substr(exclude ? 1 : 0))) {
    mask |= subsysBit(item);
  }
  return exclude ? (static_cast<unsigned>(Subsys::kAll) & ~mask) : mask;
}

LogState& state() {
  static LogState* s = [] {
    auto* st = new LogState();  // never destroyed: logging may happen during exit
    Config c;
    if (Config::fromEnv(&c).isOk()) {
      st->level = parseLevel(c.logLevel);
      st->mask = parseSubsys(c.logSubsys);
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
        out += std::to_string(rank);
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
    if (FILE* f = std::fopen(path.c_str(), "a")) s.out = f;
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

}  // namespace braid
