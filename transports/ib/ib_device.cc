// RDMA device discovery: which ports BRAID_IB_HCA selects, their state, and the GID to use.
#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <net/if.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "src/core/log.h"
#include "transports/ib/ib_transport.h"

namespace braid::ib {
namespace {

struct DeviceList {
  ibv_device** list = nullptr;
  int n = 0;
  DeviceList() { list = ibv_get_device_list(&n); }
  ~DeviceList() {
    if (list != nullptr) ibv_free_device_list(list);
  }
};

struct Context {
  ibv_context* ctx = nullptr;
  explicit Context(ibv_device* d) : ctx(ibv_open_device(d)) {}
  ~Context() {
    if (ctx != nullptr) ibv_close_device(ctx);
  }
};

bool isV4Mapped(const ibv_gid& g) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(g.raw, prefix, sizeof prefix) == 0;
}

bool isZero(const ibv_gid& g) {
  for (uint8_t b : g.raw) {
    if (b != 0) return false;
  }
  return true;
}

const char* gidTypeName(uint32_t type) {
  switch (type) {
    case IBV_GID_TYPE_IB:
      return "IB";
    case IBV_GID_TYPE_ROCE_V1:
      return "RoCEv1";
    case IBV_GID_TYPE_ROCE_V2:
      return "RoCEv2";
  }
  return "unknown";
}

// Higher is better: RoCEv2 over v1, the wanted address family, global over link-local.
int gidScore(const ibv_gid_entry& e, bool wantV6) {
  if (isZero(e.gid)) return -1;
  int s = 0;
  if (e.gid_type == IBV_GID_TYPE_ROCE_V2) s += 100;
  const bool v4 = isV4Mapped(e.gid);
  if (v4 != wantV6) s += 10;
  const bool linkLocal = e.gid.raw[0] == 0xfe && (e.gid.raw[1] & 0xc0) == 0x80;
  if (!linkLocal) s += 1;
  return s;
}

Status chooseGid(const Config& cfg, ibv_context* ctx, const ibv_port_attr& pa, PortInfo* out) {
  if (cfg.ibGidIndex >= 0) {
    ibv_gid_entry e{};
    if (cfg.ibGidIndex >= pa.gid_tbl_len ||
        ibv_query_gid_ex(ctx, out->port, static_cast<uint32_t>(cfg.ibGidIndex), &e, 0) != 0 ||
        isZero(e.gid)) {
      return invalidArgument(
          fmt::format("BRAID_IB_GID_INDEX={}: {} has no such GID", cfg.ibGidIndex, out->name()));
    }
    out->gidIndex = static_cast<int>(cfg.ibGidIndex);
    out->gid = e.gid;
    out->gidKind = gidTypeName(e.gid_type);
    char ifname[IF_NAMESIZE] = {};
    if (e.ndev_ifindex != 0 && if_indextoname(e.ndev_ifindex, ifname) != nullptr) {
      out->netdev = ifname;
    }
    return Status::ok();
  }
  if (out->linkLayer != IBV_LINK_LAYER_ETHERNET) {
    // InfiniBand: addressed by LID; GID 0 (the port GID) for global routes.
    if (ibv_query_gid(ctx, static_cast<uint8_t>(out->port), 0, &out->gid) != 0) {
      return systemError(fmt::format("{}: cannot read GID 0", out->name()));
    }
    out->gidIndex = 0;
    out->gidKind = "IB";
    return Status::ok();
  }
  const bool wantV6 = cfg.socketFamily == "AF_INET6";
  int best = -1;
  // The valid entries in one call (a query per index costs a system call each, and GID tables
  // are mostly empty).
  ibv_device_attr da{};
  if (ibv_query_device(ctx, &da) != 0)
    return systemError(fmt::format("{}: cannot query", out->name()));
  std::vector<ibv_gid_entry> entries(static_cast<size_t>(std::max(1, pa.gid_tbl_len)) *
                                     std::max<size_t>(1, da.phys_port_cnt));
  const ssize_t n = ibv_query_gid_table(ctx, entries.data(), entries.size(), 0);
  for (ssize_t k = 0; k < n; ++k) {
    const ibv_gid_entry& e = entries[static_cast<size_t>(k)];
    if (static_cast<int>(e.port_num) != out->port) continue;
    int s = gidScore(e, wantV6);
    if (s <= best) continue;
    best = s;
    out->gidIndex = static_cast<int>(e.gid_index);
    out->gid = e.gid;
    out->gidKind =
        fmt::format("{} {}", gidTypeName(e.gid_type), isV4Mapped(e.gid) ? "IPv4" : "IPv6");
    char ifname[IF_NAMESIZE] = {};
    out->netdev.clear();
    if (e.ndev_ifindex != 0 && if_indextoname(e.ndev_ifindex, ifname) != nullptr) {
      out->netdev = ifname;
    }
  }
  if (best < 0) {
    return systemError(
        fmt::format("{}: RoCE port without a usable GID (no IP address on its "
                    "Ethernet interface?)",
                    out->name()));
  }
  return Status::ok();
}

}  // namespace

