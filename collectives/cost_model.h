// The alpha-beta cost model: a message of b bytes over a link costs alpha + b / bandwidth, a
// reduction costs bytes / reduce bandwidth. Links are the node's internal one (shared memory)
// and the one between nodes, from the topology file's "links" where it says, else defaults
// measured on a 2-core VM for shm and TCP. Every collective takes the applicable algorithm
// the model predicts fastest (size rules decide applicability where the model is too coarse:
// Bruck and the binomial trees for small messages); `braid-info --explain COLL SIZE` prints
// every candidate's prediction.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "collectives/algorithms.h"
#include "src/core/config.h"
#include "src/topology/nodes.h"

namespace braid {

struct LinkCost {
  double alphaUs = 0;
  double gbitPerS = 0;
  double us(double bytes) const { return alphaUs + bytes * 8 / (gbitPerS * 1e3); }
};

struct CostModel {
  LinkCost intra, inter;
  double reduceGBps = 5;  // GB/s of a reduction kernel (one input streamed)
};

// intra: shared memory when BRAID_TRANSPORTS allows it, else TCP; inter: TCP. The topology
// file's link rates replace the defaults.
CostModel costModel(const Config& cfg, const NodeMap& nm);

struct Candidate {
  const char* algo = nullptr;
  double us = 0;
  bool applies = false;
};
using Candidates = std::array<Candidate, 4>;  // unused slots have algo == nullptr

// The algorithms of `kind` for one call: bytes is the message (allreduce, broadcast, reduce)
// or one rank's block (allgather, reduce-scatter, all-to-all). No allocation: the selector
// runs it on every call.
Candidates predict(CollKind kind, const Config& cfg, const CostModel& m, const NodeMap& nm,
                   size_t bytes);
// The fastest applicable one (ties to the earlier, simpler one).
const char* cheapest(const Candidates& c);
// What a candidate's prediction is made of, or why it does not apply (for --explain).
std::string explainCandidate(CollKind kind, const Candidate& c, const Config& cfg,
                             const NodeMap& nm);

// The pipeline chunk: BRAID_CHUNK_BYTES, else 1 MiB when shared memory carries every step
// (the chunks then stay in cache between the copy and the reduction), else 4 MiB (fewer
// per-message costs on the network).
size_t chunkBytes(const Config& cfg, const NodeMap& nm);

}  // namespace braid
