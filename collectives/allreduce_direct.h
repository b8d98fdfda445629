// The direct allreduce of two ranks that share memory and may read and write each other's
// (CMA): a call of the fast boxes (fastbox.cc) whose boxes carry the two ranks' buffer
// addresses instead of data. The message is cut into chunks; each rank claims chunks from a
// word in the pair's segment (the lower rank from the front, the higher from the back, so the
// faster one takes more) and for each reads the peer's input into a small staging buffer
// (process_vm_readv), reduces it with its own into its output while both are in cache, and
// writes the result into the peer's output (process_vm_writev). Each byte is reduced once and
// crosses between the processes twice, as in the ring, but with no pass through memory in
// between and no rank waiting for a slower one's half. A call ends when both ranks finished
// their chunks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/algorithms.h"
#include "src/engine/fastbox.h"

namespace braid {

class Comm;

// Smaller allreduces take the ring or recursive doubling: a CMA call costs a few microseconds
// whatever its size (pinning the peer's pages: 2.5 us in a 2-vCPU KVM guest), more than their
// copies through the shared rings (benchmarks/results/2026-12-06-zen5-direct).
constexpr size_t kDirectMinBytes = 256 << 10;

// What a rank's box carries in a direct call.
struct DirectBuffers {
  uint64_t send = 0, recv = 0, bytes = 0;
};

// Whether an allreduce goes direct on a communicator of nranks with these fast boxes, this
// rank being `me` (every rank decides alike: the link's flags were settled by both sides when
// they connected).
bool directAllReduceApplies(const CollArgs& a, const FastBoxes& fb, int me, int nranks);
// The buffers a direct call's box carries.
DirectBuffers directBuffersIn(const FastBox& b);

class DirectAllReduce {
 public:
  // call: the fast-box call number, all 64 bits (the worked and stopped words hold it whole, so
  // that they never wrap).
  DirectAllReduce(const CollArgs& a, Comm* comm, int peer, uint64_t call, const FastLink& link);
  DirectBuffers mine() const;
  // The peer's box was read and matches this call: chunks may be claimed.
  void start(const DirectBuffers& theirs);
  // Claims and reduces chunks for up to about a millisecond; true once no chunk is left to
  // claim and this rank's are finished (the peer is then told). A failed copy sets *err.
  bool work(Status* err);
  bool peerFinished() const;
  // After peerFinished(): the claims of this call are over on both sides.
  void retire();
  // After a failure (or the peer's): this rank claims no more chunks and tells the peer it
  // stopped (its chunks may be missing: the peer's call fails too). True when the peer may
  // already be writing into this rank's buffer (chunks of this call were claimed): the call
  // must not return before peerFinished() or peerStopped().
  bool stop();
  bool peerStopped() const;
  size_t chunksDone() const { return done_; }  // by this rank
  size_t chunks() const { return chunks_; }

 private:
  bool claim(size_t* chunk);
  Status copyChunk(size_t chunk);

  CollArgs a_;
  Comm* comm_;
  int me_, peer_;
  uint64_t call_;
  FastLink link_;
  DirectBuffers theirs_;
  size_t esz_, bytes_, chunkBytes_, chunks_;
  size_t done_ = 0;
  bool finished_ = false;
  bool stream_ = false;  // set by start(): reduceStreaming into the output
};

}  // namespace braid