std::string PortInfo::name() const { return fmt::format("{}:{}", device, port); }

bool hcaMatches(const std::string& spec, const std::string& device, int port) {
  if (spec.empty()) return true;
  std::string_view s = spec;
  bool exclude = false, exact = false;
  if (!s.empty() && s.front() == '^') {
    exclude = true;
    s.remove_prefix(1);
  }
  if (!s.empty() && s.front() == '=') {
    exact = true;
    s.remove_prefix(1);
  }
  bool match = false;
  for (const std::string& item : splitList(s)) {
    std::string name = item;
    int wantPort = -1;
    size_t colon = item.find(':');
    if (colon != std::string::npos) {
      name = item.substr(0, colon);
      wantPort = std::atoi(item.c_str() + colon + 1);
    }
    bool nameOk = exact ? device == name : device.compare(0, name.size(), name) == 0;
    if (nameOk && (wantPort < 0 || wantPort == port)) match = true;
  }
  return exclude ? !match : match;
}

// BRAID_IB_HCA's items: a device name (prefix, or exact after '='), optionally ':port' with the
// port a number from 1.
Status checkHcaSpec(const std::string& spec) {
  std::string_view s = spec;
  if (!s.empty() && s.front() == '^') s.remove_prefix(1);
  if (!s.empty() && s.front() == '=') s.remove_prefix(1);
  const std::vector<std::string> items = splitList(s);
  if (!spec.empty() && items.empty()) {
    return invalidArgument(fmt::format("BRAID_IB_HCA='{}' names no device", spec));
  }
  for (const std::string& item : items) {
    const size_t colon = item.find(':');
    const std::string port = colon == std::string::npos ? "" : item.substr(colon + 1);
    if (item.empty() || colon == 0 ||
        (colon != std::string::npos &&
         (port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
          port.size() > 3 || std::atoi(port.c_str()) < 1))) {
      return invalidArgument(fmt::format(
          "BRAID_IB_HCA='{}': '{}' is not DEVICE or DEVICE:PORT (ports count from 1)", spec, item));
    }
  }
  return Status::ok();
}

namespace {

// Ports BRAID_IB_HCA names explicitly on `device` that it does not have.
std::vector<int> missingPorts(const std::string& spec, const std::string& device, int ports) {
  std::string_view s = spec;
  if (!s.empty() && s.front() == '^') return {};
  const bool exact = !s.empty() && s.front() == '=';
  if (exact) s.remove_prefix(1);
  std::vector<int> out;
  for (const std::string& item : splitList(s)) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) continue;
    const std::string name = item.substr(0, colon);
    const int port = std::atoi(item.c_str() + colon + 1);
    const bool named = exact ? device == name : device.compare(0, name.size(), name) == 0;
    if (named && port > ports) out.push_back(port);
  }
  return out;
}

// Whether this process may pin memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK, as root has).
bool mayLockUnlimited() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      const unsigned long long caps = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (caps >> 14) & 1;  // CAP_IPC_LOCK
    }
  }
  return false;
}

}  // namespace

// Whether the kernel exposes any verbs device: without one, libibverbs (which loads every
// provider library on its first call) is not asked at all, so machines without RDMA pay nothing.
static bool anyVerbsDevice() {
  DIR* d = opendir("/sys/class/infiniband_verbs");
  if (d == nullptr) return false;
  bool any = false;
  while (dirent* e = readdir(d)) {
    if (std::strncmp(e->d_name, "uverbs", 6) == 0) any = true;
  }
  closedir(d);
  return any;
}

