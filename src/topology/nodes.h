// How the ranks of a job group into nodes (and local ranks into rails): from the ranks' host
// identities, or declared by a topology file (BRAID_TOPO_FILE) so that one machine can stand
// for several virtual nodes in tests and emulation.
#pragma once

#include <string>
#include <vector>

#include "src/core/status.h"

namespace braid {

struct LinkRate {
  double latencyUs = 0;  // 0: unknown (measure or assume)
  double gbps = 0;
};

struct NodeMap {
  std::vector<std::string> names;       // per node
  std::vector<std::vector<int>> ranks;  // per node, ascending
  std::vector<int> nodeOf;              // per rank
  int rails = 1;                        // NICs (rails) per node; local rank i uses rail i % rails
  LinkRate intra, inter;                // from the topology file, if it says

  int nranks() const { return static_cast<int>(nodeOf.size()); }
  int localRank(int rank) const;
  int localSize(int rank) const;
  int railOf(int rank) const { return localRank(rank) % rails; }
  bool sameNode(int a, int b) const { return nodeOf[a] == nodeOf[b]; }
};

// Ranks with equal identities share a node; nodes are numbered by their lowest rank.
NodeMap groupByHost(const std::vector<std::string>& hostIds);

// Parses a topology file for a job of `nranks` ranks. Two forms:
//   {"nodes": [{"name": "a", "ranks": [0, 1]}, {"name": "b", "ranks": [2, 3]}], "rails": 2}
//   {"nodes": 4, "ranks_per_node": 2, "rails": 2}      (contiguous blocks of ranks)
// plus optional "links": {"intra": {"latency_us": 1, "gbps": 200}, "inter": {...}}.
// Every rank must appear exactly once; errors name the file and what is wrong. nranks <= 0
// takes the job size from the file.
Status parseTopology(const std::string& text, const std::string& origin, int nranks, NodeMap* out);
Status loadTopologyFile(const std::string& path, int nranks, NodeMap* out);

}  // namespace braid
