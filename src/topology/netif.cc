#include "src/topology/netif.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "src/bootstrap/socket_util.h"
#include "src/core/config.h"
#include "src/core/log.h"
#include "src/topology/machine.h"

namespace braid {

namespace {
thread_local int tlsListErrno = 0;  // why this thread's last listInterfaces() found nothing
}  // namespace

std::vector<NetIf> listInterfaces(bool withDown) {
  std::vector<NetIf> out;
  ifaddrs* list = nullptr;
  tlsListErrno = 0;
  if (getifaddrs(&list) != 0) {
    tlsListErrno = errno;
    return out;
  }
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (!withDown && !(i->ifa_flags & IFF_UP))) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    NetIf n;
    n.name = i->ifa_name;
    n.down = withDown && (i->ifa_flags & (IFF_UP | IFF_RUNNING)) != (IFF_UP | IFF_RUNNING);
    n.addr.len = fam == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    std::memcpy(&n.addr.ss, i->ifa_addr, n.addr.len);
    if (fam == AF_INET6) {
      auto* a6 = reinterpret_cast<sockaddr_in6*>(&n.addr.ss);
      if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) continue;  // needs scope ids; skip
    }
    n.addr.setPort(0);
    out.push_back(n);
  }
  freeifaddrs(list);
  return out;
}

bool ifnameMatches(const std::string& specIn, const std::string& ifname) {
  std::string spec = specIn;
  bool exclude = false, exact = false;
  if (!spec.empty() && spec[0] == '^') {
    exclude = true;
    spec.erase(0, 1);
  }
  if (!spec.empty() && spec[0] == '=') {
    exact = true;
    spec.erase(0, 1);
  }
  bool hit = false;
  for (const std::string& item : splitList(spec)) {
    if (exact ? ifname == item : ifname.rfind(item, 0) == 0) hit = true;
  }
  return exclude ? !hit : hit;
}

namespace {

bool sameSubnet(const NetIf& nif, const SockAddr& reach) {
  // Without the netmask at hand, a /24 (v4) or /64 (v6) prefix match is the heuristic.
  if (nif.addr.family() != reach.family()) return false;
  if (reach.family() == AF_INET) {
    uint32_t a = ntohl(reinterpret_cast<const sockaddr_in*>(&nif.addr.ss)->sin_addr.s_addr);
    uint32_t b = ntohl(reinterpret_cast<const sockaddr_in*>(&reach.ss)->sin_addr.s_addr);
    return (a >> 8) == (b >> 8);
  }
  const auto* a = reinterpret_cast<const sockaddr_in6*>(&nif.addr.ss)->sin6_addr.s6_addr;
  const auto* b = reinterpret_cast<const sockaddr_in6*>(&reach.ss)->sin6_addr.s6_addr;
  return std::memcmp(a, b, 8) == 0;
}

bool familyAllowed(const Config& cfg, const NetIf& n) {
  if (cfg.socketFamily == "AF_INET") return n.addr.family() == AF_INET;
  if (cfg.socketFamily == "AF_INET6") return n.addr.family() == AF_INET6;
  return true;
}

// Interfaces no job spans hosts with: loopback, and the bridges of containers and VMs. Left out
// by default, and by an exclude-only BRAID_SOCKET_IFNAME ('^eth1' means "the usual ones but
// eth1", not "loopback too"), unless nothing else is left (a job on one host).
bool skippedByDefault(const NetIf& n) {
  return n.addr.isLoopback() || n.name.rfind("docker", 0) == 0 || n.name.rfind("virbr", 0) == 0;
}

// The up interfaces that BRAID_SOCKET_IFNAME names, of the allowed family (see above).
std::vector<NetIf> namedInterfaces(const Config& cfg, const std::vector<NetIf>& all) {
  const bool excludeOnly = cfg.socketIfname[0] == '^';
  std::vector<NetIf> out, fallback;
  for (const NetIf& n : all) {
    if (n.down || !familyAllowed(cfg, n) || !ifnameMatches(cfg.socketIfname, n.name)) continue;
    (excludeOnly && skippedByDefault(n) ? fallback : out).push_back(n);
  }
  return out.empty() ? fallback : out;
}

}  // namespace

