// The ib transport on real RoCEv2 devices (Soft-RoCE in the qemu guest of tools/rxe-vm, which
// exports RXE_A_DEVS / RXE_B_DEVS: the devices of two "hosts" joined by veth pairs). Rank 0
// uses host A's devices, rank 1 host B's. Skips where there is no RDMA device.
#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "harness/ranks.h"
#include "src/core/config.h"
#include "transports/transport.h"

namespace braid::test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Skips the test unless the guest's devices are there.
#define REQUIRE_RXE()                                                                     \
  do {                                                                                    \
    Config cfg;                                                                           \
    if (env("RXE_A_DEVS").empty() || !findTransport("ib")->usable(cfg)) {                 \
      GTEST_SKIP() << "needs RDMA devices (run inside tools/rxe-vm: RXE_A_DEVS is unset " \
                      "or no port is active)";                                            \
    }                                                                                     \
  } while (0)

// ib only; rank 0 on host A's first `rails` devices, rank 1 on host B's.
RankOptions ibRanks(int rails, std::vector<std::pair<std::string, std::string>> extra = {}) {
  RankOptions opt;
  opt.timeoutSec = 240;
  opt.env = {
      {"BRAID_TRANSPORTS", "ib"}, {"BRAID_MULTIRAIL", "spray"}, {"BRAID_TIMEOUT_MS", "60000"}};
  for (auto& e : extra) opt.env.push_back(e);
  opt.setup = [rails](int rank) {
    std::string devs = env(rank % 2 == 0 ? "RXE_A_DEVS" : "RXE_B_DEVS") + ",", pick = "=";
    for (int k = 0; k < rails && devs.find(',') != std::string::npos; ++k) {
      pick += (k == 0 ? "" : ",") + devs.substr(0, devs.find(','));
      devs.erase(0, devs.find(',') + 1);
    }
    setenv("BRAID_IB_HCA", pick.c_str(), 1);
  };
  return opt;
}

struct Totals {
  uint64_t failures = 0, retransmits = 0, chunks = 0, paths = 0, dead = 0, back = 0;
};
Totals totals(braidComm_t comm) {
  Totals t;
  for (const auto& s : pathStats(comm)) {
    EXPECT_STREQ(s.transport, "ib");
    t.failures += s.failures;
    t.retransmits += s.retransmits;
    t.chunks += s.chunksSent;
    t.paths += 1;
    t.dead += s.state == braidPathDead;
    t.back += s.readmissions;
  }
  return t;
}

// Every path of every rank comes back and then carries chunks.
void expectAllBack(braidComm_t comm, int r, int n) {
  ASSERT_TRUE(waitAllPathsUp(comm)) << "a path did not come back";
  EXPECT_GE(totals(comm).back, 1u);
  auto before = pathStats(comm);
  allreduceChecked(comm, r, n, size_t{2} << 20, 1);
  auto after = pathStats(comm);
  for (size_t k = 0; k < after.size(); ++k) {
    EXPECT_GT(after[k].chunksSent, before[k].chunksSent)
        << "path " << k << " idle after re-admission";
  }
}

TEST(Ib, EveryCollectiveBetweenTwoHosts) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (size_t count : {size_t{1}, size_t{1000}, size_t{1} << 20}) {
          allreduceChecked(comm, r, n, count, 2);
          std::vector<int32_t> in(count), all(count * n);
          for (size_t i = 0; i < count; ++i) in[i] = static_cast<int32_t>(r * 1000003 + i);
          BRAID_ASSERT_OK(braidAllGather(in.data(), all.data(), count, braidInt32, comm, nullptr),
                          comm);
          for (int q = 0; q < n; ++q) {
            for (size_t i = 0; i < count; i += 97)
              ASSERT_EQ(all[q * count + i], static_cast<int32_t>(q * 1000003 + i));
          }
          std::vector<int32_t> a2a(count * n), got(count * n);
          for (size_t i = 0; i < a2a.size(); ++i) a2a[i] = static_cast<int32_t>(r * 7 + i);
          BRAID_ASSERT_OK(braidAllToAll(a2a.data(), got.data(), count, braidInt32, comm, nullptr),
                          comm);
          for (int q = 0; q < n; ++q) {
            for (size_t i = 0; i < count; i += 97) {
              ASSERT_EQ(got[q * count + i], static_cast<int32_t>(q * 7 + r * count + i));
            }
          }
          std::vector<int32_t> b(count, r == 1 ? 42 : 0);
          BRAID_ASSERT_OK(braidBroadcast(b.data(), b.data(), count, braidInt32, 1, comm, nullptr),
                          comm);
          for (size_t i = 0; i < count; i += 97) ASSERT_EQ(b[i], 42);
        }
        Totals t = totals(comm);
        EXPECT_EQ(t.failures, 0u);
        EXPECT_GT(t.chunks, 0u);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(1));
}

