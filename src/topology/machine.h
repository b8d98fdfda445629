// What this machine has, from hwloc: NUMA nodes, cores, and the PCI NICs and GPUs with the NUMA
// node each hangs off. Used to place ranks on rails (issue 5) and shown by braid-info.
#pragma once

#include <string>
#include <vector>

#include "src/core/status.h"

namespace braid {

struct PciDevice {
  std::string name;    // OS name: eth0, mlx5_0, cuda0, ...
  std::string kind;    // "network", "openfabrics", "gpu", "coproc"
  std::string pciBus;  // "0000:17:00.0" ("" when not on PCI)
  int numa = -1;       // OS index of the closest NUMA node (-1 unknown)
};

struct MachineInfo {
  int numaNodes = 0, packages = 0, cores = 0, threads = 0;
  std::vector<PciDevice> nics;  // network and openfabrics devices
  std::vector<PciDevice> gpus;  // gpu and coproc devices
};

// Fails (with the reason) when hwloc cannot load the topology. Discovered once per process.
Status discoverMachine(MachineInfo* out);

// This host's identity for grouping ranks into nodes: hostname plus the kernel's boot id, so
// two containers on one kernel with different hostnames are not the same node, and one
// hostname reused by two machines is not either.
std::string hostIdentity();

}  // namespace braid
