#include "src/topology/machine.h"

#include <fmt/format.h>
#include <hwloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory>

#include "src/bootstrap/socket_util.h"

namespace braid {
namespace {

struct TopoDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using Topo = std::unique_ptr<hwloc_topology, TopoDeleter>;

const char* osdevKind(hwloc_obj_osdev_type_t t) {
  switch (t) {
    case HWLOC_OBJ_OSDEV_NETWORK:
      return "network";
    case HWLOC_OBJ_OSDEV_OPENFABRICS:
      return "openfabrics";
    case HWLOC_OBJ_OSDEV_GPU:
      return "gpu";
    case HWLOC_OBJ_OSDEV_COPROC:
      return "coproc";
    default:
      return nullptr;
  }
}

PciDevice describe(hwloc_topology_t topo, hwloc_obj_t dev, const char* kind) {
  PciDevice d;
  d.name = dev->name != nullptr ? dev->name : "?";
  d.kind = kind;
  for (hwloc_obj_t p = dev->parent; p != nullptr; p = p->parent) {
    if (p->type == HWLOC_OBJ_PCI_DEVICE) {
      const auto& pci = p->attr->pcidev;
      d.pciBus = fmt::format("{:04x}:{:02x}:{:02x}.{:x}", pci.domain, pci.bus, pci.dev, pci.func);
      break;
    }
  }
  hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, dev);
  if (anc != nullptr && anc->nodeset != nullptr) d.numa = hwloc_bitmap_first(anc->nodeset);
  return d;
}

}  // namespace

namespace {

// See discoverOnce. Only written: "used" keeps the optimizer from dropping it and its store,
// so that leak checkers (ASan's, valgrind) in programs linking braid see the topology held.
[[gnu::used]] hwloc_topology_t gKeptTopology = nullptr;

Status discoverOnce(MachineInfo* out) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) {
    return systemError(fmt::format("hwloc_topology_init: {}", std::strerror(errno)));
  }
  Topo topo(raw);
  hwloc_topology_set_io_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  // Linux's own backend finds PCI devices and their NICs/disks through sysfs. The libpciaccess
  // backend adds only vendor and device names, parsing pci.ids when installed (a second under
  // sanitizers), and the gl/opencl plugins probe X displays and OpenCL drivers: not needed.
  for (const char* c : {"pci", "gl", "opencl"}) {
    hwloc_topology_set_components(raw, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, c);
  }
  if (hwloc_topology_load(raw) != 0) {
    return systemError(fmt::format("hwloc_topology_load: {}", std::strerror(errno)));
  }
  MachineInfo m;
  m.numaNodes = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_NUMANODE);
  m.packages = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_PACKAGE);
  m.cores = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_CORE);
  m.threads = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_PU);
  for (hwloc_obj_t o = hwloc_get_next_osdev(raw, nullptr); o != nullptr;
       o = hwloc_get_next_osdev(raw, o)) {
    const char* kind = osdevKind(o->attr->osdev.type);
    if (kind == nullptr) continue;
    PciDevice d = describe(raw, o, kind);
    bool gpu =
        o->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU || o->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC;
    (gpu ? m.gpus : m.nics).push_back(std::move(d));
  }
  *out = std::move(m);
  // Kept for the life of the process: loading costs tens of milliseconds, and destroying the
  // last topology unloads hwloc's I/O plugins, which drops (leaks) their global state.
  gKeptTopology = topo.release();
  return Status::ok();
}

}  // namespace

Status discoverMachine(MachineInfo* out) {
  static const auto result = [] {
    std::pair<Status, MachineInfo> r;
    r.first = discoverOnce(&r.second);
    return r;
  }();
  if (!result.first.isOk()) return result.first;
  *out = result.second;
  return Status::ok();
}

std::string hostIdentity() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown-host");
  const std::string boot = readProcLine("/proc/sys/kernel/random/boot_id");
  std::string id = boot.empty() ? std::string(host) : fmt::format("{}/{}", host, boot.substr(0, 8));
  // Processes in different network namespaces (emulated hosts, containers) cannot share
  // abstract sockets: they count as different hosts.
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) == 0) id += fmt::format("/net{}", st.st_ino);
  return id;
}

}  // namespace braid
