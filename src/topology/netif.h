// Network interface discovery and choice (BRAID_SOCKET_IFNAME, BRAID_SOCKET_FAMILY).
#pragma once

#include <string>
#include <vector>

#include "src/bootstrap/socket_util.h"
#include "src/core/config.h"

namespace braid {

struct NetIf {
  std::string name;
  SockAddr addr;  // port 0
  // Without a link (not up, or no carrier) though it has an address: a rail that is down when
  // the job starts; its paths start dead and are made once it comes up.
  bool down = false;
};

// Usable (up, with an address) interfaces in the order the system lists them; withDown: also
// those with an address that are down or have no carrier, marked down.
std::vector<NetIf> listInterfaces(bool withDown = false);

// True when ifname matches the NCCL-style spec: comma list of prefixes; a leading '^' excludes
// the listed ones; a leading '=' (after '^' if any) asks for exact names.
bool ifnameMatches(const std::string& spec, const std::string& ifname);

// Chooses the local address to listen on. With BRAID_SOCKET_IFNAME set, the first matching
// interface; else the interface on the same subnet as `reach` (when given), else the first
// non-loopback, non-docker interface, else loopback. A loopback `reach` picks loopback.
Status chooseLocalAddress(const Config& cfg, const SockAddr* reach, NetIf* out);

// This process's rank within its node as the launcher says (BRAID_LOCAL_RANK, LOCAL_RANK,
// OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID), or -1.
int launcherLocalRank();

// The node's network NICs (hwloc) that have an address (up or not), ordered by NUMA node then
// PCI address: the rails BRAID_RAILS=auto uses.
std::vector<std::string> discoveredRails();
// The rails BRAID_RAILS gives: its list, "none", or with "auto" (the default) the discovered
// NICs when there are two or more (else none).
std::vector<std::string> configuredRails(const Config& cfg);

// The interface of this rank's rail: with BRAID_RAILS = "r0,r1,..." (interfaces in rail
// order, or "auto") local rank i uses rail i mod R. Empty when no rails are configured or
// BRAID_SOCKET_IFNAME chooses for this rank. An error when the local rank is unknown.
Status railInterface(const Config& cfg, int localRank, std::string* ifname);

// Every NIC this rank may send on, in rail order, and which is its own (primary): the rails
// (BRAID_RAILS, local rank i owns rail i mod R), or every interface BRAID_SOCKET_IFNAME matches
// (one address per interface), or the one chooseLocalAddress picks. A rail without a link that
// has an address is listed marked down (and stays the primary if it is this rank's own); one
// without an address is left out (the primary is then the first rail that is up).
Status chooseNics(const Config& cfg, int localRank, std::vector<NetIf>* out, int* primary);

}  // namespace braid
