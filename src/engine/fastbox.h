// Fast boxes: one-way mailboxes in memory shared by two processes, two per direction (by the
// parity of the call number), for collectives small enough to be exchanged whole. A writer
// fills a box and publishes the call number with a release store; the reader polls that
// number, then sleeps on it with a futex once it has polled long enough. An 8-byte message
// and its header share one cache line. The shared-memory transport puts the boxes in the
// segment of each pair of ranks; collectives/fastbox.cc runs collectives over them.
//
// Reuse: calls run one at a time per communicator, in call order, and a rank writes call k
// into a peer's box only once the peer finished call k-2 (the previous use of that box). It
// knows so without asking when it read the peer's box of call k-1 (written only after the peer
// finished k-2); otherwise it reads the "done" counter the peer keeps in their segment. So
// collectives that exchange with every peer (allreduce) never wait for an acknowledgement,
// and rooted ones (broadcast) write and read only the boxes they need.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace braid {

struct FastBox {
  std::atomic<uint32_t> seq;      // the call whose contents are here (the writer's)
  std::atomic<uint32_t> waiting;  // the reader sleeps on seq (set and cleared by the reader)
  uint32_t bytes;                 // contents' size
  uint8_t kind, dtype, op;        // the writer's call, to tell mismatched calls apart
  uint8_t direct;                 // 1: the contents are a direct allreduce's buffers
  int32_t root;
  uint32_t reserved;

  char* data() { return reinterpret_cast<char*>(this) + sizeof(FastBox); }
  const char* data() const { return reinterpret_cast<const char*>(this) + sizeof(FastBox); }
};
static_assert(sizeof(FastBox) == 24);

// A spin-wait hint to the CPU.
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Bytes one box of `capacity` content bytes takes (a multiple of the cache line).
size_t fastBoxStride(size_t capacity);

// The boxes shared with one peer.
struct FastLink {
  FastBox* out[2] = {};                      // this rank writes (index: call number & 1)
  FastBox* in[2] = {};                       // the peer writes
  std::atomic<uint32_t>* doneOut = nullptr;  // the last call this rank finished (it writes)
  std::atomic<uint32_t>* doneIn = nullptr;   // the last call the peer finished
  // The direct allreduce of two ranks (collectives/allreduce_direct.cc): whether both ranks
  // may read and write each other's memory (CMA), the peer's process, the chunk claims both
  // sides take from (call number | next chunk from the front | end of the chunks from the
  // back), the last call whose chunks each side finished, and the last call in which each
  // side stopped short (a failure: it writes no more into the other's buffer).
  bool direct = false;
  int peerPid = 0;
  std::atomic<uint64_t>* claim = nullptr;
  std::atomic<uint64_t>* workedOut = nullptr;  // full 64-bit call numbers (FastBoxes::issued)
  std::atomic<uint64_t>* workedIn = nullptr;
  std::atomic<uint64_t>* stoppedOut = nullptr;
  std::atomic<uint64_t>* stoppedIn = nullptr;
  // Set (by the transport's loop) once the peer said goodbye: it destroyed its communicator
  // and writes no more boxes.
  const std::atomic<bool>* left = nullptr;
};

// Publishes call `seq` (contents written before) and wakes a sleeping reader.
void fastBoxPublish(FastBox* b, uint32_t seq);
// Sleeps until b->seq is `seq`, or at most `limit` (futex on the shared word).
void fastBoxSleep(FastBox* b, uint32_t seq, std::chrono::microseconds limit);

// A communicator's fast boxes: one link per peer (the own entry unused), and the call order.
struct FastBoxes {
  std::vector<FastLink> links;
  std::vector<uint32_t> seen;  // per peer: the last call whose box from it was read here
  size_t capacity = 0;
  // Call numbers handed out (at call time, in call order); the boxes carry their low 32 bits.
  std::atomic<uint64_t> issued{0};
  std::atomic<uint32_t> finished{0};  // the last call this rank completed (they run in order)
  uint32_t kinds = 0;                 // collectives that may use the boxes (bit per CollKind)
};

}  // namespace braid
