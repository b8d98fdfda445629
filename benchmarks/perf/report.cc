// Sizes, table cells and JSON of braid-perf, shared with the peer benchmarks of
// benchmarks/compare (so every implementation is stepped and printed the same way).
#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "benchmarks/perf/perf.h"

namespace braid::perf {

bool parseSize(const char* text, size_t* out) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || !std::isfinite(v) || v < 0) return false;
  switch (*end) {
    case 'k':
    case 'K':
      v *= 1024;
      break;
    case 'm':
    case 'M':
      v *= 1024.0 * 1024;
      break;
    case 'g':
    case 'G':
      v *= 1024.0 * 1024 * 1024;
      break;
    case '\0':
      break;
    default:
      return false;
  }
  if (end[0] != '\0' && end[1] != '\0') return false;
  if (v >= 0x1p62) return false;  // 4 EiB: no machine's memory, and no overflow below
  *out = static_cast<size_t>(v);
  return true;
}

bool parseInt(const char* text, long lo, long hi, int* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

std::vector<size_t> sizes(size_t minBytes, size_t maxBytes, double stepFactor, size_t stepBytes) {
  std::vector<size_t> v;
  for (size_t s = minBytes; s <= maxBytes;) {
    v.push_back(s);
    // As nccl-tests: a factor above 1 multiplies, else the size grows by stepBytes (-i). From
    // -b 0 a factor goes on from 1 byte (nccl-tests loops at 0 for ever).
    if (stepFactor > 1 && s > 0 &&
        static_cast<double>(s) * stepFactor > static_cast<double>(maxBytes)) {
      break;  // (also keeps a huge factor from a double beyond size_t)
    }
    size_t next = stepFactor > 1 ? (s == 0 ? 1 : static_cast<size_t>(std::ceil(s * stepFactor)))
                                 : s + stepBytes;
    if (next <= s) break;
    s = next;
  }
  return v;
}

bool applyCommonFlag(int flag, const char* arg, CommonOptions* o, std::string* err) {
  auto size = [&](size_t* out) {
    if (!parseSize(arg, out)) {
      *err = fmt::format(
          "-{}: bad size '{}' (a number of bytes, with K, M or G for KiB, MiB, GiB: 8, 64K, 1.5M)",
          static_cast<char>(flag), arg);
    }
  };
  auto count = [&](int* out, long lo, const char* what) {
    if (!parseInt(arg, lo, INT32_MAX, out)) {
      *err = fmt::format("-{}: '{}' is not {}", static_cast<char>(flag), arg, what);
    }
  };
  auto seconds = [&](double* out, const char* flag) {
    char* end = nullptr;
    *out = std::strtod(arg, &end);
    if (end == arg || *end != '\0')
      *err = fmt::format("{}: '{}' is not a number of seconds", flag, arg);
  };
  switch (flag) {
    case 'b':
      size(&o->minBytes);
      return true;
    case 'e':
      size(&o->maxBytes);
      return true;
    case 'f': {
      char* end = nullptr;
      o->stepFactor = std::strtod(arg, &end);
      if (end == arg || *end != '\0' || !std::isfinite(o->stepFactor)) {
        *err = fmt::format("-f: '{}' is not a step factor (a number above 1; 0 or 1: step by -i)",
                           arg);
      }
      return true;
    }
    case 'i':
      size(&o->stepBytes);
      return true;
    case 'n':
      count(&o->iters, 1, "a number of iterations (1 or more)");
      return true;
    case 'w':
      count(&o->warmup, 0, "a number of warmup iterations (0 or more)");
      return true;
    case 'c': {
      // 0/1, or newer nccl-tests' count of checked iterations: any positive number checks.
      int n = 0;
      count(&n, 0, "0 (no check) or a positive number (check the results)");
      o->check = n != 0;
      return true;
    }
    case 'J':
      o->jsonPath = arg;
      return true;
    case 'T':
      seconds(&o->timeoutSeconds, "-T");
      return true;
    case kTimePerSizeFlag:
      seconds(&o->secondsPerSize, "--time-per-size");
      return true;
    default:
      return false;
  }
}

std::string checkCommonOptions(const CommonOptions& o) {
  if (o.minBytes > o.maxBytes) {
    return fmt::format("invalid sizes: -b (minbytes {}) must not exceed -e (maxbytes {})",
                       o.minBytes, o.maxBytes);
  }
  if (o.iters < 1 || o.warmup < 0) return "-n must be >= 1 and -w >= 0";
  if (!(o.stepFactor >= 0)) return "-f must be > 1 (or 0 or 1: step by -i)";
  if (o.stepFactor <= 1 && o.stepBytes == 0 && o.minBytes != o.maxBytes) return "-i must be > 0";
  if (!(o.timeoutSeconds >= 0) || o.timeoutSeconds > 1e6) {
    return "-T must be 0 (no limit of its own) or a number of seconds up to 1e6";
  }
  if (!(o.secondsPerSize >= 0) || o.secondsPerSize > 1e6) {
    return "--time-per-size must be 0 (fixed -n) or a number of seconds up to 1e6";
  }
  return "";
}

std::string steppingLine(const CommonOptions& o) {
  return fmt::format(
      "# minBytes {} maxBytes {} step: {} warmup iters: {} iters: {}{} validation: {}", o.minBytes,
      o.maxBytes,
      o.stepFactor > 1 ? fmt::format("{}(factor)", o.stepFactor)
                       : fmt::format("{}(bytes)", o.stepBytes),
      o.warmup, o.iters,
      o.secondsPerSize > 0 ? fmt::format(" (adaptive, {} s per size)", o.secondsPerSize) : "",
      o.check ? 1 : 0);
}

void printTableHeader(bool cpuTime) {
  // As nccl-tests: -C 1 names the time column "cputime".
  const char* time = cpuTime ? "cputime" : "time";
  std::printf("#%70s%35s\n", "out-of-place", "in-place");
  std::printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s\n", "size",
              "count", "type", "redop", "root", time, "algbw", "busbw", "#wrong", time, "algbw",
              "busbw", "#wrong");
  std::printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s\n", "(B)",
              "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)",
              "");
}

