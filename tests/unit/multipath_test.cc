// The multipath layer against an in-process lossy network: chunks and acknowledgements are
// lost, duplicated, delayed and reordered, paths die and come back; every message must arrive
// exactly once, byte for byte, and every chunk must be acknowledged in the end.
#include "transports/multipath/multipath.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace braid::mp {
namespace {

struct Wire {
  int64_t at = 0;  // delivery time
  int path = 0;
  uint64_t fid = 0, tag = 0, offset = 0;
  std::string bytes;
};

struct AckWire {
  int64_t at = 0;
  int path = 0;
  uint64_t below = 0;
  std::vector<Range> ranges;
};

struct Faults {
  double loss = 0, dup = 0, ackLoss = 0;
  int64_t maxDelay = 50;
  double pathKill = 0;  // per step
};

// Runs `ops` messages through a Sender/Receiver pair; returns the wrong bytes seen.
void runLossy(uint64_t seed, int paths, int ops, const Faults& f) {
  std::mt19937_64 rng(seed);
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  SenderOptions o;
  o.window = 64 << 10;
  o.timeoutNs = 400;  // simulated time units
  o.resendLost = true;
  Sender tx(paths, o);
  Receiver rx;
  std::vector<std::string> sent(ops), got(ops);
  std::vector<size_t> chunksLeft(ops, 0);
  std::set<std::pair<uint64_t, uint64_t>> placed;  // (tag, offset) placed once
  size_t totalChunks = 0, ackedChunks = 0, completed = 0;
  std::multimap<std::pair<int64_t, uint64_t>, Wire> net;  // (due, random tie-break)
  std::vector<AckWire> acks;
  std::vector<int64_t> revive(paths, -1);
  int64_t now = 1;
  int nextOp = 0;
  auto emit = [&](int path, Chunk& c) {
    if (chance(f.loss)) return;
    int copies = chance(f.dup) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      Wire w;
      w.at = now + 1 + static_cast<int64_t>(rng() % f.maxDelay);
      w.path = path;
      w.fid = c.fid;
      w.tag = c.tag;
      w.offset = c.offset;
      w.bytes.assign(c.payload, c.len);
      net.emplace(std::make_pair(w.at, rng()), std::move(w));
    }
  };
  for (int step = 0; step < 2'000'000 && (nextOp < ops || !tx.idle()); ++step, ++now) {
    // New messages, a few per step, cut into random chunks.
    for (int k = 0; k < 3 && nextOp < ops && tx.unacked() < 400; ++k, ++nextOp) {
      size_t len = 1 + rng() % 20000;
      std::string& m = sent[nextOp];
      m.resize(len);
      for (auto& ch : m) ch = static_cast<char>(rng());
      got[nextOp].assign(len, '\0');
      for (size_t off = 0; off < len;) {
        size_t clen = std::min<size_t>(len - off, 1 + rng() % 6000);
        Chunk c;
        c.tag = static_cast<uint64_t>(nextOp);
        c.offset = off;
        c.len = static_cast<uint32_t>(clen);
        c.total = len;
        c.payload = m.data() + off;
        c.urgent = chance(0.5);
        tx.add(std::move(c));
        ++chunksLeft[nextOp];
        ++totalChunks;
        off += clen;
      }
    }
    // Paths die at random and come back later.
    for (int p = 0; p < paths; ++p) {
      if (tx.state(p) != PathState::kDead && chance(f.pathKill)) {
        tx.setState(p, PathState::kDead, now);
        revive[p] = now + 200 + static_cast<int64_t>(rng() % 400);
      } else if (tx.state(p) == PathState::kDead && revive[p] >= 0 && now >= revive[p]) {
        tx.setState(p, PathState::kUp, now);
        revive[p] = -1;
      }
    }
    if (!tx.anyUsable()) tx.setState(static_cast<int>(rng() % paths), PathState::kUp, now);
    std::vector<int> stalled;
    tx.expired(now, &stalled);
    for (int p : stalled) {
      tx.setState(p, PathState::kDead, now);
      revive[p] = now + 100;
    }
    tx.requeueLost(now);
    tx.schedule(now, emit);
    // Deliver what is due (random delays reorder them; ties in random order).
    while (!net.empty() && net.begin()->first.first <= now) {
      Wire w = std::move(net.begin()->second);
      net.erase(net.begin());
      int other = -1;
      Receiver::Verdict v = rx.begin(w.fid, w.path, &other);
      if (v == Receiver::Verdict::kDuplicate) continue;
      ASSERT_TRUE(placed.insert({w.tag, w.offset}).second)
          << "chunk " << w.fid << " placed twice (seed " << seed << ")";
      std::memcpy(got[w.tag].data() + w.offset, w.bytes.data(), w.bytes.size());
      rx.end(w.fid, w.path, true);
    }
    // Acknowledgements go back now and then, over the same lossy network.
    const int ackPath = static_cast<int>(rng() % paths);
    if (rx.ackOwed(ackPath) && (rx.ackUrgent(ackPath) || step % 7 == 0)) {
      AckWire a;
      a.below = rx.takeAck(ackPath, &a.ranges, 64);
      a.path = ackPath;
      a.at = now + 1 + static_cast<int64_t>(rng() % f.maxDelay);
      if (!chance(f.ackLoss)) acks.push_back(std::move(a));
    }
    for (size_t i = 0; i < acks.size();) {
      if (acks[i].at > now) {
        ++i;
        continue;
      }
      AckWire a = std::move(acks[i]);
      acks[i] = std::move(acks.back());
      acks.pop_back();
      tx.ack(a.path, a.below, a.ranges.data(), a.ranges.size(), now, [&](Chunk& c) {
        ++ackedChunks;
        ASSERT_TRUE(rx.received(c.fid)) << "acknowledged before it arrived";
        if (--chunksLeft[c.tag] == 0) ++completed;
      });
    }
    // The receiver re-acknowledges what it has when nothing moves (lost acks).
    if (step % 50 == 0 && !tx.idle()) {
      std::vector<Range> none;
      AckWire a;
      a.below = rx.watermark();
      a.ranges.clear();
      a.at = now + 1;
      (void)rx.takeAck(-1, &a.ranges, 64);
      acks.push_back(std::move(a));
    }
  }
  EXPECT_TRUE(tx.idle()) << tx.unacked() << " chunks never acknowledged (seed " << seed << ")";
  EXPECT_EQ(completed, static_cast<size_t>(ops));
  EXPECT_EQ(ackedChunks, totalChunks);
  EXPECT_EQ(placed.size(), totalChunks);
  size_t wrong = 0;
  for (int i = 0; i < ops; ++i) {
    for (size_t b = 0; b < sent[i].size(); ++b) wrong += sent[i][b] != got[i][b];
  }
  EXPECT_EQ(wrong, 0u) << "seed " << seed;
}

