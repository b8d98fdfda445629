// Catches collective calls that differ between ranks: another collective, count, datatype, op
// or root (every rank must make the same collective calls in the same order). Every call's
// tags carry a 16-bit signature of what the ranks must agree on, so that a message of a
// different call never matches a receive; the transports report each message that arrives
// before its receive, and its signature is compared with this rank's call of the same number.
// A difference fails the communicator at once, naming the peer and this rank's call, where
// both sides would otherwise wait for each other until BRAID_TIMEOUT_MS (or, with equal sizes,
// combine data of different calls). Calls that send nothing (fast boxes, count 0) are recorded
// too: a peer that sent messages for such a call made a different one.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "collectives/algorithms.h"
#include "src/core/status.h"

namespace braid {

// Tag layout. Point-to-point: bit 63 set, bits 24..62 the per-peer sequence, bits 0..23 the
// slot. Collectives: bit 63 clear, bits 47..62 the call's signature, bits 24..46 the call's
// number, bits 0..23 the slot (the algorithm's message index).
constexpr int kSlotBits = 24;
constexpr uint64_t kP2pBit = uint64_t{1} << 63;
constexpr int kSigShift = 47;
constexpr uint64_t kCallSeqMask = (uint64_t{1} << (kSigShift - kSlotBits)) - 1;

class CallCheck {
 public:
  // peerName: "rank 3 (host)", for messages.
  explicit CallCheck(std::function<std::string(int)> peerName) : peerName_(std::move(peerName)) {}

  // Records this rank's call number `seq` (its full counter; taken in call order) making the call
  // `a` (`internal`: braid's own exchange, e.g. "commSplit", described by that name) and
  // returns the call's tag base.
  uint64_t record(uint64_t seq, const CollArgs& a, const char* internal = nullptr);
  // Whether a message already reported (arrived) for the call with this tag base was sent for
  // a different call: the error saying so, else ok.
  Status check(uint64_t tagBase) const;
  // A message that arrived before its receive was posted (on the progress loop): the error
  // when it belongs to a call this rank has made differently, else ok.
  Status onArrival(int peer, uint64_t tag);
  // The full call number of a collective call's tag base.
  uint64_t callOf(uint64_t tagBase) const { return widen((tagBase >> kSlotBits) & kCallSeqMask); }
  // This rank's call number `seq` (a full number)'s signature, if it made that call.
  bool signatureOf(uint64_t seq, uint16_t* sig) const;
  // The description of this rank's call for messages ("allreduce of 1024 x float32, sum").
  std::string describe(uint64_t seq) const;

 private:
  static constexpr size_t kRing = 256;
  // Records hold full call numbers (a tag has the low 23 bits): a record left in a slot for
  // 2^23 calls cannot pass for a new one.
  uint64_t widen(uint64_t seq) const;
  std::atomic<uint64_t> latest_{0};
  struct Mine {
    std::atomic<uint64_t> stamp{0};  // (seq << 16 | sig) << 1 | 1, seq the full number; 0 = none
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> what{0};  // kind | dt << 8 | op << 16 | root << 32
    std::atomic<const char*> internal{nullptr};
  };
  struct Theirs {
    std::atomic<uint64_t> stamp{0};
    std::atomic<int> peer{-1};
  };
  Status mismatch(int peer, uint64_t seq) const;

  std::function<std::string(int)> peerName_;
  std::array<Mine, kRing> mine_;
  std::array<Theirs, kRing> theirs_;
};

}  // namespace braid