Status chooseLocalAddress(const Config& cfg, const SockAddr* reach, NetIf* out) {
  std::vector<NetIf> all = listInterfaces();
  if (!cfg.socketIfname.empty()) {
    const std::vector<NetIf> named = namedInterfaces(cfg, all);
    if (!named.empty()) {
      *out = named.front();
      return Status::ok();
    }
    return invalidArgument(
        fmt::format("no up interface matches BRAID_SOCKET_IFNAME='{}'", cfg.socketIfname));
  }
  if (reach != nullptr) {
    for (const NetIf& n : all) {
      if (!familyAllowed(cfg, n)) continue;
      if (reach->isLoopback() ? n.addr.isLoopback() && n.addr.family() == reach->family()
                              : sameSubnet(n, *reach)) {
        *out = n;
        return Status::ok();
      }
    }
  }
  const NetIf* loopback = nullptr;
  for (const NetIf& n : all) {
    if (!familyAllowed(cfg, n)) continue;
    if (n.addr.isLoopback()) {
      if (loopback == nullptr) loopback = &n;
      continue;
    }
    if (skippedByDefault(n)) continue;
    if (reach == nullptr || n.addr.family() == reach->family()) {
      *out = n;
      return Status::ok();
    }
  }
  if (loopback != nullptr) {
    *out = *loopback;
    return Status::ok();
  }
  if (all.empty() && tlsListErrno != 0) {
    return callError("listing the network interfaces (getifaddrs)", tlsListErrno);
  }
  return systemError("no usable network interface found");
}