TEST(Multipath, CleanNetworkDeliversEverythingOnce) { runLossy(1, 4, 2000, Faults{}); }

TEST(Multipath, LossDuplicationReorderingAndDyingPaths10kOperations) {
  Faults f;
  f.loss = 0.05;
  f.dup = 0.05;
  f.ackLoss = 0.1;
  f.maxDelay = 120;
  f.pathKill = 0.002;
  runLossy(7, 4, 10000, f);
}

TEST(Multipath, OnePathAtATimeSurvives) {
  Faults f;
  f.pathKill = 0.02;  // paths die often; at least one is kept up
  f.loss = 0.01;
  runLossy(11, 2, 3000, f);
}

TEST(Multipath, DeadPathChunksGoFirstOnTheSurvivors) {
  SenderOptions o;
  o.window = 1 << 20;
  Sender tx(2, o);
  std::string data(4096, 'x');
  for (int i = 0; i < 4; ++i) {
    Chunk c;
    c.payload = data.data();
    c.len = 1024;
    tx.add(std::move(c));
  }
  std::vector<std::pair<int, uint64_t>> sent;
  tx.schedule(0, [&](int p, Chunk& c) { sent.push_back({p, c.fid}); });
  ASSERT_EQ(sent.size(), 4u);
  // Both paths got chunks (least outstanding first).
  EXPECT_NE(std::count_if(sent.begin(), sent.end(), [](auto& s) { return s.first == 0; }), 0);
  EXPECT_NE(std::count_if(sent.begin(), sent.end(), [](auto& s) { return s.first == 1; }), 0);
  size_t onZero = static_cast<size_t>(
      std::count_if(sent.begin(), sent.end(), [](auto& s) { return s.first == 0; }));
  EXPECT_EQ(tx.setState(0, PathState::kDead, 1), onZero);
  sent.clear();
  tx.schedule(1, [&](int p, Chunk& c) { sent.push_back({p, c.fid}); });
  EXPECT_EQ(sent.size(), onZero);
  for (auto& s : sent) EXPECT_EQ(s.first, 1);
  // A stalled path is reported after the timeout, not before.
  std::vector<int> stalled;
  tx.expired(o.timeoutNs, &stalled);
  EXPECT_TRUE(stalled.empty());
  tx.expired(2 + 2 * o.timeoutNs, &stalled);
  EXPECT_EQ(stalled, std::vector<int>{1});
  // Standby paths carry nothing while a path is up.
  Sender fo(2, o);
  fo.setState(1, PathState::kStandby, 0);
  Chunk c;
  c.payload = data.data();
  c.len = 100;
  fo.add(std::move(c));
  int used = -1;
  fo.schedule(0, [&](int p, Chunk&) { used = p; });
  EXPECT_EQ(used, 0);
}

