// The direct allreduce of two ranks that share memory (collectives/allreduce_direct.cc):
// results for every dtype and op, in and out of place, with a last chunk cut short; that it
// is taken exactly where it applies (no transport bytes then); 16 MiB calls out of place, whose
// outputs are written with non-temporal stores, with an output not 32-byte aligned; ranks issuing
// the calls in different ways (blocking, group, stream, running ahead of each other); mismatched
// calls; and a peer killed in the middle of one.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"
#include "harness/shm.h"
#include "harness/values.h"
#include "src/core/comm.h"
#include "src/engine/fastbox.h"

namespace braid::test {
namespace {

// An allreduce of `count` elements checked against the expected values; the transport bytes
// it moved.
uint64_t checkedAllReduce(braidComm_t comm, int r, int n, braidDataType_t dt, braidRedOp_t op,
                          size_t count, bool inPlace, braidStream_t stream = nullptr,
                          bool group = false) {
  Buf send(count, dt), recv(count, dt), want(count, dt);
  for (size_t i = 0; i < count; ++i) {
    put(send.data(), dt, i, inputValue(op, r, n, i));
    put(want.data(), dt, i, expectedValue(op, n, i));
  }
  void* out = inPlace ? send.data() : recv.data();
  const uint64_t before = sentBytes(comm);
  if (group) {
    EXPECT_EQ(braidGroupStart(), braidSuccess);
  }
  EXPECT_EQ(braidAllReduce(send.data(), out, count, dt, op, comm, stream), braidSuccess)
      << braidGetLastError(comm);
  if (group) {
    EXPECT_EQ(braidGroupEnd(), braidSuccess) << braidGetLastError(comm);
  }
  if (stream) {
    EXPECT_EQ(braidStreamSynchronize(stream), braidSuccess) << braidGetLastError(comm);
  }
  Buf& got = inPlace ? send : recv;
  for (size_t i = 0; i < count; ++i) {
    if (!sameElem(got.data(), want.data(), dt, i)) {
      ADD_FAILURE() << "rank " << r << ": allreduce " << dtypeName(dt) << " " << opName(op)
                    << " count " << count << (inPlace ? " in place" : "") << ": element " << i
                    << " differs";
      break;
    }
  }
  return sentBytes(comm) - before;
}

// Rank r of two sends `mine` to the other rank and returns what the other sent (one group).
int swapWithPeer(braidComm_t comm, int r, int mine) {
  int theirs = -1;
  EXPECT_EQ(braidGroupStart(), braidSuccess);
  EXPECT_EQ(braidSend(&mine, 1, braidInt32, 1 - r, comm, nullptr), braidSuccess);
  EXPECT_EQ(braidRecv(&theirs, 1, braidInt32, 1 - r, comm, nullptr), braidSuccess);
  EXPECT_EQ(braidGroupEnd(), braidSuccess) << braidGetLastError(comm);
  return theirs;
}

TEST(Direct, EveryDtypeAndOpInAndOutOfPlace) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (braidDataType_t dt : kAllTypes) {
          // 300 KiB and a few elements: several chunks, the last one short.
          const size_t count = (300 << 10) / dtypeSize(dt) + 7;
          for (braidRedOp_t op : kAllOps) {
            for (bool inPlace : {false, true}) {
              EXPECT_EQ(checkedAllReduce(comm, r, n, dt, op, count, inPlace), 0u)
                  << "went through the transport, not direct";
              if (::testing::Test::HasFailure()) return;
            }
          }
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

// From 16 MiB, out of place on both ranks, the outputs are written with non-temporal stores
// (reduceStreaming) for float32, float16 and bfloat16: every op of those (avg and int32 take
// the plain kernels), with a last chunk cut short and an output not 32-byte aligned.
TEST(Direct, LargeOutOfPlaceCallsMatchTheReference) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (braidDataType_t dt : {braidFloat32, braidFloat16, braidBfloat16, braidInt32}) {
          const size_t count = (size_t{16} << 20) / dtypeSize(dt) + 5;
          for (braidRedOp_t op : kAllOps) {
            EXPECT_EQ(checkedAllReduce(comm, r, n, dt, op, count, false), 0u);
          }
        }
        // An output 4 bytes past 32-byte alignment: plain stores, the same values.
        const size_t count = (size_t{16} << 20) / 4 + 3;
        std::vector<float> in(count), out(count + 8);
        for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>((i % 1000) * (r + 1));
        float* o = out.data() + (8 - reinterpret_cast<uintptr_t>(out.data()) % 32 / 4) % 8 + 1;
        BRAID_ASSERT_OK(braidAllReduce(in.data(), o, count, braidFloat32, braidSum, comm, nullptr),
                        comm);
        for (size_t i = 0; i < count; ++i) {
          ASSERT_EQ(o[i], static_cast<float>((i % 1000) * 3)) << "element " << i;
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

TEST(Direct, TakenOnlyWhereItApplies) {
  struct Setting {
    std::vector<std::pair<std::string, std::string>> env;
    bool direct;
  };
  const Setting settings[] = {
      {{}, true},
      {{{"BRAID_SHM_CMA", "0"}}, false},            // no reading the peer's memory
      {{{"BRAID_ALGO", "allreduce=ring"}}, false},  // an algorithm forced
      {{{"BRAID_SHM_FAST_BYTES", "0"}}, false},     // no fast boxes
  };
  for (const Setting& s : settings) {
    runRanks(
        2,
        [&s](int r, int n, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, n, id);
          ASSERT_NE(comm, nullptr);
          const uint64_t big = checkedAllReduce(comm, r, n, braidFloat32, braidSum, 1 << 18, false);
          EXPECT_EQ(big == 0, s.direct) << "1 MiB moved " << big << " transport bytes";
          // Below the direct size the ring or recursive doubling run.
          EXPECT_GT(checkedAllReduce(comm, r, n, braidFloat32, braidSum, 1 << 14, false), 0u);
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        shmOnly(s.env));
  }
  // Three ranks: not direct.
  runRanks(
      3,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        EXPECT_GT(checkedAllReduce(comm, r, n, braidFloat32, braidSum, 1 << 18, true), 0u);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

// Rank 0 calls blocking; rank 1 in turn blocking, in a group and on a stream. Direct calls are
// mixed with small (fast box) ones and point-to-point, and each rank now and then runs late.
TEST(Direct, RanksMeetWhicheverWayTheyIssueTheCalls) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        braidStream_t stream = nullptr;
        BRAID_ASSERT_OK(braidStreamCreate(&stream), comm);
        for (int k = 0; k < 60; ++k) {
          if (k % 7 == r * 3) std::this_thread::sleep_for(std::chrono::milliseconds(3));
          const int how = r == 0 ? 0 : k % 3;  // 0 blocking, 1 group, 2 stream
          const size_t count = k % 3 == 0 ? (1 << 18) + k : k % 3 == 1 ? 4 : (1 << 16) + 1;
          checkedAllReduce(comm, r, n, k % 2 ? braidInt32 : braidFloat32, braidSum, count,
                           k % 4 == 0, how == 2 ? stream : nullptr, how == 1);
          EXPECT_EQ(swapWithPeer(comm, r, r * 100 + k), (1 - r) * 100 + k);
          if (::testing::Test::HasFailure()) return;
        }
        BRAID_ASSERT_OK(braidStreamDestroy(stream), comm);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly());
}

// Call numbers far on, as after billions of fast-box calls: direct calls across the wrap of
// the boxes' 32-bit numbers, and one whose number matches the previous direct call's in the
// claim word's 24 bits (it must not take that call's finished word for its own).
TEST(Direct, CallNumbersThatWrap) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        FastBoxes* fb = comm->impl->fastBoxes();
        ASSERT_NE(fb, nullptr);
        // Both ranks jump to the same number between calls (no call is in flight: the last
        // one finished on both, as the exchange after it shows).
        auto jumpTo = [&](uint64_t next) {
          EXPECT_EQ(swapWithPeer(comm, r, r), 1 - r);
          const auto last = static_cast<uint32_t>(next - 1);
          fb->issued.store(next - 1);
          fb->finished.store(last);
          fb->seen[1 - r] = last;
          fb->links[1 - r].doneOut->store(last);
          EXPECT_EQ(swapWithPeer(comm, r, r), 1 - r);
        };
        const size_t count = (1 << 18) + 3;
        jumpTo((uint64_t{1} << 32) - 2);  // calls 2^32-2, 2^32-1, 2^32 (0 in 32 bits), 2^32+1
        for (int k = 0; k < 4; ++k) {
          EXPECT_EQ(checkedAllReduce(comm, r, n, braidFloat32, braidSum, count, k % 2 == 1), 0u);
        }
        const uint64_t last = fb->issued.load();
        jumpTo(last + (uint64_t{1} << 24));  // the same 24 low bits as the last direct call
        EXPECT_EQ(checkedAllReduce(comm, r, n, braidInt32, braidSum, count, false), 0u);
        float x = static_cast<float>(r + 1);
        BRAID_ASSERT_OK(braidAllReduce(&x, &x, 1, braidFloat32, braidSum, comm, nullptr), comm);
        EXPECT_EQ(x, 3.0f);
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "20000"}}));
}

