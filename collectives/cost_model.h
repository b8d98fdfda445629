// The alpha-beta cost model: a message of b bytes over a link costs alpha + b / bandwidth, a
// reduction costs bytes / reduce bandwidth. Links are the node's internal one (shared memory)
// and the one between nodes, from the topology file's "links" where it says, else defaults
// measured on a 2-core VM for shm and TCP. allreduce takes the algorithm the model predicts
// fastest; `braid-info --explain` prints every candidate's prediction.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

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

struct Prediction {
  std::string algo;
  double us = 0;
  std::string why;  // the formula's terms, or why it does not apply
  bool applies = true;
};

// Every allreduce algorithm for `bytes` over this node map, in the selector's order.
std::vector<Prediction> predictAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes);
// The pipeline chunk: BRAID_CHUNK_BYTES, else 1 MiB when shared memory carries every step
// (the chunks then stay in cache between the copy and the reduction), else 4 MiB (fewer
// per-message costs on the network).
size_t chunkBytes(const Config& cfg, const NodeMap& nm);
// The fastest applicable one.
const char* cheapestAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes);

}  // namespace braid
