#include "src/engine/fastbox.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace braid {
namespace {

constexpr size_t kLine = 64;

// The boxes live in a MAP_SHARED mapping of two processes: the futex must not be private.
long futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* timeout) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, timeout, nullptr, 0);
}

}  // namespace

size_t fastBoxStride(size_t capacity) {
  return (sizeof(FastBox) + capacity + kLine - 1) & ~(kLine - 1);
}

void fastBoxPublish(FastBox* b, uint32_t seq) {
  // seq_cst store, then the reader's flag (the reader sets its flag, then reads seq): one of
  // the two sees the other, so a reader never sleeps through its message.
  b->seq.store(seq, std::memory_order_seq_cst);
  if (b->waiting.load(std::memory_order_seq_cst) != 0) {
    futex(&b->seq, FUTEX_WAKE, 1, nullptr);
  }
}

void fastBoxSleep(FastBox* b, uint32_t seq, std::chrono::microseconds limit) {
  const uint32_t seen = b->seq.load(std::memory_order_acquire);
  if (seen == seq) return;
  b->waiting.store(1, std::memory_order_seq_cst);
  if (b->seq.load(std::memory_order_seq_cst) == seen) {
    timespec ts{static_cast<time_t>(limit.count() / 1000000),
                static_cast<long>(limit.count() % 1000000) * 1000};
    futex(&b->seq, FUTEX_WAIT, seen, &ts);  // returns at once if seq moved meanwhile
  }
  b->waiting.store(0, std::memory_order_relaxed);
}

}  // namespace braid
