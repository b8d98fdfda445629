#include "src/core/handles.h"

#include <fmt/format.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <unordered_set>

#include "src/core/comm.h"
#include "src/core/log.h"

namespace braid {
namespace {

struct HandleTable {
  std::mutex mu;
  std::unordered_set<const void*> live;
  // Destroyed handles are kept (emptied) for a while, so that their addresses are not given
  // to new handles at once: a stale handle (a watchdog's braidCommAbort after the process
  // group was made again) is then refused instead of acting on the new communicator. 64Ki
  // handles of 16 bytes at most; the oldest is freed first.
  std::deque<braidComm*> retiredComms;
  std::deque<braidStream*> retiredStreams;
};

HandleTable& table() {
  static HandleTable* t = new HandleTable();
  return *t;
}

constexpr size_t kRetiredKept = size_t{1} << 16;

template <typename H>
void retire(std::deque<H*>* q, H* h) {
  auto impl = std::move(h->impl);  // let go of after the lock
  H* oldest = nullptr;
  {
    std::lock_guard<std::mutex> lock(table().mu);
    q->push_back(h);
    if (q->size() > kRetiredKept) {
      oldest = q->front();
      q->pop_front();
    }
  }
  delete oldest;
}

thread_local std::string tlsLastError;

// Counts the fork()s this process descends from (the child's handler runs in the child only).
// The handle table's lock is held across fork(), so that a child forked while another thread
// looked a handle up does not find it locked forever (its first call would hang instead of
// being refused).
std::atomic<uint64_t> gForks{0};
const int kAtForkRegistered = pthread_atfork([] { table().mu.lock(); }, [] { table().mu.unlock(); },
                                             [] {
                                               table().mu.unlock();
                                               gForks.fetch_add(1);
                                             });

}  // namespace

uint64_t forkGeneration() {
  (void)kAtForkRegistered;
  return gForks.load(std::memory_order_relaxed);
}

void registerHandle(const void* h) {
  std::lock_guard<std::mutex> lock(table().mu);
  table().live.insert(h);
}

bool unregisterHandle(const void* h) {
  std::lock_guard<std::mutex> lock(table().mu);
  return table().live.erase(h) == 1;
}

void retireHandle(braidComm* h) { retire(&table().retiredComms, h); }
void retireHandle(braidStream* h) { retire(&table().retiredStreams, h); }

bool handleAlive(const void* h) {
  std::lock_guard<std::mutex> lock(table().mu);
  return table().live.count(h) == 1;
}

Status lookupComm(braidComm_t c, std::shared_ptr<Comm>* out) {
  if (c == nullptr) return invalidArgument("comm is NULL");
  std::lock_guard<std::mutex> lock(table().mu);
  if (table().live.count(c) == 0) {
    return invalidUsage("comm is not a live communicator (destroyed, aborted, or never created)");
  }
  if (c->impl->forkGeneration() != forkGeneration()) {
    // A child of fork(): the communicator's threads, connections and shared memory are its
    // parent's. Using it would join the parent's calls (wrong results on the peers), and
    // destroying it would wait for threads the child does not have.
    return invalidUsage(
        fmt::format("comm was created by process {} before a fork(): a child process cannot use or "
                    "destroy its parent's communicators (it may create its own)",
                    c->impl->creatorPid()));
  }
  *out = c->impl;
  return Status::ok();
}

Status lookupStream(braidStream_t s, std::shared_ptr<StreamQueue>* out) {
  out->reset();
  if (s == nullptr) return Status::ok();
  std::lock_guard<std::mutex> lock(table().mu);
  if (table().live.count(s) == 0) {
    return invalidUsage("stream is not a live stream (destroyed or never created)");
  }
  if (s->impl->forkGeneration() != forkGeneration()) {
    return invalidUsage(
        "stream was created before a fork(): a child process cannot use or destroy its "
        "parent's streams (its worker thread is the parent's)");
  }
  *out = s->impl;
  return Status::ok();
}

braidResult_t report(const Status& s, const std::shared_ptr<Comm>& comm) {
  if (s.isOk()) return braidSuccess;
  tlsLastError = s.message();
  if (comm) comm->setLastError(s.message());
  LOG_DEBUG(kInit, "returning {}: {}", braidGetErrorString(s.code()), s.message());
  return s.code();
}

const char* threadLastError() { return tlsLastError.c_str(); }

}  // namespace braid