Status discoverPorts(const Config& cfg, std::vector<PortInfo>* out, std::string* why) {
  out->clear();
  BRAID_TRY(checkHcaSpec(cfg.ibHca));
  if (!anyVerbsDevice()) {
    *why =
        "no RDMA devices (no /sys/class/infiniband_verbs/uverbs*: no InfiniBand/RoCE NIC, or "
        "its driver is not loaded)";
    return Status::ok();
  }
  DeviceList devs;
  if (devs.list == nullptr || devs.n == 0) {
    *why = devs.list == nullptr
               ? fmt::format("no RDMA devices ({})", std::strerror(errno))
               : "no RDMA devices (no InfiniBand/RoCE NIC, or its driver is not loaded)";
    return Status::ok();
  }
  std::vector<std::string> skipped;
  for (int i = 0; i < devs.n; ++i) {
    const std::string name = ibv_get_device_name(devs.list[i]);
    Context c(devs.list[i]);
    if (c.ctx == nullptr) {
      skipped.push_back(fmt::format("{}: cannot open ({})", name, std::strerror(errno)));
      continue;
    }
    ibv_device_attr da{};
    if (ibv_query_device(c.ctx, &da) != 0) {
      skipped.push_back(fmt::format("{}: cannot query", name));
      continue;
    }
    for (int port : missingPorts(cfg.ibHca, name, da.phys_port_cnt)) {
      skipped.push_back(fmt::format("{}: has no port {} (BRAID_IB_HCA; it has {})", name, port,
                                    static_cast<int>(da.phys_port_cnt)));
    }
    for (int port = 1; port <= da.phys_port_cnt; ++port) {
      PortInfo pi;
      pi.device = name;
      pi.port = port;
      if (!hcaMatches(cfg.ibHca, name, port)) {
        skipped.push_back(fmt::format("{}: not selected by BRAID_IB_HCA", pi.name()));
        continue;
      }
      ibv_port_attr pa{};
      if (ibv_query_port(c.ctx, static_cast<uint8_t>(port), &pa) != 0) {
        skipped.push_back(fmt::format("{}: cannot query", pi.name()));
        continue;
      }
      if (pa.state != IBV_PORT_ACTIVE) {
        skipped.push_back(fmt::format("{}: port {}", pi.name(), ibv_port_state_str(pa.state)));
        continue;
      }
      pi.linkLayer = pa.link_layer;
      pi.mtu = pa.active_mtu;
      pi.lid = pa.lid;
      Status s = chooseGid(cfg, c.ctx, pa, &pi);
      if (!s.isOk()) {
        if (cfg.ibGidIndex >= 0) return s;
        skipped.push_back(s.message());
        continue;
      }
      LOG_DEBUG(kIb, "ib: {} active, {} GID {} ({}{}), MTU {}", pi.name(),
                pi.linkLayer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand", pi.gidIndex,
                pi.gidKind, pi.netdev.empty() ? "" : " on " + pi.netdev, 128 << pi.mtu);
      out->push_back(std::move(pi));
    }
  }
  if (out->empty()) {
    std::string list;
    for (const auto& s : skipped) list += (list.empty() ? "" : "; ") + s;
    *why = "no usable RDMA port (" + list + ")";
    return Status::ok();
  }
  // A path registers its receive ring and its staging (BRAID_IB_SLOTS x BRAID_IB_SLOT_BYTES
  // each): under a lower RLIMIT_MEMLOCK not even one path can, and the job would fail at its
  // first connection; said here instead, so that BRAID_TRANSPORTS=ib,tcp takes tcp.
  rlimit rl{};
  const uint64_t perPath = 2 * static_cast<uint64_t>(std::max<int64_t>(0, cfg.ibSlots)) *
                           static_cast<uint64_t>(std::max<int64_t>(0, cfg.ibSlotBytes));
  if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < perPath && !mayLockUnlimited()) {
    out->clear();
    *why = fmt::format(
        "RLIMIT_MEMLOCK is {} KiB, less than the {} KiB one path registers (BRAID_IB_SLOTS x "
        "BRAID_IB_SLOT_BYTES, twice): raise it (`ulimit -l unlimited`, or memlock in "
        "/etc/security/limits.conf)",
        rl.rlim_cur >> 10, perPath >> 10);
  }
  return Status::ok();
}

}  // namespace braid::ib
