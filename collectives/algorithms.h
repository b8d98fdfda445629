// Every algorithm turns one call into this rank's schedule. One algorithm per file; the
// selector (selector.cc) picks one by size and rank count, BRAID_ALGO overrides.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "braid/braid.h"
#include "src/core/dtype.h"
#include "src/core/status.h"
#include "src/engine/schedule.h"
#include "src/topology/nodes.h"

namespace braid {

enum class CollKind {
  kAllReduce,
  kBroadcast,
  kReduce,
  kAllGather,
  kReduceScatter,
  kAllToAll,
  kAllToAllv,
  kSend,
  kRecv,
  kBarrier
};
const char* collName(CollKind k);
// Whether the collective reduces (has an op), and whether it has a root.
bool collReduces(CollKind k);
bool collRooted(CollKind k);

struct CollArgs {
  CollKind kind = CollKind::kAllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  braidDataType_t dt = braidFloat32;
  braidRedOp_t op = braidSum;
  int root = 0;  // also the peer of send/recv
  // all-to-all(v), in elements (copied at call time).
  std::vector<size_t> sendcounts, sdispls, recvcounts, rdispls;
};

// Chooses the algorithm now (BRAID_ALGO was checked when the communicator was created); its
// steps are built when the schedule starts running, so queued calls hold neither steps nor
// scratch memory.
Status buildCollective(const CollArgs& a, Schedule* s);

// Small collectives through the shared-memory fast boxes (fastbox.cc). The choice depends only
// on what every rank agrees on (the call, the communicator, the configuration), never on
// streams or groups, so every rank makes the same one.
class Comm;
struct Config;
// Which collectives may use them (bit per CollKind): not those BRAID_ALGO forces.
uint32_t fastboxKinds(const Config& cfg);
bool fastboxApplies(const CollArgs& a, const Comm& comm);
// The call's number, taken in call order (when it is issued, not when it runs).
uint64_t fastboxNextCall(Comm& comm);
void fastboxSchedule(const CollArgs& a, uint64_t call, Schedule* s);
// A blocking call on the caller's thread, outside a group: runs it to its end (tagBase: the
// call's, from Comm::nextCollectiveTagBase).
Status fastboxRun(const CollArgs& a, Comm& comm, uint64_t tagBase);
// Whether BRAID_ALGO names an algorithm for this collective.
bool algorithmForced(const Config& cfg, CollKind kind);
// Every entry of BRAID_ALGO names a known collective and one of its algorithms (a bare name:
// an algorithm of some collective). Checked when a communicator is created.
Status checkAlgoSpec(const std::string& spec);
// The BRAID_ALGO entries that cannot run as asked on these nodes (a hierarchical or rail
// algorithm needs 2+ nodes of equal size, 2+ ranks each: otherwise its flat fallback runs),
// as "allreduce=hier, alltoall=rail"; empty when none.
std::string forcedButNotApplicable(const Config& cfg, const NodeMap& nm);

// Algorithms (rank and size come from the schedule's communicator).
void allReduceRing(const CollArgs& a, Schedule* s);
void allReduceHierarchical(const CollArgs& a, Schedule* s);
// Several nodes, all with the same number (> 1) of ranks: where the hierarchical one applies.
bool hierarchicalShape(const NodeMap& nm);

// A rank's place on the chain over the root's rail (the ranks with the root's local rank,
// one per node, in node order from the root's node): used by the hierarchical broadcast and
// reduce.
struct RootRail {
  int L = 0;              // ranks per node
  int local = 0;          // this rank's local rank
  int rootLocal = 0;      // the root's local rank: the rail
  int pos = 0;            // this rank's node's place on the chain (0: the root's node)
  int towardRoot = -1;    // the rail's rank of the previous node on the chain
  int awayFromRoot = -1;  // of the next node (-1: this node is the last)
  const std::vector<int>* node = nullptr;  // the ranks of this rank's node
};
RootRail rootRail(const NodeMap& nm, int me, int root);
void allReduceHalvingDoubling(const CollArgs& a, Schedule* s);
void allReduceRecursiveDoubling(const CollArgs& a, Schedule* s);
void broadcastBinomial(const CollArgs& a, Schedule* s);
void broadcastChain(const CollArgs& a, Schedule* s);
void broadcastHierarchical(const CollArgs& a, Schedule* s);
void reduceBinomial(const CollArgs& a, Schedule* s);
void reduceChain(const CollArgs& a, Schedule* s);
void reduceHierarchical(const CollArgs& a, Schedule* s);
void allGatherRing(const CollArgs& a, Schedule* s);
void allGatherBruck(const CollArgs& a, Schedule* s);
void allGatherHierarchical(const CollArgs& a, Schedule* s);
void reduceScatterHierarchical(const CollArgs& a, Schedule* s);
void allToAllRail(const CollArgs& a, Schedule* s);
void reduceScatterRing(const CollArgs& a, Schedule* s);
void allToAllPairwise(const CollArgs& a, Schedule* s);
void barrierDissemination(const CollArgs& a, Schedule* s);
void pointToPoint(const CollArgs& a, Schedule* s);

// A ring over some of the communicator's ranks: ranks[me] is this rank. Steps that read the
// input wait for every node of `after`; braidAvg divides by avgOver (0: the group's size).
struct RingGroup {
  std::vector<int> ranks;
  int me = 0;
  std::vector<NodeId> after;
  int avgOver = 0;
};
// The ring over this rank's rail: the ranks with its local rank, one per node, in node order.
RingGroup railGroup(const NodeMap& nm, int me);
// Ring allreduce of count elements over the group, message slots from *slotBase on (advanced
// past the ones used). finals (optional) receives the nodes that write out's final values.
void ringAllReduce(Schedule* s, const RingGroup& g, const char* in, char* out, size_t count,
                   braidDataType_t dt, braidRedOp_t op, uint32_t* slotBase,
                   std::vector<NodeId>* finals);

// Ring all-gather over the group: member m's block of count elements lives at blocks[m]
// (this rank's is in place once g.after are done). Returns, per member, the node after which
// its block is here.
std::vector<NodeId> ringAllGather(Schedule* s, const RingGroup& g, char* const* blocks,
                                  size_t count, size_t esz, uint32_t* slotBase);
// Ring reduce-scatter over the group: in holds one block of count elements per member
// (member order); out gets this rank's reduced block. Returns the node after which out is final.
NodeId ringReduceScatter(Schedule* s, const RingGroup& g, const char* in, char* out, size_t count,
                         braidDataType_t dt, braidRedOp_t op, uint32_t* slotBase);

// Near-equal partition of `count` items into `parts`: part i starts at partStart(i).
inline size_t partStart(size_t count, size_t parts, size_t i) {
  size_t base = count / parts, extra = count % parts;
  return i * base + std::min(i, extra);
}
inline size_t partSize(size_t count, size_t parts, size_t i) {
  return count / parts + (i < count % parts ? 1 : 0);
}
// Pipeline depth: chunks per piece of `maxElems` elements.
size_t chunksFor(size_t maxElems, size_t elemSize, const Schedule* s);

// A few chunk-sized scratch buffers used in turn: the next one is written only after the step
// that last read it (scratch stays a few chunks whatever the message size, and the chunks stay
// in cache). Deadlock-free when buffers are taken in an order that every step's dependencies
// (on this rank and, through messages, on the others) follow.
class RotatingBuffers {
 public:
  static constexpr size_t kCount = 4;
  // uses: how many chunks will go through them (fewer buffers when fewer chunks).
  RotatingBuffers(Schedule* s, size_t chunkBytes, size_t uses)
      : chunkBytes_(chunkBytes), lastUse_(std::min(uses, kCount), kNoNode) {
    if (uses > 0) base_ = static_cast<char*>(s->scratch(lastUse_.size() * chunkBytes + 64));
  }
  // The next buffer; *free: the node after which it may be written (kNoNode: now).
  char* next(NodeId* free) {
    cur_ = next_++ % lastUse_.size();
    *free = lastUse_[cur_];
    return base_ + cur_ * chunkBytes_;
  }
  // The node that reads the buffer returned last by next() for the last time.
  void readBy(NodeId last) { lastUse_[cur_] = last; }

 private:
  char* base_ = nullptr;
  size_t chunkBytes_;
  std::vector<NodeId> lastUse_;
  size_t next_ = 0, cur_ = 0;
};

inline int mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace braid