TEST(Multipath, HeldPathsTakeNothingUntilReleased) {
  // Late binding: a path whose transport has enough queued is held; queued chunks wait for a
  // path that drains instead of piling up behind a slow one.
  Sender tx(2, SenderOptions{});
  std::string data(8192, 'x');
  for (int i = 0; i < 4; ++i) {
    Chunk c;
    c.payload = data.data();
    c.len = 1024;
    tx.add(std::move(c));
  }
  std::vector<int> used;
  auto emit = [&](int p, Chunk&) { used.push_back(p); };
  tx.hold(0, true);
  tx.schedule(0, [&](int p, Chunk& c) {
    emit(p, c);
    if (used.size() == 2) tx.hold(p, true);  // path 1 fills up after two chunks
  });
  EXPECT_EQ(used, (std::vector<int>{1, 1}));
  EXPECT_TRUE(tx.waiting());
  tx.schedule(1, emit);  // nothing moves while both are held
  EXPECT_EQ(used.size(), 2u);
  tx.hold(0, false);  // path 0 drained: it takes the rest
  tx.schedule(2, emit);
  EXPECT_EQ(used, (std::vector<int>{1, 1, 0, 0}));
  EXPECT_FALSE(tx.waiting());
  // A path that dies and comes back is not held any more.
  EXPECT_TRUE(tx.held(1));
  tx.setState(1, PathState::kDead, 3);
  tx.setState(1, PathState::kUp, 4);
  EXPECT_FALSE(tx.held(1));
}

