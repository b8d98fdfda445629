#include "src/core/call_check.h"

#include <fmt/format.h>

#include "src/core/dtype.h"

namespace braid {
namespace {

// What every rank must pass alike. Calls that only move bytes compare the bytes (the same
// bytes under another element type move alike); reductions compare count, type and op;
// all-to-allv's counts differ between ranks by design.
uint16_t signature(const CollArgs& a, bool internal) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 0x100000001b3ULL;
    h ^= h >> 29;
  };
  mix(static_cast<uint64_t>(a.kind) + (internal ? 64 : 0));
  if (a.kind != CollKind::kAllToAllv && a.kind != CollKind::kBarrier) {
    if (collReduces(a.kind)) {
      mix(a.count);
      mix(static_cast<uint64_t>(a.dt));
      mix(static_cast<uint64_t>(a.op));
    } else {
      mix(a.count * dtypeSize(a.dt));
    }
  }
  if (collRooted(a.kind)) mix(static_cast<uint64_t>(static_cast<uint32_t>(a.root)));
  return static_cast<uint16_t>(h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48));
}

uint64_t stampOf(uint64_t seq, uint16_t sig) { return ((seq << 16 | sig) << 1) | 1; }
uint64_t seqOf(uint64_t stamp) { return stamp >> 17; }
uint16_t sigOf(uint64_t stamp) { return static_cast<uint16_t>(stamp >> 1); }

}  // namespace

uint64_t CallCheck::widen(uint64_t seq) const {
  // The full call number nearest to the last one recorded with these low bits (calls in
  // flight are never 2^22 apart).
  const uint64_t base = latest_.load(std::memory_order_relaxed);
  const uint64_t diff = (seq - base) & kCallSeqMask;
  return diff < (kCallSeqMask + 1) / 2 ? base + diff : base - ((kCallSeqMask + 1) - diff);
}

uint64_t CallCheck::record(uint64_t seq, const CollArgs& a, const char* internal) {
  latest_.store(seq, std::memory_order_relaxed);
  const uint16_t sig = signature(a, internal != nullptr);
  Mine& m = mine_[seq % kRing];
  m.count.store(a.count, std::memory_order_relaxed);
  m.what.store(static_cast<uint64_t>(a.kind) | static_cast<uint64_t>(a.dt) << 8 |
                   static_cast<uint64_t>(a.op) << 16 |
                   static_cast<uint64_t>(static_cast<uint32_t>(a.root)) << 32,
               std::memory_order_relaxed);
  m.internal.store(internal, std::memory_order_relaxed);
  // Sequentially consistent with onArrival's: either the arrival sees this record, or the
  // caller's check() sees the arrival.
  m.stamp.store(stampOf(seq, sig), std::memory_order_seq_cst);
  return uint64_t{sig} << kSigShift | (seq & kCallSeqMask) << kSlotBits;
}

Status CallCheck::check(uint64_t tagBase) const {
  const uint64_t seq = widen((tagBase >> kSlotBits) & kCallSeqMask);
  const auto sig = static_cast<uint16_t>(tagBase >> kSigShift);
  const Theirs& t = theirs_[seq % kRing];
  const uint64_t s = t.stamp.load(std::memory_order_seq_cst);
  if (s != 0 && seqOf(s) == seq && sigOf(s) != sig) {
    return mismatch(t.peer.load(std::memory_order_relaxed), seq);
  }
  return Status::ok();
}

Status CallCheck::onArrival(int peer, uint64_t tag) {
  if ((tag & kP2pBit) != 0) return Status::ok();
  const uint64_t seq = widen((tag >> kSlotBits) & kCallSeqMask);
  const auto sig = static_cast<uint16_t>(tag >> kSigShift);
  Theirs& t = theirs_[seq % kRing];
  const uint64_t before = t.stamp.load(std::memory_order_relaxed);
  if (before != 0 && seqOf(before) == seq) {
    // Another peer's message for the same call came first: two peers that disagree made
    // different calls, whatever this rank's is.
    if (sigOf(before) != sig) return mismatch(peer, seq);
  } else {
    t.peer.store(peer, std::memory_order_relaxed);
    t.stamp.store(stampOf(seq, sig), std::memory_order_seq_cst);
  }
  const uint64_t s = mine_[seq % kRing].stamp.load(std::memory_order_seq_cst);
  if (s != 0 && seqOf(s) == seq && sigOf(s) != sig) return mismatch(peer, seq);
  return Status::ok();
}

bool CallCheck::signatureOf(uint64_t seq, uint16_t* sig) const {
  const uint64_t s = mine_[seq % kRing].stamp.load(std::memory_order_acquire);
  if (s == 0 || seqOf(s) != seq) return false;
  *sig = sigOf(s);
  return true;
}

std::string CallCheck::describe(uint64_t seq) const {
  const Mine& m = mine_[seq % kRing];
  if (seqOf(m.stamp.load(std::memory_order_acquire)) != seq) return "not made yet";
  if (const char* internal = m.internal.load(std::memory_order_relaxed)) return internal;
  const uint64_t what = m.what.load(std::memory_order_relaxed);
  const auto kind = static_cast<CollKind>(what & 0xff);
  const auto dt = static_cast<braidDataType_t>((what >> 8) & 0xff);
  const auto op = static_cast<braidRedOp_t>((what >> 16) & 0xff);
  const auto root = static_cast<int32_t>(what >> 32);
  const uint64_t count = m.count.load(std::memory_order_relaxed);
  std::string s = collName(kind);
  if (kind == CollKind::kBarrier) return s;
  if (kind == CollKind::kAllToAllv) return s + fmt::format(" of {}", dtypeName(dt));
  s += fmt::format(" of {} x {}", count, dtypeName(dt));
  if (collReduces(kind)) s += fmt::format(", {}", opName(op));
  if (collRooted(kind)) s += fmt::format(", root {}", root);
  return s;
}

Status CallCheck::mismatch(int peer, uint64_t seq) const {
  return invalidUsage(fmt::format(
      "{} made a different collective call: its messages are not for this rank's call {} ({}) "
      "(every rank must make the same collective calls, with the same count, datatype, op and "
      "root, in the same order)",
      peerName_(peer), seq, describe(seq)));
}

}  // namespace braid