// Registered buffers (braidCommRegister) move by RDMA WRITE straight between the user
// buffers; every mix of registered and unregistered sides gives the same bytes.
TEST(Ib, RegisteredBuffersMoveWithoutCopiesAndMixWithUnregisteredOnes) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t count = (size_t{3} << 20) + 5;  // uint32 elements, above the eager size
        std::vector<uint32_t> buf(count);
        void* handle = nullptr;
        EXPECT_EQ(braidCommRegister(comm, nullptr, 8, &handle), braidInvalidArgument);
        EXPECT_EQ(braidCommRegister(comm, buf.data(), buf.size() * 4, nullptr),
                  braidInvalidArgument);
        // round: 0 both registered, 1 only the receiver, 2 only the sender, 3 neither.
        for (int round = 0; round < 4; ++round) {
          const bool reg = r == 0 ? (round == 0 || round == 2) : (round == 0 || round == 1);
          handle = nullptr;
          if (reg)
            BRAID_ASSERT_OK(braidCommRegister(comm, buf.data(), buf.size() * 4, &handle), comm);
          for (int dir = 0; dir < 2; ++dir) {
            const int sender = dir;
            if (r == sender) {
              for (size_t i = 0; i < count; ++i)
                buf[i] = static_cast<uint32_t>(i * 2654435761u + round);
              BRAID_ASSERT_OK(braidSend(buf.data(), count, braidUint32, 1 - r, comm, nullptr),
                              comm);
            } else {
              std::fill(buf.begin(), buf.end(), 0);
              BRAID_ASSERT_OK(braidRecv(buf.data(), count, braidUint32, 1 - r, comm, nullptr),
                              comm);
              size_t bad = 0;
              for (size_t i = 0; i < count; ++i)
                bad += buf[i] != static_cast<uint32_t>(i * 2654435761u + round);
              ASSERT_EQ(bad, 0u) << "round " << round << " direction " << dir;
            }
          }
          BRAID_ASSERT_OK(braidCommDeregister(comm, handle), comm);
        }
        EXPECT_EQ(braidCommDeregister(comm, nullptr), braidSuccess);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(1, {{"BRAID_IB_QPS_PER_PEER", "2"}}));
}

// With BRAID_EAGER_BYTES below the copy size (16 KiB), a registered message between the two
// goes by zero copy: it must complete once, when written, not also at once like a copied one
// (a group's run then counted it twice and ended with its receive still in flight).
TEST(Ib, AZeroCopyMessageBelowTheCopySizeCompletesOnce) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t bytes = 10000;
        std::vector<uint8_t> out(bytes), in(bytes);
        void *hOut = nullptr, *hIn = nullptr;
        BRAID_ASSERT_OK(braidCommRegister(comm, out.data(), bytes, &hOut), comm);
        BRAID_ASSERT_OK(braidCommRegister(comm, in.data(), bytes, &hIn), comm);
        for (int i = 0; i < 200; ++i) {
          for (size_t k = 0; k < bytes; ++k) out[k] = static_cast<uint8_t>(k * 7 + i + r);
          std::fill(in.begin(), in.end(), 0);
          BRAID_ASSERT_OK(braidGroupStart(), comm);
          BRAID_ASSERT_OK(braidSend(out.data(), bytes, braidUint8, 1 - r, comm, nullptr), comm);
          BRAID_ASSERT_OK(braidRecv(in.data(), bytes, braidUint8, 1 - r, comm, nullptr), comm);
          BRAID_ASSERT_OK(braidGroupEnd(), comm);
          std::fill(out.begin(), out.end(), 0xff);  // the send is done: its buffer is free
          size_t bad = 0;
          for (size_t k = 0; k < bytes; ++k)
            bad += in[k] != static_cast<uint8_t>(k * 7 + i + (1 - r));
          ASSERT_EQ(bad, 0u) << "exchange " << i;
        }
        BRAID_ASSERT_OK(braidCommDeregister(comm, hOut), comm);
        BRAID_ASSERT_OK(braidCommDeregister(comm, hIn), comm);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(1, {{"BRAID_EAGER_BYTES", "4096"}}));
}

