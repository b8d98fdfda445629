#include "src/core/config.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <string>

#include "src/core/log.h"

namespace braid {
namespace {

Status parseValue(const char* env, const char* text, int64_t* out) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text, &end, 0);
  if (errno != 0 || end == text) {
    return invalidArgument(fmt::format("{}='{}' is not an integer", env, text));
  }
  // Accept k/m/g suffixes for sizes.
  std::string suffix(end);
  if (suffix == "k" || suffix == "K") {
    v <<= 10;
  } else if (suffix == "m" || suffix == "M") {
    v <<= 20;
  } else if (suffix == "g" || suffix == "G") {
    v <<= 30;
  } else if (!suffix.empty()) {
    return invalidArgument(fmt::format("{}='{}' has trailing characters '{}'", env, text, suffix));
  }
  *out = v;
  return Status::ok();
}

Status parseValue(const char*, const char* text, std::string* out) {
  *out = text;
  return Status::ok();
}

std::string show(int64_t v) { return std::to_string(v); }
std::string show(const std::string& v) { return v; }

template <typename T>
const char* typeName();
template <>
const char* typeName<int64_t>() {
  return "int";
}
template <>
const char* typeName<std::string>() {
  return "string";
}

// Edit distance, for "did you mean" (names are short).
size_t distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// A BRAID_* variable that is neither a setting nor a launch variable is most likely a
// misspelt setting (BRAID_TRANSPORT=tcp), which would otherwise be ignored without a word.
void warnUnknownVariablesNow() {
  static const char* const kLaunch[] = {
      "BRAID_RANK",      "BRAID_WORLD_SIZE", "BRAID_LOCAL_RANK", "BRAID_LOCAL_SIZE",
      "BRAID_ROOT_ADDR", "BRAID_JOB_SECRET", "BRAID_UNIQUE_ID",  "BRAID_UNIQUE_ID_FILE"};
  // Variables of braid's own tools and tests (benchmark scripts, test harness), not settings.
  static const char* const kToolPrefixes[] = {"BRAID_PERF", "BRAID_COMPARE_", "BRAID_MACHINE_TAG",
                                              "BRAID_INFO", "BRAID_EXAMPLE",  "BRAID_TEST"};
  std::vector<std::string> known(std::begin(kLaunch), std::end(kLaunch));
#define BRAID_CONFIG_NAME(name, type, def, env, help) known.emplace_back(env);
  BRAID_CONFIG_TABLE(BRAID_CONFIG_NAME)
#undef BRAID_CONFIG_NAME
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.rfind("BRAID_", 0) != 0) continue;
    const std::string name(entry.substr(0, entry.find('=')));
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    if (std::any_of(std::begin(kToolPrefixes), std::end(kToolPrefixes),
                    [&](const char* p) { return name.rfind(p, 0) == 0; })) {
      continue;
    }
    const std::string* best = nullptr;
    size_t bestD = 3;  // suggest only close names (two edits at most)
    for (const auto& k : known) {
      // A known name that starts with this one (BRAID_TIMEOUT for BRAID_TIMEOUT_MS) is close.
      const size_t d = k.rfind(name, 0) == 0 ? 1 : distance(name, k);
      if (d < bestD) bestD = d, best = &k;
    }
    LOG_WARN(kInit, "{} is not a braid setting and is ignored{}; braid-info lists the settings",
             name, best ? fmt::format(" (did you mean {}?)", *best) : "");
  }
}

}  // namespace

void warnUnknownVariables() {
  // Not from Config::fromEnv: the logger reads its settings through it.
  static std::once_flag once;
  std::call_once(once, warnUnknownVariablesNow);
}

