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
};

// Usable (up, with an address) interfaces in the order the system lists them.
std::vector<NetIf> listInterfaces();

// True when ifname matches the NCCL-style spec: comma list of prefixes; a leading '^' excludes
// the listed ones; a leading '=' (after '^' if any) asks for exact names.
bool ifnameMatches(const std::string& spec, const std::string& ifname);

// Chooses the local address to listen on. With BRAID_SOCKET_IFNAME set, the first matching
// interface; else the interface on the same subnet as `reach` (when given), else the first
// non-loopback, non-docker interface, else loopback. A loopback `reach` picks loopback.
Status chooseLocalAddress(const Config& cfg, const SockAddr* reach, NetIf* out);

}  // namespace braid