TEST(Ib, AQueuePairPutInErrorMidAllreduceIsReplacedByTheOther) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{4} << 20, 3);
        Totals t = totals(comm);
        EXPECT_EQ(t.paths, 2u);
        EXPECT_EQ(t.failures, 1u) << "the fault never fired (or fired twice)";
        // The path gets a fresh queue pair and carries chunks again.
        expectAllBack(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(1, {{"BRAID_IB_QPS_PER_PEER", "2"},
                  {"BRAID_PATH_TIMEOUT_MS", "5000"},
                  // One rank kills it (both would race: the second, finding path 0 already
                  // dead by the first one's notice, took the other path).
                  {"BRAID_FAULT", "rank=0,path=0,after_bytes=6M"}}));
}

TEST(Ib, ABlackholedQueuePairIsFoundByThePathTimeout) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, size_t{4} << 20, 2);
        EXPECT_GE(totals(comm).failures, 1u);
        expectAllBack(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(1, {{"BRAID_IB_QPS_PER_PEER", "2"},
                  {"BRAID_PATH_TIMEOUT_MS", "2000"},
                  {"BRAID_FAULT", "rank=0,path=1,after_bytes=4M,mode=blackhole"}}));
}

// Host A's second rail loses its link mid-allreduce: rxe reports the port down, the path dies
// at once and its chunks finish on rail 0; when the link is back, the path is rebuilt.
TEST(Ib, ARailWhoseLinkGoesDownMidAllreduce) {
  REQUIRE_RXE();
  if (std::atoi(env("RXE_RAILS").c_str()) < 2) GTEST_SKIP() << "needs tools/rxe-vm --rails 2";
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        std::thread cutter;
        if (r == 0) {
          cutter = std::thread([] {
            std::this_thread::sleep_for(std::chrono::milliseconds(400));
            EXPECT_EQ(std::system("/usr/sbin/ip link set a1 down"), 0);
          });
        }
        allreduceChecked(comm, r, n, size_t{8} << 20, 3);
        if (cutter.joinable()) cutter.join();
        Totals t = totals(comm);
        EXPECT_EQ(t.paths, 2u);
        EXPECT_GE(t.failures, 1u);
        allreduceChecked(comm, r, n, size_t{1} << 20, 1);
        // The link comes back: so does the path.
        if (r == 0) {
          EXPECT_EQ(std::system("/usr/sbin/ip link set a1 up"), 0);
        }
        expectAllBack(comm, r, n);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(2, {{"BRAID_PATH_TIMEOUT_MS", "3000"}}));
}