TEST(Multipath, AStragglerAtTheEndIsSentAgainOnAnIdlePath) {
  Sender tx(2, SenderOptions{});
  std::string data(4096, 'x');
  auto add = [&] {
    Chunk c;
    c.payload = data.data();
    c.len = 1024;
    return tx.add(std::move(c))->fid;
  };
  std::vector<std::pair<int, uint64_t>> sent;
  auto emit = [&](int p, Chunk& c) { sent.push_back({p, c.fid}); };
  auto always = [](int) { return true; };  // the transport below says every path is stuck
  const int64_t ms = 1'000'000;
  uint64_t a = add(), b = add();
  tx.schedule(1, emit);
  ASSERT_EQ(sent.size(), 2u);
  const int pa = sent[0].second == a ? sent[0].first : sent[1].first;
  Range rb{b, 1};
  tx.ack(1 - pa, 0, &rb, 1, 5 * ms, [](Chunk&) {});  // b's path is done and idle
  sent.clear();
  // Not yet a straggler; nor while something still waits in the queue.
  EXPECT_EQ(tx.resendStragglers(30 * ms, 50 * ms, always, emit), 0u);
  uint64_t q = add();
  tx.hold(1 - pa, true);
  tx.hold(pa, true);
  EXPECT_EQ(tx.resendStragglers(60 * ms, 50 * ms, always, emit), 0u);
  tx.hold(1 - pa, false);
  tx.schedule(60 * ms, emit);  // q goes to the idle path
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (std::pair<int, uint64_t>{1 - pa, q}));
  Range rq{q, 1};
  tx.ack(1 - pa, 0, &rq, 1, 61 * ms, [](Chunk&) {});
  tx.hold(pa, false);
  sent.clear();
  // a: out 60 ms on a path silent as long: a second copy goes on the other path, once.
  EXPECT_EQ(tx.resendStragglers(61 * ms, 50 * ms, always, emit), 1u);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (std::pair<int, uint64_t>{1 - pa, a}));
  EXPECT_EQ(tx.resendStragglers(200 * ms, 50 * ms, always, emit), 0u);
  EXPECT_GT(tx.outstanding(pa), 0u);
  EXPECT_GT(tx.outstanding(1 - pa), 0u);
  // The first copy acknowledged retires it from both paths.
  Range ra{a, 1};
  int done = 0;
  tx.ack(1 - pa, 0, &ra, 1, 201 * ms, [&](Chunk& c) {
    ++done;
    EXPECT_EQ(c.sends, 2u);
  });
  EXPECT_EQ(done, 1);
  EXPECT_TRUE(tx.idle());
  EXPECT_EQ(tx.outstanding(pa), 0u);
  EXPECT_EQ(tx.outstanding(1 - pa), 0u);
  // A path that dies with a copy on it: the chunk is queued again (the receiver may have
  // dropped the other copy for that one).
  uint64_t d = add();
  sent.clear();
  tx.schedule(300 * ms, emit);
  ASSERT_EQ(sent.size(), 1u);
  const int pd = sent[0].first;
  EXPECT_EQ(tx.resendStragglers(400 * ms, 50 * ms, always, emit), 1u);
  EXPECT_EQ(tx.setState(1 - pd, PathState::kDead, 401 * ms), 1u);
  EXPECT_EQ(tx.outstanding(pd), 0u);
  sent.clear();
  tx.schedule(402 * ms, emit);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (std::pair<int, uint64_t>{pd, d}));
}

// A chunk as old as a straggler on a path whose transport still moves data (a slow flow, its
// acknowledgements coming) gets no copy: copies would take the bandwidth of the flows that
// share its link. The transport is asked once per path per look, and the chunk gets its copy
// once the path does stall.
TEST(Multipath, ASlowPathThatStillMovesGetsNoStragglerCopy) {
  Sender tx(3, SenderOptions{});
  std::string data(1 << 20, 'x');
  std::vector<std::pair<int, uint64_t>> sent;
  auto emit = [&](int p, Chunk& c) { sent.push_back({p, c.fid}); };
  for (int i = 0; i < 6; ++i) {
    Chunk c;
    c.payload = data.data();
    c.len = 64 << 10;
    tx.add(std::move(c));
  }
  tx.schedule(1, emit);
  ASSERT_EQ(sent.size(), 6u);
  const int slow = sent[0].first;
  // Every chunk but those of the slow path is acknowledged.
  std::vector<Range> acks;
  for (const auto& [p, fid] : sent) {
    if (p != slow) acks.push_back({fid, 1});
  }
  tx.ack(slow, 0, acks.data(), acks.size(), 2'000'000, [](Chunk&) {});
  const size_t left = tx.unacked();
  ASSERT_GT(left, 0u);
  sent.clear();
  const int64_t ms = 1'000'000;
  std::vector<int> asked;
  auto moving = [&](int p) {
    asked.push_back(p);
    return false;
  };
  EXPECT_EQ(tx.resendStragglers(100 * ms, 50 * ms, moving, emit), 0u);
  EXPECT_EQ(asked, std::vector<int>{slow});
  EXPECT_TRUE(sent.empty());
  auto stuck = [](int) { return true; };
  EXPECT_EQ(tx.resendStragglers(101 * ms, 50 * ms, stuck, emit), left);
  ASSERT_EQ(sent.size(), left);
  for (const auto& [p, fid] : sent) EXPECT_NE(p, slow);
}