TEST(Direct, MismatchedCountsAreNamedByBothRanks) {
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t count = (1 << 18) + (r == 0 ? 0 : 16);
        std::vector<float> v(count, 1.0f), before = v;
        double t0 = now();
        braidResult_t rc =
            braidAllReduce(v.data(), v.data(), count, braidFloat32, braidSum, comm, nullptr);
        EXPECT_EQ(rc, braidInvalidUsage);
        EXPECT_LT(now() - t0, 5.0);
        std::string msg = braidGetLastError(comm);
        EXPECT_NE(msg.find("made a different call"), std::string::npos) << msg;
        EXPECT_NE(msg.find(r == 0 ? "1048640 bytes" : "1048576 bytes"), std::string::npos) << msg;
        EXPECT_EQ(v, before) << "nothing may be written when the calls differ";
        EXPECT_NE(braidBarrier(comm, nullptr), braidSuccess);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        (void)n;
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "20000"}}));
}

TEST(Direct, APeerKilledInTheMiddleIsNamedAndNothingHangs) {
  auto res = runRanksRaw(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t count = size_t{32} << 20;  // 128 MiB of float32: tens of milliseconds
        std::vector<float> v(count, 1.0f);
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        if (r == 1) {
          std::thread([] {
            std::this_thread::sleep_for(std::chrono::milliseconds(3));
            raise(SIGKILL);
          }).detach();
        }
        double t0 = now();
        braidResult_t rc =
            braidAllReduce(v.data(), v.data(), count, braidFloat32, braidSum, comm, nullptr);
        std::string msg = braidGetLastError(comm);
        EXPECT_NE(rc, braidSuccess) << "rank 1 died during the call";
        EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
        EXPECT_LT(now() - t0, 10.0) << "found by the timeout (30 s), not by the peer's death";
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
        (void)n;
      },
      shmOnly({{"BRAID_TIMEOUT_MS", "30000"}}));
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[1].signal, SIGKILL);
  EXPECT_TRUE(res[0].exited && res[0].code == 0);
}

}  // namespace
}  // namespace braid::test
