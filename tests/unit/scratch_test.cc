// The scratch pool keeps buffers for reuse, but not one per size of calls that grow by steps.
#include "src/engine/scratch.h"

#include <gtest/gtest.h>

#include <memory>

namespace braid {
namespace {

// A size sweep (57..64 MiB by 1 MiB in the benchmark; here 1..1.9 MiB) kept a buffer for every
// step: 8 of them, 5 times the message. A new, larger buffer lets the smaller ones go.
TEST(ScratchPool, GrowingCallsKeepOneBufferNotOnePerSize) {
  auto pool = std::make_shared<ScratchPool>();
  const size_t mib = size_t{1} << 20;
  for (size_t k = 0; k < 10; ++k) {
    const size_t bytes = mib + k * mib / 10;
    { ScratchBuffer b = pool->get(bytes); }
    EXPECT_LE(pool->freeBytes(), bytes + 4096) << "after a call of " << bytes << " bytes";
  }
  // Smaller calls (at least half the kept buffer) reuse it; much smaller ones get their own.
  const size_t kept = pool->freeBytes();
  { ScratchBuffer b = pool->get(mib); }
  EXPECT_EQ(pool->freeBytes(), kept);
  { ScratchBuffer b = pool->get(4096); }
  EXPECT_EQ(pool->freeBytes(), kept + 4096);
  // Two buffers in use at once are both kept.
  { ScratchBuffer a = pool->get(mib), b = pool->get(mib); }
  EXPECT_GE(pool->freeBytes(), 2 * mib);
}

}  // namespace
}  // namespace braid