// Thousands of small chunks waiting for a lazy acknowledgement: the look for stragglers (a pass
// over every chunk) runs at most every age/8, not on every call; the stragglers are all found.
TEST(Multipath, ManyUnacknowledgedChunksAreLookedAtForStragglersAtMostEveryEighthOfTheAge) {
  Sender tx(2, SenderOptions{});
  const int64_t us = 1'000, ms = 1'000'000, age = 50 * ms;
  size_t sent = 0;
  auto emit = [&](int, Chunk&) { ++sent; };
  auto always = [](int) { return true; };
  for (int i = 0; i < 5000; ++i) {  // one a microsecond, from 0 to 5 ms, no acknowledgement
    Chunk c;
    c.owned = "8 bytes!";
    c.payload = c.owned.data();
    c.len = 8;
    tx.add(std::move(c));
    tx.schedule(i * us, emit);
  }
  ASSERT_EQ(sent, 5000u);
  // At 52 ms those sent before 2 ms are stragglers: a second copy each.
  const size_t first = tx.resendStragglers(52 * ms, age, always, emit);
  EXPECT_NEAR(static_cast<double>(first), 2000.0, 2.0);
  // A millisecond later a thousand more are as old, but the next look is at 52 + 50/8 ms.
  EXPECT_EQ(tx.resendStragglers(53 * ms, age, always, emit), 0u);
  EXPECT_EQ(tx.resendStragglers(58 * ms, age, always, emit), 0u);
  EXPECT_EQ(tx.resendStragglers(59 * ms, age, always, emit) + first, 5000u);
  EXPECT_EQ(sent, 10000u);
}

// Two paths, one ten times slower than the other (a rail throttled by a failing optic, a
// congested flow), messages of 4 MiB with pauses between them as collective steps have: each
// message must arrive about as soon as the fast path alone would bring it. Before, the slow
// path took a chunk whenever the fast one's window was full, and after every pause (its rate
// forgotten, it counted as fast again) a full share: each step waited ~90 ms for its chunks.
// Simulated time: a path sends its chunks one after another at its rate; each is
// acknowledged when it has arrived.
TEST(Multipath, ASlowPathDoesNotDelayWhatTheFastPathWouldBringSooner) {
  const double kRate[2] = {62.5e6, 6.25e6};  // bytes/s: 500 and 50 Mbit/s
  const uint32_t kChunk = 512 << 10;
  const size_t kMessage = 4 << 20;
  Sender tx(2, SenderOptions{});
  std::string data(kChunk, 'x');
  int64_t now = 1'000'000'000;
  int64_t busyUntil[2] = {now, now};
  std::multimap<int64_t, std::pair<int, uint64_t>> arrivals;  // time -> (path, fid)
  size_t slowBytes = 0;
  auto emit = [&](int p, Chunk& c) {
    const int64_t start = std::max(now, busyUntil[p]);
    busyUntil[p] = start + static_cast<int64_t>(c.len / kRate[p] * 1e9);
    arrivals.emplace(busyUntil[p], std::make_pair(p, c.fid));
    if (p == 1) slowBytes += c.len;
  };
  // Sends `bytes` in chunks and runs the simulation until every chunk is acknowledged;
  // returns the milliseconds it took (-1 when chunks wait with none out: a stall).
  auto transfer = [&](size_t bytes) {
    const int64_t t0 = now;
    for (size_t off = 0; off < bytes; off += kChunk) {
      Chunk c;
      c.payload = data.data();
      c.len = kChunk;
      tx.add(std::move(c));
    }
    tx.schedule(now, emit);
    while (!tx.idle()) {
      if (arrivals.empty()) return -1.0;
      auto it = arrivals.begin();
      now = it->first;
      Range r{it->second.second, 1};
      const int path = it->second.first;
      arrivals.erase(it);
      tx.ack(path, 0, &r, 1, now, [](Chunk&) {});
      tx.schedule(now, emit);
    }
    return static_cast<double>(now - t0) / 1e6;
  };
  const double fastAlone = kMessage / kRate[0] * 1e3;  // ms
  for (int m = 0; m < 20; ++m) {
    const double took = transfer(kMessage);
    ASSERT_GE(took, 0) << "message " << m << ": chunks wait but none is out";
    // (The first message measures the paths: the slow one's first chunks arrive late.)
    if (m > 0) {
      EXPECT_LE(took, fastAlone * 1.1)
          << "message " << m << " (fast path alone: " << fastAlone << " ms)";
    }
    now += 300'000'000;  // a pause, as between collective steps
  }
  // The slow path is used where it helps: a message large enough that the fast path's share
  // takes longer than a chunk on the slow one; within 5% of both paths' rates together.
  const size_t before = slowBytes;
  const double took = transfer(16 * kMessage);
  ASSERT_GE(took, 0) << "chunks wait but none is out";
  EXPECT_GT(slowBytes - before, 4 * static_cast<size_t>(kChunk));
  EXPECT_LE(took, 16.0 * kMessage / (kRate[0] + kRate[1]) * 1e3 * 1.05);
}