int launcherLocalRank() {
  for (const char* var : {"BRAID_LOCAL_RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                          "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    long r = std::strtol(v, &end, 10);
    if (*end == '\0' && r >= 0 && r < (1 << 20)) return static_cast<int>(r);
  }
  return -1;
}

std::vector<std::string> discoveredRails() {
  MachineInfo m;
  if (!discoverMachine(&m).isOk()) return {};
  std::vector<PciDevice> nics;
  // Down ones too: a rail whose link is down when the job starts is still a rail (its paths
  // start dead), so every host of a job counts the same rails.
  const std::vector<NetIf> all = listInterfaces(/*withDown=*/true);
  for (const PciDevice& d : m.nics) {
    bool usable = d.kind == "network" && std::any_of(all.begin(), all.end(), [&](const NetIf& n) {
                    return n.name == d.name && !n.addr.isLoopback();
                  });
    if (usable) nics.push_back(d);
  }
  // By NUMA node, then PCI address: low local ranks (usually on the first socket) take the
  // NICs closest to them.
  std::stable_sort(nics.begin(), nics.end(), [](const PciDevice& a, const PciDevice& b) {
    return a.numa != b.numa ? a.numa < b.numa : a.pciBus < b.pciBus;
  });
  std::vector<std::string> out;
  for (const PciDevice& d : nics) out.push_back(d.name);
  return out;
}

std::vector<std::string> configuredRails(const Config& cfg) {
  if (cfg.rails == "auto") {
    std::vector<std::string> found = discoveredRails();
    return found.size() >= 2 ? found : std::vector<std::string>{};
  }
  if (cfg.rails == "none") return {};
  return splitList(cfg.rails);
}

Status railInterface(const Config& cfg, int localRank, std::string* ifname) {
  ifname->clear();
  std::vector<std::string> rails = configuredRails(cfg);
  if (rails.empty() || !cfg.socketIfname.empty()) return Status::ok();
  if (localRank < 0) {
    if (cfg.rails == "auto") return Status::ok();  // discovered rails need a launcher's word
    return invalidArgument(fmt::format(
        "BRAID_RAILS='{}' needs this rank's local rank (BRAID_LOCAL_RANK, LOCAL_RANK, "
        "OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID), or BRAID_SOCKET_IFNAME for this rank",
        cfg.rails));
  }
  *ifname = rails[static_cast<size_t>(localRank) % rails.size()];
  return Status::ok();
}

Status chooseNics(const Config& cfg, int localRank, std::vector<NetIf>* out, int* primary) {
  out->clear();
  *primary = 0;
  std::vector<NetIf> all = listInterfaces(/*withDown=*/true);
  auto add = [&](const NetIf& n) {
    bool seen =
        std::any_of(out->begin(), out->end(), [&](const NetIf& o) { return o.name == n.name; });
    if (!seen) out->push_back(n);
  };
  if (!cfg.socketIfname.empty()) {
    for (const NetIf& n : namedInterfaces(cfg, all)) add(n);
    if (out->empty()) {
      return invalidArgument(
          fmt::format("no up interface matches BRAID_SOCKET_IFNAME='{}'", cfg.socketIfname));
    }
    if (localRank >= 0) *primary = localRank % static_cast<int>(out->size());
    return Status::ok();
  }
  const std::vector<std::string> rails = configuredRails(cfg);
  if (!rails.empty() && (localRank >= 0 || cfg.rails != "auto")) {
    std::string mine;
    BRAID_TRY(railInterface(cfg, localRank, &mine));
    // A name that is no interface is a mistake, said at once.
    for (const std::string& name : rails) {
      if (if_nametoindex(name.c_str()) == 0) {
        return invalidArgument(
            fmt::format("BRAID_RAILS='{}': there is no interface {}", cfg.rails, name));
      }
    }
    // No rail with a link and an address yet (the host's links come up as the job starts, a
    // switch reboots): waited for, as a peer that starts late is, until BRAID_TIMEOUT_MS (or
    // until a split's parent fails). Rails that are up with addresses of another family than
    // BRAID_SOCKET_FAMILY's are not waited for.
    const Deadline until = deadlineIn(cfg.timeoutMs);
    bool otherFamily = false;
    for (bool told = false;; all = listInterfaces(/*withDown=*/true)) {
      bool anyUp = false;
      otherFamily = false;
      for (const NetIf& n : all) {
        if (std::find(rails.begin(), rails.end(), n.name) == rails.end() || n.down) continue;
        if (familyAllowed(cfg, n)) {
          anyUp = true;
        } else {
          otherFamily = true;
        }
      }
      if (anyUp || otherFamily || Clock::now() >= until) break;
      BRAID_TRY(checkAbandon());
      if (!told) {
        LOG_WARN(kNet,
                 "BRAID_RAILS='{}': no rail has a link and an address yet: waiting up to {} ms",
                 cfg.rails, cfg.timeoutMs);
        told = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::vector<std::string> down, gone;
    for (const std::string& name : rails) {
      auto it = std::find_if(all.begin(), all.end(), [&](const NetIf& n) {
        return n.name == name && familyAllowed(cfg, n);
      });
      if (it == all.end()) {
        // A rail without an address when the job starts is left out, as NCCL leaves out a
        // port that is not active: the job runs on the others (peers pair NICs by name, so
        // they leave it out too).
        gone.push_back(name);
        continue;
      }
      // A rail that has its address but no link is kept: its paths start dead, and the
      // background probes make them once the link is back.
      if (it->down) down.push_back(name);
      if (name == mine) *primary = static_cast<int>(out->size());
      add(*it);
    }
    auto firstUp = std::find_if(out->begin(), out->end(), [](const NetIf& n) { return !n.down; });
    if (firstUp == out->end() && otherFamily) {
      return invalidArgument(fmt::format("BRAID_RAILS='{}': no rail has an address of {}",
                                         cfg.rails, cfg.socketFamily));
    }
    if (firstUp == out->end()) {
      return timeoutError(fmt::format(
          "BRAID_RAILS='{}': no rail came up with a link and an address within {} ms{}{}",
          cfg.rails, cfg.timeoutMs,
          cfg.socketFamily.empty() ? "" : fmt::format(" ({})", cfg.socketFamily),
          down.empty() ? "" : fmt::format(" ({} without a link)", fmt::join(down, ", "))));
    }
    // Its own rail left out: the first rail that is up becomes its own. Its own rail without
    // a link stays its own (primary): the other rails carry its traffic until it is up.
    const bool mineGone = std::find(gone.begin(), gone.end(), mine) != gone.end();
    const bool mineDown = std::find(down.begin(), down.end(), mine) != down.end();
    if (mineGone) *primary = static_cast<int>(firstUp - out->begin());
    if (!gone.empty()) {
      LOG_WARN(
          kNet, "rail(s) {} have no address at start: left out, this rank uses {} of {} rails{}",
          fmt::join(gone, ", "), out->size(), rails.size(),
          mineGone ? fmt::format(" ({} takes the traffic of its own rail {})", firstUp->name, mine)
                   : "");
    }
    if (!down.empty()) {
      LOG_WARN(kNet, "rail(s) {} have no link at start: their paths are made once the link is up{}",
               fmt::join(down, ", "),
               mineDown ? fmt::format(" (the other rails carry the traffic of its own rail {} "
                                      "meanwhile)",
                                      mine)
                        : "");
    }
    return Status::ok();
  }
  NetIf one;
  BRAID_TRY(chooseLocalAddress(cfg, nullptr, &one));
  out->push_back(one);
  return Status::ok();
}

}  // namespace braid
