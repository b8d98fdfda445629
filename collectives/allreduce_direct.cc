// The direct allreduce of two ranks that share memory (allreduce_direct.h).
#include "collectives/allreduce_direct.h"

#include <fmt/format.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/core/comm.h"
#include "src/engine/reduce.h"

namespace braid {
namespace {

// A chunk fits the core's cache next to its output: the peer's input is read into staging,
// reduced with this rank's into the output, and the output written on while still cached.
constexpr size_t kMaxChunk = 1 << 20;
// Smaller messages are cut in about this many chunks (of at least kMinChunk), so that both
// ranks get some. A CMA call costs a few microseconds whatever its size (kDirectMinBytes), so
// chunks stay large.
constexpr size_t kMinChunk = 128 << 10;
constexpr size_t kSpreadChunks = 8;
// The claim word: call number (24 bits) | next chunk from the front | end of the chunks not
// yet claimed from the back (20 bits each).
constexpr unsigned kIndexBits = 20;
constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
constexpr uint64_t kCallMask = (uint64_t{1} << 24) - 1;
// Out of place on both ranks, from this size on, the own output is written with non-temporal
// stores (reduceStreaming) where there is a kernel for the type and op: larger than the
// caches, its lines would otherwise be read from memory only to be overwritten (float32 sum,
// 2 ranks: 16 MiB +10%, 64 MiB +6%, 256 MiB +5%; float16 +4%, bfloat16 even; at 4 MiB, whose
// output stays cached, -10%: benchmarks/results/2026-12-07-zen5-direct-nt).
constexpr size_t kStreamMinBytes = 16 << 20;
// Chunks per work() call (each takes well under a millisecond).
constexpr int kChunksPerPass = 8;

uint64_t claimWord(uint64_t call, uint64_t front, uint64_t back) {
  return (call & kCallMask) << (2 * kIndexBits) | front << kIndexBits | back;
}
uint64_t callOf(uint64_t w) { return w >> (2 * kIndexBits); }
uint64_t frontOf(uint64_t w) { return (w >> kIndexBits) & kIndexMask; }
uint64_t backOf(uint64_t w) { return w & kIndexMask; }
// Whether the word was set up for `call` (its low 24 bits) and not retired since.
bool setUpFor(uint64_t w, uint64_t call) {
  return callOf(w) == (call & kCallMask) && frontOf(w) <= backOf(w);
}

// Copies len bytes between this process and the peer's (read: peer -> local). Either call may
// copy less than asked (a page boundary the kernel stopped at): it goes on from there.
bool cma(bool read, int pid, char* local, uint64_t remote, size_t len, int* err) {
  while (len > 0) {
    iovec l{local, len};
    iovec r{reinterpret_cast<void*>(remote), len};
    ssize_t n =
        read ? process_vm_readv(pid, &l, 1, &r, 1, 0) : process_vm_writev(pid, &l, 1, &r, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *err = n < 0 ? errno : EFAULT;
      return false;
    }
    local += n;
    remote += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool directAllReduceApplies(const CollArgs& a, const FastBoxes& fb, int me, int nranks) {
  if (a.kind != CollKind::kAllReduce || nranks != 2) return false;
  const FastLink& link = fb.links[1 - me];
  const size_t bytes = a.count * dtypeSize(a.dt);
  return link.direct && link.claim != nullptr && fb.capacity >= sizeof(DirectBuffers) &&
         bytes > fb.capacity && bytes >= kDirectMinBytes;
}

DirectBuffers directBuffersIn(const FastBox& b) {
  DirectBuffers d;
  std::memcpy(&d, b.data(), sizeof d);
  return d;
}

DirectAllReduce::DirectAllReduce(const CollArgs& a, Comm* comm, int peer, uint64_t call,
                                 const FastLink& link)
    : a_(a),
      comm_(comm),
      me_(comm->rank()),
      peer_(peer),
      call_(call),
      link_(link),
      esz_(dtypeSize(a.dt)),
      bytes_(a.count * esz_) {
  // Whole elements per chunk, a multiple of the cache line where the element size allows, and
  // few enough chunks for the claim word.
  size_t chunk = std::clamp(bytes_ / kSpreadChunks, kMinChunk, kMaxChunk);
  chunk = std::max(chunk, (bytes_ + kIndexMask - 1) / kIndexMask);
  const size_t unit = 64 % esz_ == 0 ? 64 : esz_;
  chunkBytes_ = (chunk + unit - 1) / unit * unit;
  chunks_ = (bytes_ + chunkBytes_ - 1) / chunkBytes_;
}

void DirectAllReduce::start(const DirectBuffers& theirs) {
  theirs_ = theirs;
  // Both ranks choose alike (both look at both boxes), so that every chunk of a call goes
  // through the same kernel whichever rank claims it: the streaming kernel's NaN payloads may
  // differ from the plain one's, and results must not depend on who was faster.
  stream_ = bytes_ >= kStreamMinBytes && a_.send != a_.recv && theirs.send != theirs.recv &&
            canReduceStreaming(a_.dt, a_.op);
}

DirectBuffers DirectAllReduce::mine() const {
  return DirectBuffers{reinterpret_cast<uint64_t>(a_.send), reinterpret_cast<uint64_t>(a_.recv),
                       bytes_};
}

bool DirectAllReduce::claim(size_t* chunk) {
  uint64_t w = link_.claim->load(std::memory_order_seq_cst);
  for (;;) {
    if (!setUpFor(w, call_)) {
      // An earlier call's word (retired, or not yet: the peer has not claimed in this call):
      // this rank starts this call. A later call cannot be there: the peer starts one only
      // after this rank said it finished the chunks of this one.
      const uint64_t init = claimWord(call_, 0, chunks_);
      if (link_.claim->compare_exchange_weak(w, init, std::memory_order_seq_cst)) w = init;
      continue;
    }
    const uint64_t front = frontOf(w), back = backOf(w);
    if (front == back) return false;
    const bool fromFront = me_ < peer_;
    const uint64_t next =
        fromFront ? claimWord(call_, front + 1, back) : claimWord(call_, front, back - 1);
    if (link_.claim->compare_exchange_weak(w, next, std::memory_order_seq_cst)) {
      *chunk = fromFront ? front : back - 1;
      return true;
    }
  }
}

void DirectAllReduce::retire() {
  // Both ranks are past their last claim of this call. The word is marked retired (front
  // past back) so that a call whose number matches this one's in 24 bits, 2^24 fast-box calls
  // on, starts afresh instead of finding nothing left. The peer may already have set the word
  // up for its next call: that is left alone.
  const uint64_t retired = claimWord(call_, 1, 0);
  uint64_t w = link_.claim->load(std::memory_order_seq_cst);
  while (callOf(w) == (call_ & kCallMask) && w != retired) {
    if (link_.claim->compare_exchange_weak(w, retired, std::memory_order_seq_cst)) return;
  }
}

Status DirectAllReduce::copyChunk(size_t chunk) {
  thread_local std::vector<char> staging;
  if (staging.size() < chunkBytes_) staging.resize(std::max(chunkBytes_, kMaxChunk));
  const size_t off = chunk * chunkBytes_, len = std::min(chunkBytes_, bytes_ - off);
  char* tmp = staging.data();
  int err = 0;
  auto failed = [&](const char* what, const char* call) {
    return systemError(
        fmt::format("allreduce (direct): {} {} bytes at offset {} of {}'s buffer ({}): {}{}", what,
                    len, off, comm_->transport()->peerName(peer_), call, std::strerror(err),
                    err == ESRCH ? " (the process is gone)" : ""));
  };
  if (!cma(true, link_.peerPid, tmp, theirs_.send + off, len, &err)) {
    return failed("reading", "process_vm_readv");
  }
  char* out = static_cast<char*>(a_.recv) + off;
  const char* in = static_cast<const char*>(a_.send) + off;
  const size_t count = len / esz_;
  // Lower rank's contribution first, whichever rank reduces: both get the same bits.
  const char* first = me_ < peer_ ? in : tmp;
  const char* second = me_ < peer_ ? tmp : in;
  char* result = out;
  if (stream_) {
    // The result stays in staging too, from where it is written to the peer.
    reduceStreaming(out, tmp, first, second, count, a_.dt, a_.op);
    result = tmp;
  } else {
    reduceBuffers(out, first, second, count, a_.dt, a_.op);
    if (a_.op == braidAvg) finishAvg(out, count, a_.dt, 2);
  }
  if (!cma(false, link_.peerPid, result, theirs_.recv + off, len, &err)) {
    return failed("writing", "process_vm_writev");
  }
  return Status::ok();
}

bool DirectAllReduce::work(Status* err) {
  if (finished_) return true;
  for (int i = 0; i < kChunksPerPass; ++i) {
    size_t chunk = 0;
    if (!claim(&chunk)) {
      finished_ = true;
      link_.workedOut->store(call_, std::memory_order_release);
      return true;
    }
    // Claimed, then looked: a peer that stopped before this claim is seen here (it stores,
    // then looks at the claims; see stop()), and nothing is written into its buffer.
    if (peerStopped()) {
      stop();
      return false;
    }
    if (Status s = copyChunk(chunk); !s.isOk()) {
      *err = std::move(s);
      return false;
    }
    ++done_;
  }
  return false;
}

bool DirectAllReduce::stop() {
  finished_ = true;
  link_.stoppedOut->store(call_, std::memory_order_seq_cst);
  // The peer claims, then looks for this flag: while no chunk of this call was claimed (the
  // word was not set up for it), it will see the flag before it writes anything.
  return setUpFor(link_.claim->load(std::memory_order_seq_cst), call_);
}

bool DirectAllReduce::peerStopped() const {
  return link_.stoppedIn->load(std::memory_order_seq_cst) == call_;
}

bool DirectAllReduce::peerFinished() const {
  return link_.workedIn->load(std::memory_order_acquire) >= call_;
}

}  // namespace braid