// An unmeasured path takes at most Sender::kUnmeasuredBytes, where it has siblings: a slow
// one must not get a full share before it is known. A peer's only path has nothing to be
// compared with: it takes its window (capped, a one-way stream of small copied messages,
// acknowledged lazily, stopped at 1 MiB until the receiver's tick). limit() says which, so
// the transport asks for acknowledgements before half of it.
TEST(Multipath, OnlyAPathWithSiblingsIsCappedUntilMeasured) {
  std::string data(16 << 10, 'x');
  for (int paths : {1, 2}) {
    SCOPED_TRACE(paths);
    Sender tx(paths, SenderOptions{});
    for (int i = 0; i < 256; ++i) {  // 4 MiB of 16 KiB chunks
      Chunk c;
      c.payload = data.data();
      c.len = static_cast<uint32_t>(data.size());
      tx.add(std::move(c));
    }
    size_t sent = 0;
    tx.schedule(1, [&](int, Chunk& c) { sent += c.len; });
    if (paths == 1) {
      EXPECT_EQ(tx.limit(0, 1), tx.window());
      EXPECT_GT(sent, size_t{3} << 20);
    } else {
      EXPECT_EQ(tx.limit(0, 1), Sender::kUnmeasuredBytes);
      EXPECT_LE(sent, 2 * (Sender::kUnmeasuredBytes + data.size()));
    }
  }
}

// Acknowledgements come from the peer: one that names chunks never sent, fids never assigned,
// or a range as long as 2^64 retires what it covers and nothing else, at once; the chunks it
// skipped are still sent, in order.
TEST(Multipath, AcknowledgementsBeyondWhatWasSentRetireOnlyRealChunks) {
  Sender tx(1, SenderOptions{});
  std::vector<uint64_t> sent;
  auto emit = [&](int, Chunk& c) { sent.push_back(c.fid); };
  for (int i = 0; i < 6; ++i) tx.add(Chunk{});
  tx.schedule(0, [&](int, Chunk& c) {
    if (c.fid <= 2) emit(0, c);
  });  // all six go out: emit records 1 and 2 only
  ASSERT_EQ(sent, (std::vector<uint64_t>{1, 2}));
  for (int i = 0; i < 4; ++i) tx.add(Chunk{});  // 7..10, never given to a path
  size_t done = 0;
  auto count = [&](Chunk&) { ++done; };
  const Range wild[] = {{4, ~uint64_t{0}}, {~uint64_t{0} - 1, 5}, {0, 2}};
  tx.ack(0, 0, wild, 3, 1, count);
  EXPECT_EQ(done, 8u);  // 1 and 4..10
  EXPECT_EQ(tx.unacked(), 2u);
  sent.clear();
  tx.schedule(2, emit);
  EXPECT_TRUE(sent.empty());  // 7..10 went with the acknowledgement; 2 and 3 are out
  tx.ack(0, ~uint64_t{0}, nullptr, 0, 3, count);
  EXPECT_EQ(done, 10u);
  EXPECT_TRUE(tx.idle());
  EXPECT_FALSE(tx.waiting());
  tx.add(Chunk{});  // fid 11: the next chunk is sent as usual
  tx.schedule(4, emit);
  EXPECT_EQ(sent, (std::vector<uint64_t>{11}));
}