std::string fmtResult(const Result& r, bool check) {
  if (!r.valid) return fmt::format("  {:>7}  {:>6}  {:>6}  {:>6}", "N/A", "N/A", "N/A", "N/A");
  std::string t = r.us >= 1e4 ? fmt::format("{:7.0f}", r.us) : fmt::format("{:7.2f}", r.us);
  return fmt::format("  {}  {:6.2f}  {:6.2f}  {:>6}", t, r.algbw, r.busbw,
                     check ? std::to_string(r.wrong) : "N/A");
}

std::string jsonResult(const Result& r) {
  if (!r.valid) return "null";
  return fmt::format(
      "{{\"time_us\":{:.3f},\"algbw_gbs\":{:.6g},\"busbw_gbs\":{:.6g},\"wrong\":{}}}", r.us,
      r.algbw, r.busbw, r.wrong);
}

}  // namespace braid::perf

namespace braid::perf {

void printRow(const Row& r, bool check, FILE* json) {
  std::printf("  %10zu  %12zu  %8s  %6s  %6d%s%s\n", r.bytes, r.count, r.type, r.redop, r.root,
              fmtResult(r.oop, check).c_str(), fmtResult(r.ip, check).c_str());
  std::fflush(stdout);
  if (json == nullptr) return;
  std::string line = fmt::format(
      "{{{}\"coll\":\"{}\",\"nranks\":{},\"size\":{},\"count\":{},\"type\":\"{}\","
      "\"redop\":\"{}\",\"root\":{},\"iters\":{},\"out_of_place\":{},\"in_place\":{}}}\n",
      r.impl.empty() ? "" : fmt::format("\"impl\":\"{}\",", r.impl), r.coll, r.nranks, r.bytes,
      r.count, r.type, r.redop, r.root, r.iters, jsonResult(r.oop), jsonResult(r.ip));
  std::fputs(line.c_str(), json);
  std::fflush(json);
}

bool printFooter(size_t wrong, double busSum, int busRows, double minBusBw) {
  const double avg = busRows ? busSum / busRows : 0.0;
  // As nccl-tests: NCCL_TESTS_MIN_BW (GB/s) fails the run below 0.9 of it.
  const bool low = minBusBw >= 0 && avg < 0.9 * minBusBw;
  std::printf("# Out of bounds values : %zu %s\n", wrong, wrong == 0 ? "OK" : "FAILED");
  std::printf("# Avg bus bandwidth    : %g %s\n#\n", avg,
              minBusBw < 0 ? ""
              : low        ? "FAILED"
                           : "OK");
  std::fflush(stdout);
  return !low;
}

}  // namespace braid::perf
