// The check of calls that differ between ranks (src/core/call_check.h) on synthetic calls and
// arrivals: which it reports, and that it never reports calls that agree.
#include "src/core/call_check.h"

#include <gtest/gtest.h>

#include <string>

namespace braid {
namespace {

CollArgs allreduce(size_t count, braidDataType_t dt = braidFloat32, braidRedOp_t op = braidSum) {
  CollArgs a;
  a.kind = CollKind::kAllReduce;
  a.count = count;
  a.dt = dt;
  a.op = op;
  return a;
}

CallCheck make() {
  return CallCheck([](int r) { return "rank " + std::to_string(r); });
}

TEST(CallCheck, SameCallsNeverReportAndDifferentOnesDoEitherWayRound) {
  CallCheck mine = make(), theirs = make();
  for (uint64_t seq = 0; seq < 1000; ++seq) {
    const CollArgs a = allreduce(100 + seq % 7);
    const uint64_t base = mine.record(seq, a);
    EXPECT_EQ(theirs.record(seq, a), base);
    // A peer's message after the call and before it.
    EXPECT_TRUE(mine.onArrival(1, base | 3).isOk());
    EXPECT_TRUE(mine.check(base).isOk());
  }
  // The message comes after the call: reported at arrival.
  const uint64_t base = mine.record(1000, allreduce(64));
  const uint64_t other = theirs.record(1000, allreduce(64, braidInt32));
  EXPECT_NE(base, other);
  Status s = mine.onArrival(2, other);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("rank 2 made a different collective call"), std::string::npos);
  EXPECT_NE(s.message().find("allreduce of 64 x float32, sum"), std::string::npos) << s.message();
  // The message comes first: reported when the call checks.
  const uint64_t early = theirs.record(1001, allreduce(64, braidFloat32, braidMax));
  EXPECT_TRUE(mine.onArrival(1, early).isOk());
  EXPECT_FALSE(mine.check(mine.record(1001, allreduce(64))).isOk());
  // Two peers' messages for one call that differ: whatever this rank's call is.
  const uint64_t x = theirs.record(1002, allreduce(8));
  EXPECT_TRUE(mine.onArrival(1, x).isOk());
  EXPECT_FALSE(mine.onArrival(3, x ^ (uint64_t{1} << kSigShift)).isOk());
  // Point-to-point tags are not collective calls.
  EXPECT_TRUE(mine.onArrival(1, kP2pBit | 12345).isOk());
}

TEST(CallCheck, AnArrivalLeftInASlotDoesNotMatchACall2To23CallsLater) {
  CallCheck mine = make(), theirs = make();
  // Call 5: a peer's message arrives early, for another call than this rank's (ignored here:
  // this rank never makes call 5 through the check), and stays in its slot.
  EXPECT_TRUE(mine.onArrival(1, theirs.record(5, allreduce(1))).isOk());
  // Calls go on (none of them with a message in that slot) until the tag's 23-bit number wraps.
  const uint64_t wrap = kCallSeqMask + 1;
  for (uint64_t seq = 6; seq < wrap + 5; seq += 251) mine.record(seq, allreduce(2));
  const uint64_t base = mine.record(wrap + 5, allreduce(2));
  EXPECT_TRUE(mine.check(base).isOk());
}

TEST(CallCheck, BytesDecideForCallsThatOnlyMoveThem) {
  CollArgs a;
  a.kind = CollKind::kAllGather;
  a.count = 16;
  a.dt = braidInt32;
  CollArgs b = a;
  b.dt = braidFloat32;  // the same bytes under another type: the same call
  CollArgs c = a;
  c.dt = braidInt64;  // twice the bytes
  CallCheck k = make();
  EXPECT_EQ(k.record(1, a), make().record(1, b));
  EXPECT_NE(k.record(2, a), make().record(2, c));
}

}  // namespace
}  // namespace braid