// One chunk held back on a slow path while thousands behind it are acknowledged, each
// acknowledgement naming all of them again (the receiver's watermark is stuck below): every
// chunk is retired exactly once, the held one goes to the survivor when its path dies, and
// the sender ends idle.
TEST(Multipath, AStuckChunkWithThousandsAcknowledgedBehindIt) {
  Sender tx(2, SenderOptions{});
  const int n = 20000;
  for (int i = 1; i <= n; ++i) {
    Chunk c;
    c.len = 8;
    tx.add(std::move(c));
    tx.schedule(i, [](int, Chunk&) {});
  }
  std::vector<int> retired(n + 1, 0);
  auto count = [&](Chunk& c) { ++retired[c.fid]; };
  for (uint64_t k = 3; k <= static_cast<uint64_t>(n); ++k) {
    const Range r{2, k - 1};  // fids 2..k: everything but the first
    tx.ack(0, 1, &r, 1, static_cast<int64_t>(n + k), count);
  }
  EXPECT_EQ(tx.unacked(), 1u);
  for (int f = 2; f <= n; ++f) ASSERT_EQ(retired[f], 1) << "fid " << f;
  // The path holding fid 1 dies: fid 1 is the one chunk queued again, for the other path.
  size_t moved = 0;
  for (int p = 0; p < 2; ++p) {
    if (tx.outstanding(p) != 0) moved += tx.setState(p, PathState::kDead, 3 * n);
  }
  EXPECT_EQ(moved, 1u);
  std::vector<uint64_t> again;
  tx.schedule(3 * n, [&](int, Chunk& c) { again.push_back(c.fid); });
  EXPECT_EQ(again, (std::vector<uint64_t>{1}));
  const Range all{1, static_cast<uint64_t>(n)};
  tx.ack(0, 0, &all, 1, 4 * n, count);
  EXPECT_EQ(retired[1], 1);
  EXPECT_TRUE(tx.idle());
}

TEST(Multipath, FaultPlanParsesAndRejects) {
  FaultPlan p;
  ASSERT_TRUE(FaultPlan::parse("path=1,after_bytes=64M,mode=blackhole,seed=3,times=2", &p).isOk());
  EXPECT_TRUE(p.enabled);
  EXPECT_EQ(p.path, 1);
  EXPECT_EQ(p.afterBytes, 64ull << 20);
  EXPECT_TRUE(p.blackhole);
  EXPECT_EQ(p.times, 2);
  ASSERT_TRUE(FaultPlan::parse("", &p).isOk());
  EXPECT_FALSE(p.enabled);
  EXPECT_FALSE(FaultPlan::parse("path", &p).isOk());
  EXPECT_FALSE(FaultPlan::parse("color=red", &p).isOk());
  EXPECT_FALSE(FaultPlan::parse("mode=melt", &p).isOk());
  EXPECT_FALSE(FaultPlan::parse("after_bytes=12Q", &p).isOk());
}

TEST(FaultPlan, ParsesEveryKeyAndRejectsBadOnesNamingTheVariable) {
  FaultPlan f;
  ASSERT_TRUE(FaultPlan::parse("", &f).isOk());
  EXPECT_FALSE(f.enabled);
  ASSERT_TRUE(FaultPlan::parse("rank=1,peer=2,path=rand,after_bytes=64M,mode=blackhole,seed=7,"
                               "times=3",
                               &f, 4)
                  .isOk());
  EXPECT_TRUE(f.checkPath(2).isOk());  // a random path is any
  ASSERT_TRUE(FaultPlan::parse("path=2,after_ms=5", &f, 4).isOk());
  EXPECT_TRUE(f.checkPath(3).isOk());
  EXPECT_EQ(f.checkPath(2).code(), braidInvalidArgument);
  ASSERT_TRUE(FaultPlan::parse("rank=1,peer=2,path=rand,after_bytes=64M,mode=blackhole,seed=7,"
                               "times=3",
                               &f, 4)
                  .isOk());
  EXPECT_TRUE(f.enabled);
  EXPECT_EQ(f.rank, 1);
  EXPECT_EQ(f.peer, 2);
  EXPECT_TRUE(f.randomPath);
  EXPECT_EQ(f.afterBytes, uint64_t{64} << 20);
  EXPECT_TRUE(f.blackhole);
  EXPECT_EQ(f.seed, 7u);
  EXPECT_EQ(f.times, 3);
  // A rank or peer that is none of the job's, a negative or missing trigger, a count of 0.
  for (const char* bad :
       {"path", "path=x", "mode=explode", "after_bytes=12Q", "colour=red", "rank=9,after_ms=5",
        "peer=4,after_ms=5", "rank=0,path=0", "after_ms=-1", "after_bytes=-5", "after_ms=0",
        "times=0,after_ms=5", "times=-1,after_ms=5", "rank=-1,after_ms=5"}) {
    Status s = FaultPlan::parse(bad, &f, 4);
    EXPECT_EQ(s.code(), braidInvalidArgument) << bad;
    EXPECT_NE(s.message().find("BRAID_FAULT"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace braid::mp
