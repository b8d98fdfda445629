// The re-hashing policy (transports/multipath/rehash.h) against synthetic flows: which flow it
// names, when, and when it must leave flows alone.
#include "transports/multipath/rehash.h"

#include <gtest/gtest.h>

#include <vector>

namespace braid::mp {
namespace {

constexpr int64_t kMs = 1'000'000;

// Flows sending at fixed rates (bytes per ms), ticked every 50 ms; what the policy names.
struct Bench {
  std::vector<int> group;
  std::vector<uint64_t> perMs;
  std::vector<bool> backlogged, usable;
  std::vector<uint64_t> bytes;
  RehashPolicy policy;
  int64_t now = 0;
  explicit Bench(std::vector<int> g, std::vector<uint64_t> rates)
      : group(g),
        perMs(std::move(rates)),
        backlogged(g.size(), true),
        usable(g.size(), true),
        bytes(g.size(), 0),
        policy(std::move(g), RehashOptions{}) {}
  // Runs for ms milliseconds; returns (time, path) of every path named.
  std::vector<std::pair<int64_t, int>> run(int64_t ms) {
    std::vector<std::pair<int64_t, int>> named;
    for (int64_t end = now + ms * kMs; now < end;) {
      now += 50 * kMs;
      for (size_t k = 0; k < bytes.size(); ++k) bytes[k] += perMs[k] * 50;
      std::vector<int> out;
      policy.sample(now, bytes, backlogged, usable, &out);
      for (int k : out) named.emplace_back(now, k);
    }
    return named;
  }
};

TEST(Rehash, ALaggingFlowIsNamedAfterTwoWindowsThenLeftAloneForTheHoldoff) {
  Bench b({0, 0}, {100'000, 40'000});  // 100 and 40 MB/s: 0.4 of the best sibling
  auto named = b.run(3000);
  ASSERT_GE(named.size(), 2u);
  for (const auto& [at, k] : named) EXPECT_EQ(k, 1);
  // The first window starts at the first tick (50 ms): lagging in the windows ending at 250 and
  // 450 ms, named at the second.
  EXPECT_EQ(named[0].first, 450 * kMs);
  // Then the holdoff (1 s), and two more windows lagging.
  EXPECT_GE(named[1].first - named[0].first, 1000 * kMs);
  EXPECT_LE(named[1].first - named[0].first, 1500 * kMs);
}

TEST(Rehash, FlowsWithinTheLagShareAreLeftAlone) {
  Bench b({0, 0, 0}, {100'000, 70'000, 61'000});
  EXPECT_TRUE(b.run(5000).empty());
}

TEST(Rehash, OnlyTheSlowestOfAGroupIsNamedAtATime) {
  Bench b({0, 0, 0, 0}, {100'000, 30'000, 20'000, 100'000});
  auto named = b.run(600);
  ASSERT_EQ(named.size(), 1u);
  EXPECT_EQ(named[0].second, 2);
}

TEST(Rehash, AFlowWithoutDataWaitingIsNotJudged) {
  // The sender had less for it than the network takes: its rate is the sender's, not the path's.
  Bench b({0, 0}, {100'000, 10'000});
  b.backlogged[1] = false;
  EXPECT_TRUE(b.run(3000).empty());
  // Nor is a flow judged against a sibling whose data did not wait (no network pace to compare).
  Bench c({0, 0}, {100'000, 10'000});
  c.backlogged[0] = false;
  EXPECT_TRUE(c.run(3000).empty());
}

TEST(Rehash, AWindowWithABreakInTheBacklogDoesNotCount) {
  Bench b({0, 0}, {100'000, 10'000});
  std::vector<std::pair<int64_t, int>> named;
  for (int i = 0; i < 20; ++i) {
    b.backlogged[1] = i % 4 != 0;  // one tick in four without data waiting: no window is whole
    auto n = b.run(50);
    named.insert(named.end(), n.begin(), n.end());
  }
  EXPECT_TRUE(named.empty());
}

TEST(Rehash, FlowsOfDifferentNicPairsAreNotCompared) {
  // A 10 Gbit/s rail and a 1 Gbit/s rail: each flow alone in its group.
  Bench b({0, 1}, {1'250'000, 125'000});
  EXPECT_TRUE(b.run(3000).empty());
  // Two groups, each with a lagging flow: both named in the same window.
  Bench c({0, 0, 1, 1}, {100'000, 10'000, 50'000, 5'000});
  auto named = c.run(450);
  ASSERT_EQ(named.size(), 2u);
  EXPECT_EQ(named[0].second, 1);
  EXPECT_EQ(named[1].second, 3);
}

TEST(Rehash, APathThatIsNotUpIsNeitherJudgedNorASibling) {
  Bench b({0, 0}, {100'000, 10'000});
  b.usable[1] = false;  // dead, or being re-hashed already
  EXPECT_TRUE(b.run(3000).empty());
  b.usable[1] = true;
  b.usable[0] = false;
  EXPECT_TRUE(b.run(3000).empty());
}

TEST(Rehash, ARestartedPathGivesItsGroupTheHoldoff) {
  Bench b({0, 0}, {100'000, 10'000});
  b.run(300);                    // one lagging window so far
  b.policy.restarted(1, b.now);  // reconnected (a failure and re-admission)
  auto named = b.run(2000);
  ASSERT_FALSE(named.empty());
  EXPECT_GE(named[0].first, 300 * kMs + 1000 * kMs);
}

TEST(Rehash, ACounterThatWentBackGivesNoRate) {
  Bench b({0, 0}, {100'000, 10'000});
  b.run(250);  // path 1 lagged one window
  // Counters are per path and never go back; a policy must not read one that did as a huge rate
  // (it would be the best sibling, and path 1's second lagging window would name it).
  b.bytes[0] = 0;
  EXPECT_TRUE(b.run(200).empty());
}

}  // namespace
}  // namespace braid::mp