// Creates QPs on whichever of two devices numbers its next QP lower until both number their
// next one alike (rxe numbers them per device, increasing), so that a job's paths on the two
// devices get QPs of the same numbers, as the first job after a boot always did. False if a
// device cannot be opened.
bool alignQpNumbers(const std::string& a, const std::string& b) {
  struct Dev {
    ibv_context* ctx = nullptr;
    ibv_pd* pd = nullptr;
    ibv_cq* cq = nullptr;
    std::vector<ibv_qp*> qps;
    uint32_t next() {
      ibv_qp_init_attr at{};
      at.send_cq = at.recv_cq = cq;
      at.qp_type = IBV_QPT_RC;
      at.cap.max_send_wr = at.cap.max_recv_wr = 1;
      at.cap.max_send_sge = at.cap.max_recv_sge = 1;
      ibv_qp* qp = ibv_create_qp(pd, &at);
      if (qp == nullptr) return 0;
      qps.push_back(qp);
      return qp->qp_num;
    }
  } devs[2];
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  for (int i = 0; list != nullptr && i < n; ++i) {
    const std::string name = ibv_get_device_name(list[i]);
    if (name == a || name == b) devs[name == a ? 0 : 1].ctx = ibv_open_device(list[i]);
  }
  if (list != nullptr) ibv_free_device_list(list);
  bool ok = devs[0].ctx != nullptr && devs[1].ctx != nullptr;
  for (Dev& d : devs) {
    if (d.ctx == nullptr) continue;
    d.pd = ibv_alloc_pd(d.ctx);
    d.cq = ibv_create_cq(d.ctx, 4, nullptr, nullptr, 0);
    ok = ok && d.pd != nullptr && d.cq != nullptr;
  }
  uint32_t na = ok ? devs[0].next() : 0, nb = ok ? devs[1].next() : 0;
  for (int i = 0; ok && na != nb && i < 4096; ++i) {
    if (na < nb) na = devs[0].next();
    if (nb < na) nb = devs[1].next();
  }
  ok = ok && na == nb && na != 0;
  for (Dev& d : devs) {
    for (ibv_qp* qp : d.qps) ibv_destroy_qp(qp);
    if (d.cq != nullptr) ibv_destroy_cq(d.cq);
    if (d.pd != nullptr) ibv_dealloc_pd(d.pd);
    if (d.ctx != nullptr) ibv_close_device(d.ctx);
  }
  return ok;
}

// Two rails whose devices give the job's QPs the same numbers: every completion goes to the
// path of its own device. (One table keyed by QP number alone gave one rail's completions to
// the other: "a malformed chunk", then a lost message and a hang, in the first job of every
// guest boot.)
TEST(Ib, TwoRailsWhoseQueuePairsHaveTheSameNumbers) {
  REQUIRE_RXE();
  if (std::atoi(env("RXE_RAILS").c_str()) < 2) GTEST_SKIP() << "needs tools/rxe-vm --rails 2";
  ASSERT_TRUE(alignQpNumbers("rxe_a0", "rxe_a1"));
  ASSERT_TRUE(alignQpNumbers("rxe_b0", "rxe_b1"));
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        for (size_t count : {size_t{2}, size_t{8192}, size_t{1} << 20}) {
          allreduceChecked(comm, r, n, count, 3);
        }
        BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
        // (A path may still time out in the emulator's slow minutes and come back: the
        // results and the calls' completing are what the mix-up broke.)
        EXPECT_EQ(totals(comm).paths, 2u);
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      ibRanks(2, {{"BRAID_TIMEOUT_MS", "20000"}, {"BRAID_PATH_TIMEOUT_MS", "3000"}}));
}

TEST(Ib, UnknownDeviceIsAClearErrorOrFallsBackToTcp) {
  REQUIRE_RXE();
  RankOptions only = ibRanks(1);
  only.setup = [](int) { setenv("BRAID_IB_HCA", "=nosuchhca", 1); };
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, n, id, r), braidSuccess);
        std::string err = braidGetLastError(nullptr);
        EXPECT_NE(err.find("BRAID_IB_HCA"), std::string::npos) << err;
      },
      only);
  RankOptions fallback = only;
  fallback.env.push_back({"BRAID_TRANSPORTS", "ib,tcp"});
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        allreduceChecked(comm, r, n, 1000, 1);
        for (const auto& s : pathStats(comm)) EXPECT_STREQ(s.transport, "tcp");
        EXPECT_EQ(braidCommDestroy(comm), braidSuccess);
      },
      fallback);
}

TEST(Ib, BadGidIndexNamesTheVariable) {
  REQUIRE_RXE();
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = nullptr;
        EXPECT_NE(braidCommInitRank(&comm, n, id, r), braidSuccess);
        std::string err = braidGetLastError(nullptr);
        EXPECT_NE(err.find("BRAID_IB_GID_INDEX"), std::string::npos) << err;
      },
      ibRanks(1, {{"BRAID_IB_GID_INDEX", "999"}}));
}

}  // namespace
}  // namespace braid::test
