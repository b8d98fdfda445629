// Sizes, table cells and JSON of braid-perf, shared with the peer benchmarks of
// benchmarks/compare (so every implementation is stepped and printed the same way).
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "benchmarks/perf/perf.h"

namespace braid::perf {

bool parseSize(const char* text, size_t* out) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || v < 0) return false;
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
  *out = static_cast<size_t>(v);
  return true;
}

std::vector<size_t> sizes(size_t minBytes, size_t maxBytes, double stepFactor, size_t stepBytes) {
  std::vector<size_t> v;
  for (size_t s = minBytes; s <= maxBytes;) {
    v.push_back(s);
    size_t next = stepFactor != 0 ? static_cast<size_t>(std::ceil(s * stepFactor)) : s + stepBytes;
    if (next <= s) break;
    s = next;
  }
  return v;
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
      "{{\"time_us\":{:.3f},\"algbw_gbs\":{:.4f},\"busbw_gbs\":{:.4f},\"wrong\":{}}}", r.us,
      r.algbw, r.busbw, r.wrong);
}

}  // namespace braid::perf