std::vector<std::string> splitList(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = std::min(text.find(sep, pos), text.size());
    if (comma > pos) out.emplace_back(text.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

Status Config::fromEnv(Config* out) {
  Config c;
#define BRAID_CONFIG_READ(name, type, def, env, help) \
  if (const char* v = std::getenv(env); v && *v) {    \
    BRAID_TRY(parseValue(env, v, &c.name));           \
  }
  BRAID_CONFIG_TABLE(BRAID_CONFIG_READ)
#undef BRAID_CONFIG_READ
  if (c.timeoutMs <= 0) return invalidArgument("BRAID_TIMEOUT_MS must be positive");
  if (c.tcpSocketsPerPeer < 1 || c.tcpSocketsPerPeer > 64) {
    return invalidArgument("BRAID_TCP_SOCKETS_PER_PEER must be in 1..64");
  }
  if (c.chunkBytes != 0 && c.chunkBytes < 4096) {
    return invalidArgument("BRAID_CHUNK_BYTES must be 0 (automatic) or at least 4096");
  }
  if (c.eagerBytes < 0 || c.eagerBytes > (64 << 20)) {
    return invalidArgument("BRAID_EAGER_BYTES must be in 0..64M");
  }
  if (c.shmRingBytes < 65536 || c.shmRingBytes > (1 << 30) ||
      (c.shmRingBytes & (c.shmRingBytes - 1)) != 0 || c.shmRingBytes < 2 * (c.eagerBytes + 128)) {
    return invalidArgument(
        "BRAID_SHM_RING_BYTES must be a power of two in 64K..1G and at least twice "
        "BRAID_EAGER_BYTES + 128");
  }
  if (c.shmCma != 0 && c.shmCma != 1) return invalidArgument("BRAID_SHM_CMA must be 0 or 1");
  if (c.shmFastBytes < 0 || c.shmFastBytes > 65536) {
    return invalidArgument("BRAID_SHM_FAST_BYTES must be between 0 and 65536");
  }
  if (c.alltoallWindow < 1) return invalidArgument("BRAID_ALLTOALL_WINDOW must be at least 1");
  if (c.spinUs < 0) return invalidArgument("BRAID_SPIN_US must not be negative");
  if (c.pathRehash != 0 && c.pathRehash != 1) {
    return invalidArgument("BRAID_PATH_REHASH must be 0 or 1");
  }
  if (c.multirail != "auto" && c.multirail != "spray" && c.multirail != "failover" &&
      c.multirail != "off") {
    return invalidArgument(
        fmt::format("BRAID_MULTIRAIL='{}' must be one of auto, spray, failover, off", c.multirail));
  }
  if (!c.socketFamily.empty() && c.socketFamily != "AF_INET" && c.socketFamily != "AF_INET6") {
    return invalidArgument(fmt::format(
        "BRAID_SOCKET_FAMILY='{}' must be AF_INET or AF_INET6 (or unset: either)", c.socketFamily));
  }
  if (c.pathTimeoutMs < 10) return invalidArgument("BRAID_PATH_TIMEOUT_MS must be at least 10");
  if (c.peerGoneMs < 0) return invalidArgument("BRAID_PEER_GONE_MS must not be negative");
  if (c.pathChunkBytes < 4096 || c.pathChunkBytes > (64 << 20)) {
    return invalidArgument("BRAID_PATH_CHUNK_BYTES must be in 4K..64M");
  }
  if (c.tcpRtoMinUs != 0 && (c.tcpRtoMinUs < 1000 || c.tcpRtoMinUs > 200000)) {
    return invalidArgument("BRAID_TCP_RTO_MIN_US must be 0 (the kernel's) or in 1000..200000");
  }
  if (c.ibQpsPerPeer < 1 || c.ibQpsPerPeer > 64) {
    return invalidArgument("BRAID_IB_QPS_PER_PEER must be in 1..64");
  }
  if (c.ibGidIndex < -1 || c.ibGidIndex > 65535) {
    return invalidArgument("BRAID_IB_GID_INDEX must be -1 (automatic) or a GID table index");
  }
  if (c.ibTimeout < 1 || c.ibTimeout > 31)
    return invalidArgument("BRAID_IB_TIMEOUT must be in 1..31");
  if (c.ibRetryCnt < 0 || c.ibRetryCnt > 7)
    return invalidArgument("BRAID_IB_RETRY_CNT must be in 0..7");
  if (c.ibRnrRetry < 0 || c.ibRnrRetry > 7) {
    return invalidArgument("BRAID_IB_RNR_RETRY must be in 0..7");
  }
  if (c.ibTc < 0 || c.ibTc > 255) return invalidArgument("BRAID_IB_TC must be in 0..255");
  if (c.ibSl < 0 || c.ibSl > 15) return invalidArgument("BRAID_IB_SL must be in 0..15");
  if (c.ibSlots < 2 || c.ibSlots > 1024)
    return invalidArgument("BRAID_IB_SLOTS must be in 2..1024");
  if (c.ibSlotBytes < 4096 || c.ibSlotBytes > (16 << 20)) {
    return invalidArgument("BRAID_IB_SLOT_BYTES must be in 4K..16M");
  }
  BRAID_TRY(checkLogSettings(c.logLevel, c.logSubsys));
  *out = std::move(c);
  return Status::ok();
}

void forEachConfigEntry(const std::function<void(const ConfigEntry&)>& fn) {
  Config defaults;
  Config current;
  (void)Config::fromEnv(&current);  // on a malformed value the listing shows defaults
#define BRAID_CONFIG_LIST(name, type, def, env, help) \
  fn(ConfigEntry{env, typeName<type>(), show(defaults.name), show(current.name), help});
  BRAID_CONFIG_TABLE(BRAID_CONFIG_LIST)
#undef BRAID_CONFIG_LIST
}

}  // namespace braid
