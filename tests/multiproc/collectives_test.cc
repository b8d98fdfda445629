// Correctness of every collective x dtype x op at counts 0, 1, 7, 1000 (and 1 Mi + 3 for a
// subset), in place and out of place, on world sizes 1, 2, 3, 4, 5 and 8. Ranks are processes.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <numeric>
#include <string>
#include <thread>

#include "harness/ranks.h"
#include "harness/values.h"
#include "src/core/config.h"
#include "src/core/handles.h"
#include "transports/transport.h"

namespace braid::test {
namespace {

struct Case {
  braidDataType_t dt;
  braidRedOp_t op;
  size_t count;
  bool inPlace;
};

std::string name(const Case& c, const char* coll) {
  return std::string(coll) + " " + dtypeName(c.dt) + " " + opName(c.op) + " count " +
         std::to_string(c.count) + (c.inPlace ? " in-place" : "");
}

// Checks n elements of got against want; reports the first mismatch only.
void expectEqual(Buf& got, Buf& want, size_t n, const std::string& what, int rank) {
  for (size_t i = 0; i < n; ++i) {
    if (!sameElem(got.data(), want.data(), got.dt, i)) {
      ADD_FAILURE() << "rank " << rank << ": " << what << ": element " << i << " differs";
      return;
    }
  }
}

void checkAllReduce(braidComm_t comm, int r, int n, const Case& c) {
  Buf send(c.count, c.dt), recv(c.count, c.dt), want(c.count, c.dt);
  for (size_t i = 0; i < c.count; ++i) {
    put(send.data(), c.dt, i, inputValue(c.op, r, n, i));
    put(want.data(), c.dt, i, expectedValue(c.op, n, i));
  }
  void* out = c.inPlace ? send.data() : recv.data();
  BRAID_ASSERT_OK(braidAllReduce(send.data(), out, c.count, c.dt, c.op, comm, nullptr), comm);
  Buf& got = c.inPlace ? send : recv;
  expectEqual(got, want, c.count, name(c, "allreduce"), r);
}

void checkReduce(braidComm_t comm, int r, int n, const Case& c, int root) {
  Buf send(c.count, c.dt), recv(c.count, c.dt), want(c.count, c.dt);
  for (size_t i = 0; i < c.count; ++i) {
    put(send.data(), c.dt, i, inputValue(c.op, r, n, i));
    put(want.data(), c.dt, i, expectedValue(c.op, n, i));
  }
  void* out = c.inPlace ? send.data() : recv.data();
  BRAID_ASSERT_OK(braidReduce(send.data(), out, c.count, c.dt, c.op, root, comm, nullptr), comm);
  if (r == root) {
    expectEqual(c.inPlace ? send : recv, want, c.count,
                name(c, "reduce") + " root " + std::to_string(root), r);
  }
}

void checkBroadcast(braidComm_t comm, int r, int n, const Case& c, int root) {
  Buf buf(c.count, c.dt), recv(c.count, c.dt), want(c.count, c.dt);
  for (size_t i = 0; i < c.count; ++i) {
    put(buf.data(), c.dt, i, r == root ? inputValue(braidSum, root, n, i) : 0);
    put(want.data(), c.dt, i, inputValue(braidSum, root, n, i));
  }
  void* out = c.inPlace ? buf.data() : recv.data();
  BRAID_ASSERT_OK(braidBroadcast(buf.data(), out, c.count, c.dt, root, comm, nullptr), comm);
  expectEqual(c.inPlace ? buf : recv, want, c.count,
              name(c, "broadcast") + " root " + std::to_string(root), r);
}

void checkAllGather(braidComm_t comm, int r, int n, const Case& c) {
  Buf send(c.count, c.dt), recv(c.count * n, c.dt), want(c.count * n, c.dt);
  for (size_t i = 0; i < c.count; ++i) put(send.data(), c.dt, i, inputValue(braidSum, r, n, i));
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < c.count; ++i) {
      put(want.data(), c.dt, q * c.count + i, inputValue(braidSum, q, n, i));
    }
  }
  const void* in = send.data();
  if (c.inPlace) {
    std::memcpy(recv.bytes.data() + r * c.count * dtypeSize(c.dt), send.data(),
                c.count * dtypeSize(c.dt));
    in = recv.bytes.data() + r * c.count * dtypeSize(c.dt);
  }
  BRAID_ASSERT_OK(braidAllGather(in, recv.data(), c.count, c.dt, comm, nullptr), comm);
  expectEqual(recv, want, c.count * n, name(c, "allgather"), r);
}

void checkReduceScatter(braidComm_t comm, int r, int n, const Case& c) {
  Buf send(c.count * n, c.dt), recv(c.count, c.dt), want(c.count, c.dt);
  for (size_t i = 0; i < c.count * n; ++i) put(send.data(), c.dt, i, inputValue(c.op, r, n, i));
  for (size_t i = 0; i < c.count; ++i) {
    put(want.data(), c.dt, i, expectedValue(c.op, n, r * c.count + i));
  }
  void* out = c.inPlace ? send.bytes.data() + r * c.count * dtypeSize(c.dt) : recv.data();
  BRAID_ASSERT_OK(braidReduceScatter(send.data(), out, c.count, c.dt, c.op, comm, nullptr), comm);
  if (c.inPlace) std::memcpy(recv.data(), out, c.count * dtypeSize(c.dt));
  expectEqual(recv, want, c.count, name(c, "reducescatter"), r);
}

void checkAllToAll(braidComm_t comm, int r, int n, const Case& c) {
  Buf send(c.count * n, c.dt), recv(c.count * n, c.dt), want(c.count * n, c.dt);
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < c.count; ++i) {
      put(send.data(), c.dt, q * c.count + i, a2aValue(r, q, i));
      put(want.data(), c.dt, q * c.count + i, a2aValue(q, r, i));
    }
  }
  void* out = c.inPlace ? send.data() : recv.data();
  BRAID_ASSERT_OK(braidAllToAll(send.data(), out, c.count, c.dt, comm, nullptr), comm);
  expectEqual(c.inPlace ? send : recv, want, c.count * n, name(c, "alltoall"), r);
}

size_t a2avCount(int from, int to, size_t base) { return base + (from + 2 * to) % 3; }

void checkAllToAllv(braidComm_t comm, int r, int n, const Case& c) {
  std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
  for (int q = 0; q < n; ++q) {
    sc[q] = a2avCount(r, q, c.count);
    rc[q] = a2avCount(q, r, c.count);
  }
  // Displacements with a gap of 2 elements between blocks, in reverse peer order.
  size_t off = 0;
  for (int q = n - 1; q >= 0; --q) {
    sd[q] = off;
    off += sc[q] + 2;
  }
  Buf send(off, c.dt);
  off = 0;
  for (int q = 0; q < n; ++q) {
    rd[q] = off;
    off += rc[q] + 1;
  }
  Buf recv(off, c.dt), want(off, c.dt);
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < sc[q]; ++i) put(send.data(), c.dt, sd[q] + i, a2aValue(r, q, i));
    for (size_t i = 0; i < rc[q]; ++i) put(want.data(), c.dt, rd[q] + i, a2aValue(q, r, i));
  }
  BRAID_ASSERT_OK(braidAllToAllv(send.data(), sc.data(), sd.data(), recv.data(), rc.data(),
                                 rd.data(), c.dt, comm, nullptr),
                  comm);
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < rc[q]; ++i) {
      if (!sameElem(recv.data(), want.data(), c.dt, rd[q] + i)) {
        ADD_FAILURE() << "rank " << r << ": " << name(c, "alltoallv") << " from " << q
                      << " element " << i;
        return;
      }
    }
  }
}

// All-to-allv in place: blocks of uneven but symmetric sizes (rank r's block for q is as long
// as q's for r). Layout 0: each peer's block received where this rank's block for it was;
// 1: the same, with gaps, in reverse peer order; 2: sent from blocks in peer order, received
// into blocks in reverse peer order (received blocks overwrite others' blocks still to send).
void checkAllToAllvInPlace(braidComm_t comm, int r, int n, const Case& c, int layout) {
  std::vector<size_t> cnt(n), sd(n), rd(n);
  size_t off = 0, roff = 0;
  for (int k = 0; k < n; ++k) {
    const int q = layout == 1 ? n - 1 - k : k;
    cnt[q] = c.count + (r + q) % 3;
    sd[q] = off;
    off += cnt[q] + (layout == 1 ? 3 : 0);
  }
  for (int k = 0; k < n; ++k) {
    const int q = layout == 0 ? k : n - 1 - k;
    rd[q] = layout == 2 ? roff : sd[q];
    roff += cnt[q];
  }
  Buf buf(off, c.dt), want(off, c.dt);
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < cnt[q]; ++i) {
      put(buf.data(), c.dt, sd[q] + i, a2aValue(r, q, i));
      put(want.data(), c.dt, rd[q] + i, a2aValue(q, r, i));
    }
  }
  BRAID_ASSERT_OK(braidAllToAllv(buf.data(), cnt.data(), sd.data(), buf.data(), cnt.data(),
                                 rd.data(), c.dt, comm, nullptr),
                  comm);
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < cnt[q]; ++i) {
      if (!sameElem(buf.data(), want.data(), c.dt, rd[q] + i)) {
        ADD_FAILURE() << "rank " << r << ": " << name(c, "alltoallv in place") << " layout "
                      << layout << " from " << q << " element " << i;
        return;
      }
    }
  }
}

void checkSendRecvRing(braidComm_t comm, int r, int n, const Case& c) {
  Buf send(c.count, c.dt), recv(c.count, c.dt), want(c.count, c.dt);
  int to = (r + 1) % n, from = (r + n - 1) % n;
  for (size_t i = 0; i < c.count; ++i) {
    put(send.data(), c.dt, i, a2aValue(r, to, i));
    put(want.data(), c.dt, i, a2aValue(from, r, i));
  }
  BRAID_ASSERT_OK(braidGroupStart(), comm);
  BRAID_ASSERT_OK(braidSend(send.data(), c.count, c.dt, to, comm, nullptr), comm);
  BRAID_ASSERT_OK(braidRecv(recv.data(), c.count, c.dt, from, comm, nullptr), comm);
  BRAID_ASSERT_OK(braidGroupEnd(), comm);
  expectEqual(recv, want, c.count, name(c, "send/recv ring"), r);
}

void runMatrix(braidComm_t comm, int r, int n, const std::vector<braidDataType_t>& types,
               const std::vector<braidRedOp_t>& ops, const std::vector<size_t>& counts) {
  for (size_t count : counts) {
    for (braidDataType_t dt : types) {
      for (bool inPlace : {false, true}) {
        for (braidRedOp_t op : ops) {
          Case c{dt, op, count, inPlace};
          checkAllReduce(comm, r, n, c);
          checkReduce(comm, r, n, c, n - 1);
          checkReduceScatter(comm, r, n, c);
          if (::testing::Test::HasFatalFailure()) return;
        }
        Case c{dt, braidSum, count, inPlace};
        checkBroadcast(comm, r, n, c, 0);
        checkBroadcast(comm, r, n, c, n / 2);
        checkAllGather(comm, r, n, c);
        checkAllToAll(comm, r, n, c);
        if (!inPlace) {
          checkAllToAllv(comm, r, n, c);
          checkSendRecvRing(comm, r, n, c);
        }
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
  BRAID_ASSERT_OK(braidBarrier(comm, nullptr), comm);
}

// The same suite over every transport: tcp only, shm only (all ranks share this host; small
// calls through the fast boxes), shm through its rings only (no single-copy reads, no fast
// boxes), and both at once (a topology file puts even and
// odd ranks on two virtual nodes: shm inside a node, tcp between them, so every ring step crosses).
struct Param {
  const char* transport;
  int n;
};

RankOptions transportOptions(const Param& p) {
  RankOptions opt;
  if (std::string(p.transport) == "mixed") {
    std::string path = ::testing::TempDir() + "collectives_mixed_" + std::to_string(p.n) + ".json";
    std::string even, odd;
    for (int r = 0; r < p.n; ++r) {
      std::string& list = r % 2 == 0 ? even : odd;
      list += (list.empty() ? "" : ", ") + std::to_string(r);
    }
    std::ofstream(path) << "{\"nodes\": [{\"ranks\": [" << even << "]}"
                        << (odd.empty() ? "" : ", {\"ranks\": [" + odd + "]}") << "]}";
    opt.env = {{"BRAID_TOPO_FILE", path}, {"BRAID_TRANSPORTS", "shm,tcp"}};
  } else if (std::string(p.transport) == "shmring") {
    // Shared memory without single-copy reads or fast boxes: every large message streams
    // through a small ring that wraps many times, and small ones go through the rings too.
    opt.env = {{"BRAID_TRANSPORTS", "shm"},
               {"BRAID_SHM_CMA", "0"},
               {"BRAID_SHM_FAST_BYTES", "0"},
               {"BRAID_EAGER_BYTES", "4096"},
               {"BRAID_SHM_RING_BYTES", "65536"}};
  } else {
    opt.env = {{"BRAID_TRANSPORTS", p.transport}};
  }
  return opt;
}

// ib runs only where an RDMA port is active (the Soft-RoCE guest of tools/rxe-vm, label rxe).
class Collectives : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    Config cfg;
    if (std::string(GetParam().transport) == "ib" && !findTransport("ib")->usable(cfg)) {
      GTEST_SKIP() << "no active RDMA port: " << findTransport("ib")->unusableReason(cfg);
    }
  }
};

TEST_P(Collectives, EveryDtypeOpAndSmallCount) {
  const int n = GetParam().n;
  const bool full = n == 3 || n == 4;
  std::vector<braidDataType_t> types(std::begin(kAllTypes), std::end(kAllTypes));
  std::vector<braidRedOp_t> ops(std::begin(kAllOps), std::end(kAllOps));
  if (!full) {
    types = {braidInt8, braidUint64, braidFloat16, braidBfloat16, braidFloat32};
    ops = {braidSum, braidProd, braidMax, braidAvg};
  }
  runRanks(
      n,
      [&](int r, int nr, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, nr, id);
        ASSERT_NE(comm, nullptr);
        runMatrix(comm, r, nr, types, ops, {0, 1, 7, 1000});
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      transportOptions(GetParam()));
}

TEST_P(Collectives, LargeCounts) {
  const int n = GetParam().n;
  runRanks(
      n,
      [&](int r, int nr, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, nr, id);
        ASSERT_NE(comm, nullptr);
        const size_t big = (size_t{1} << 20) + 3;
        for (auto [dt, op] : {std::pair{braidFloat32, braidSum}, std::pair{braidInt8, braidMax},
                              std::pair{braidBfloat16, braidSum}}) {
          Case c{dt, op, big, false};
          checkAllReduce(comm, r, nr, c);
          checkReduce(comm, r, nr, c, 0);
          checkBroadcast(comm, r, nr, Case{dt, braidSum, big, true}, nr - 1);
          Case per{dt, op, big / nr + 1, false};
          checkReduceScatter(comm, r, nr, per);
          checkAllGather(comm, r, nr, per);
          checkAllToAll(comm, r, nr, per);
          if (::testing::Test::HasFatalFailure()) return;
        }
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      transportOptions(GetParam()));
}

std::vector<Param> params() {
  std::vector<Param> out;
  for (const char* t : {"tcp", "shm", "shmring", "mixed"}) {
    for (int n : {1, 2, 3, 4, 5, 8}) {
      if (n > 1 || std::string(t) == "tcp") out.push_back({t, n});
    }
  }
  for (int n : {2, 3, 4}) out.push_back({"ib", n});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Transports, Collectives, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           std::string name = info.param.transport;
                           name += "_n";
                           name += std::to_string(info.param.n);
                           return name;
                         });

TEST(CollectivesBig, AllReduce64MiB) {
  runRanks(4, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    const size_t count = size_t{16} << 20;  // 64 MiB of float32
    std::vector<float> buf(count);
    for (size_t i = 0; i < count; ++i) buf[i] = static_cast<float>((r * 3 + i) % 5 + 1);
    BRAID_ASSERT_OK(
        braidAllReduce(buf.data(), buf.data(), count, braidFloat32, braidSum, comm, nullptr), comm);
    for (size_t i = 0; i < count; ++i) {
      float want = 0;
      for (int q = 0; q < n; ++q) want += static_cast<float>((q * 3 + i) % 5 + 1);
      if (buf[i] != want) {
        ADD_FAILURE() << "rank " << r << ": element " << i << " is " << buf[i] << ", want " << want;
        break;
      }
    }
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

// Every allreduce algorithm, forced, over shapes that stress its edges (folded ranks for
// non-powers of two, counts smaller than the rank count, many small chunks).
TEST(CollectivesAlgos, EveryAllReduceAlgorithmForced) {
  for (const char* algo : {"ring", "rd", "rhd"}) {
    for (int n : {2, 3, 4, 5, 6, 8}) {
      RankOptions opt;
      opt.env = {{"BRAID_ALGO", std::string("allreduce=") + algo}, {"BRAID_CHUNK_BYTES", "4096"}};
      runRanks(
          n,
          [](int r, int nr, const braidUniqueId& id) {
            braidComm_t comm = initComm(r, nr, id);
            ASSERT_NE(comm, nullptr);
            for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{20011}}) {
              for (braidDataType_t dt : {braidInt32, braidFloat32, braidBfloat16, braidFloat64}) {
                for (braidRedOp_t op : {braidSum, braidProd, braidMax, braidAvg}) {
                  for (bool inPlace : {false, true}) {
                    checkAllReduce(comm, r, nr, Case{dt, op, count, inPlace});
                    if (::testing::Test::HasFatalFailure()) return;
                  }
                }
              }
            }
            BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
          },
          opt);
    }
  }
}

TEST(CollectivesAlgos, EveryAllGatherAlgorithmForced) {
  for (const char* algo : {"ring", "bruck"}) {
    RankOptions opt;
    opt.env = {{"BRAID_ALGO", std::string("allgather=") + algo}, {"BRAID_CHUNK_BYTES", "4096"}};
    for (int n : {1, 2, 3, 5, 8}) {
      runRanks(
          n,
          [](int r, int nr, const braidUniqueId& id) {
            braidComm_t comm = initComm(r, nr, id);
            ASSERT_NE(comm, nullptr);
            for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{3001}}) {
              for (braidDataType_t dt : {braidInt8, braidFloat32, braidFloat64}) {
                for (bool inPlace : {false, true}) {
                  checkAllGather(comm, r, nr, Case{dt, braidSum, count, inPlace});
                  if (::testing::Test::HasFatalFailure()) return;
                }
              }
            }
            BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
          },
          opt);
    }
  }
}

// The pipelined reduce-scatter ring, reduce chain and halving-doubling allreduce (with its
// fold on 3 and 5 ranks), forced, with many chunks in a few rotating buffers: odd counts, in
// and out of place, every root; with messages above the eager limit too (a send then waits
// for its receive to be posted: a buffer taken in the wrong order would deadlock). Their
// scratch is a few chunks, not the message.
TEST(CollectivesAlgos, PipelinedReductionsForced) {
  for (const char* eager : {"65536", "0"}) {
    for (int n : {2, 3, 4, 5, 8}) {
      SCOPED_TRACE(::testing::Message() << n << " ranks, BRAID_EAGER_BYTES " << eager);
      RankOptions opt;
      opt.env = {{"BRAID_ALGO", "reducescatter=ring,reduce=chain,allreduce=rhd"},
                 {"BRAID_CHUNK_BYTES", "4096"},
                 {"BRAID_EAGER_BYTES", eager},
                 {"BRAID_TRANSPORTS", "tcp"}};
      runRanks(
          n,
          [](int r, int nr, const braidUniqueId& id) {
            braidComm_t comm = initComm(r, nr, id);
            ASSERT_NE(comm, nullptr);
            for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{20011}}) {
              for (braidDataType_t dt : {braidInt32, braidFloat32, braidBfloat16}) {
                for (braidRedOp_t op : {braidSum, braidMax, braidAvg}) {
                  for (bool inPlace : {false, true}) {
                    Case c{dt, op, count, inPlace};
                    checkReduceScatter(comm, r, nr, c);
                    checkReduce(comm, r, nr, c, static_cast<int>(count % nr));
                    checkAllReduce(comm, r, nr, c);
                    if (::testing::Test::HasFatalFailure()) return;
                  }
                }
              }
            }
            // 64 chunks per rank's block: the scratch kept is the rotating buffers' few chunks.
            Case big{braidFloat32, braidSum, 64 * 1024, false};
            checkReduceScatter(comm, r, nr, big);
            checkReduce(comm, r, nr, big, nr - 1);
            checkAllReduce(comm, r, nr, big);
            size_t kept = comm->impl->scratchPool()->freeBytes();
            EXPECT_LE(kept, size_t{128} << 10) << "scratch kept after a 256 KiB-per-rank call";
            BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
          },
          opt);
    }
  }
}

// The pairwise all-to-all(v) in place, forced: each peer's block staged in a few rotating
// buffers (it was the whole message: memory grew to 5 times the message in a size sweep),
// with messages above the eager limit too; with other layouts in place (a full copy); and
// with some ranks in place and others not.
TEST(CollectivesAlgos, InPlaceAllToAllScratchIsAFewBlocks) {
  for (const char* eager : {"65536", "0"}) {
    for (int n : {3, 4, 5, 8}) {
      SCOPED_TRACE(::testing::Message() << n << " ranks, BRAID_EAGER_BYTES " << eager);
      RankOptions opt;
      opt.env = {{"BRAID_ALGO", "alltoall=pairwise"},
                 {"BRAID_ALLTOALL_WINDOW", "2"},
                 {"BRAID_EAGER_BYTES", eager},
                 {"BRAID_TRANSPORTS", "tcp"}};
      runRanks(
          n,
          [](int r, int nr, const braidUniqueId& id) {
            braidComm_t comm = initComm(r, nr, id);
            ASSERT_NE(comm, nullptr);
            // On a fresh communicator (its scratch pool keeps what calls used).
            const size_t block = 64 * 1024;
            checkAllToAll(comm, r, nr, Case{braidFloat32, braidSum, block, true});
            EXPECT_LE(comm->impl->scratchPool()->freeBytes(), 2 * block * 4 + 8192)
                << "scratch kept after an in-place all-to-all of " << nr << " blocks";
            for (size_t count : {size_t{0}, size_t{1}, size_t{1000}, size_t{20011}}) {
              for (braidDataType_t dt : {braidInt8, braidFloat64}) {
                Case c{dt, braidSum, count, true};
                checkAllToAll(comm, r, nr, c);
                for (int layout : {0, 1, 2}) checkAllToAllvInPlace(comm, r, nr, c, layout);
                // Some ranks in place, the others not: every rank takes the same steps (an
                // order of its own hung the others above the eager limit).
                checkAllToAll(comm, r, nr, Case{dt, braidSum, count, r % 3 == 0});
                if (::testing::Test::HasFatalFailure()) return;
              }
            }
            BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
          },
          opt);
    }
  }
}

// A topology file of nodes with the given numbers of (contiguous) ranks.
std::string topologyFile(const std::string& name, const std::vector<int>& sizes) {
  std::string path = ::testing::TempDir() + name + ".json", nodes;
  int next = 0;
  for (int size : sizes) {
    std::string ranks;
    for (int i = 0; i < size; ++i) ranks += (i ? ", " : "") + std::to_string(next++);
    nodes += (nodes.empty() ? "" : ", ") + ("{\"ranks\": [" + ranks + "]}");
  }
  std::ofstream(path) << "{\"nodes\": [" << nodes << "]}";
  return path;
}

// Every collective under topology files of even shapes (2x2, 4x2, 3x3: the hierarchical and
// rail-aligned algorithms, forced) and uneven ones (they fall back to the flat algorithms):
// every dtype class and op, odd counts, in and out of place, many chunks.
TEST(CollectivesHier, EveryCollectiveOnEveryShape) {
  for (const std::vector<int>& sizes :
       {std::vector<int>{2, 2}, std::vector<int>{2, 2, 2, 2}, std::vector<int>{3, 3, 3},
        std::vector<int>{3, 2}, std::vector<int>{1, 3}}) {
    RankOptions opt;
    opt.env = {{"BRAID_TOPO_FILE", topologyFile("hier_shape", sizes)},
               {"BRAID_ALGO",
                "allreduce=hier,allgather=hier,reducescatter=hier,alltoall=rail,broadcast=hier,"
                "reduce=hier"},
               {"BRAID_CHUNK_BYTES", "4096"}};
    const int n = std::accumulate(sizes.begin(), sizes.end(), 0);
    runRanks(
        n,
        [](int r, int nr, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, nr, id);
          ASSERT_NE(comm, nullptr);
          runMatrix(comm, r, nr, {braidInt32, braidFloat32, braidBfloat16},
                    {braidSum, braidMax, braidAvg}, {0, 1, 7, 1000, 5003});
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        opt);
  }
}

// The hierarchical allreduce, reduce and reduce-scatter, forced, with many chunks through
// their rotating buffers, with messages above the eager limit too (a send then waits for its
// receive: a buffer taken in the wrong order would deadlock). Their scratch is a few chunks
// (reduce-scatter: and the 1/L of the message its rail reduces), not the message.
TEST(CollectivesHier, ReductionsScratchIsAFewChunks) {
  for (const char* eager : {"65536", "0"}) {
    for (const std::vector<int>& sizes : {std::vector<int>{2, 2}, std::vector<int>{3, 3}}) {
      SCOPED_TRACE(::testing::Message()
                   << sizes.size() << " nodes of " << sizes[0] << ", BRAID_EAGER_BYTES " << eager);
      RankOptions opt;
      opt.env = {{"BRAID_TOPO_FILE", topologyFile("hier_scratch", sizes)},
                 {"BRAID_ALGO", "allreduce=hier,reducescatter=hier,reduce=hier"},
                 {"BRAID_CHUNK_BYTES", "4096"},
                 {"BRAID_EAGER_BYTES", eager}};
      const int n = std::accumulate(sizes.begin(), sizes.end(), 0);
      runRanks(
          n,
          [&](int r, int nr, const braidUniqueId& id) {
            braidComm_t comm = initComm(r, nr, id);
            ASSERT_NE(comm, nullptr);
            // First, on a fresh communicator (its scratch pool keeps what calls used): 64
            // chunks per rank's block.
            const size_t count = 64 * 1024, fewChunks = size_t{128} << 10;
            checkAllReduce(comm, r, nr, Case{braidFloat32, braidSum, count * nr, false});
            EXPECT_LE(comm->impl->scratchPool()->freeBytes(), fewChunks)
                << "scratch kept after an allreduce of " << count * nr * 4 << " bytes";
            checkReduce(comm, r, nr, Case{braidFloat32, braidSum, count * nr, false}, nr - 1);
            EXPECT_LE(comm->impl->scratchPool()->freeBytes(), 2 * fewChunks)
                << "scratch kept after a reduce of " << count * nr * 4 << " bytes";
            checkReduceScatter(comm, r, nr, Case{braidFloat32, braidSum, count, false});
            const size_t railBlocks = sizes.size() * count * 4;
            EXPECT_LE(comm->impl->scratchPool()->freeBytes(), railBlocks + 3 * fewChunks)
                << "scratch kept after a reduce-scatter of " << count * nr * 4 << " bytes";
            for (size_t small : {size_t{1}, size_t{1000}, size_t{20011}}) {
              for (bool inPlace : {false, true}) {
                Case c{braidFloat32, braidAvg, small, inPlace};
                checkAllReduce(comm, r, nr, c);
                checkReduceScatter(comm, r, nr, c);
                for (int root = 0; root < nr; ++root) checkReduce(comm, r, nr, c, root);
                if (::testing::Test::HasFatalFailure()) return;
              }
            }
            BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
          },
          opt);
    }
  }
}

// 4 nodes x 2 ranks: between nodes, a rank sends only to the ranks of its own local index
// (its rail), and no more than the algorithm's share: allreduce 2(N-1)/N of its 1/L part,
// all-gather and reduce-scatter N-1 blocks, all-to-all N-1 messages of L blocks, broadcast
// and reduce the message once.
TEST(CollectivesHier, InterNodeBytesStayOnTheirRail) {
  RankOptions opt;
  // All-to-all of large blocks would take the pairwise exchange (the cost model): force the
  // rail-aligned one, whose traffic this test is about.
  opt.env = {{"BRAID_TOPO_FILE", topologyFile("hier_rail", {2, 2, 2, 2})},
             {"BRAID_ALGO", "alltoall=rail"}};
  runRanks(
      8,
      [](int r, int n, const braidUniqueId& id) {
        braidComm_t comm = initComm(r, n, id);
        ASSERT_NE(comm, nullptr);
        const size_t count = (size_t{1} << 20) + 5;
        const TransportSet* t = comm->impl->transports();
        const NodeMap& nm = comm->impl->nodes();
        // Bytes this rank sent to other nodes since the last call; none off its rail.
        std::vector<uint64_t> before(n, 0);
        auto interSince = [&] {
          uint64_t inter = 0;
          for (int q = 0; q < n; ++q) {
            uint64_t now = t->sentTo(q), d = now - before[q];
            before[q] = now;
            if (nm.sameNode(q, r)) continue;
            inter += d;
            if (nm.localRank(q) != nm.localRank(r)) {
              EXPECT_EQ(d, 0u) << "rank " << r << " sent to rank " << q << " off its rail";
            }
          }
          return inter;
        };
        const double N = 4, L = 2, bytes = count * 4.0;
        checkAllReduce(comm, r, n, Case{braidFloat32, braidSum, count, false});
        uint64_t inter = interSince();
        EXPECT_GT(inter, 0u);
        EXPECT_LE(inter, 2 * (N - 1) / N * bytes / L + 64) << "allreduce, rank " << r;
        const size_t per = count / n;  // elements per rank's block
        checkAllGather(comm, r, n, Case{braidFloat32, braidSum, per, false});
        EXPECT_LE(interSince(), (N - 1) * per * 4) << "allgather, rank " << r;
        checkReduceScatter(comm, r, n, Case{braidFloat32, braidSum, per, false});
        EXPECT_LE(interSince(), (N - 1) * per * 4) << "reduce-scatter, rank " << r;
        checkAllToAll(comm, r, n, Case{braidFloat32, braidSum, per, false});
        EXPECT_LE(interSince(), (N - 1) * L * per * 4) << "all-to-all, rank " << r;
        checkBroadcast(comm, r, n, Case{braidFloat32, braidSum, count, false}, 3);
        EXPECT_LE(interSince(), bytes) << "broadcast, rank " << r;
        checkReduce(comm, r, n, Case{braidFloat32, braidSum, count, false}, 3);
        EXPECT_LE(interSince(), bytes) << "reduce, rank " << r;
        BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
      },
      opt);
}

// Random floats: every rank must end with the very same bits (same reduction order).
TEST(CollectivesBig, AllReduceIsBitIdenticalAcrossRanks) {
  for (auto [n, algo] : {std::pair{3, ""}, std::pair{5, ""}, std::pair{6, "allreduce=rhd"}}) {
    RankOptions opt;
    opt.env = {{"BRAID_ALGO", algo}};
    runRanks(
        n,
        [](int r, int nr, const braidUniqueId& id) {
          braidComm_t comm = initComm(r, nr, id);
          ASSERT_NE(comm, nullptr);
          for (size_t count : {size_t{1000}, size_t{300001}}) {
            for (braidDataType_t dt : {braidFloat32, braidFloat16, braidBfloat16, braidFloat64}) {
              Buf buf(count, dt);
              uint64_t x = 0x9e3779b97f4a7c15ull * (r + 1);
              for (size_t i = 0; i < buf.bytes.size() - 1; ++i) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.bytes[i] = static_cast<char>(x);
              }
              // Keep the values finite: clear the exponent's top bit of each element.
              size_t es = dtypeSize(dt);
              for (size_t i = 0; i < count; ++i) buf.bytes[i * es + es - 1] &= 0x3f;
              BRAID_ASSERT_OK(
                  braidAllReduce(buf.data(), buf.data(), count, dt, braidSum, comm, nullptr), comm);
              std::vector<char> root(buf.bytes.begin(), buf.bytes.end() - 1);
              BRAID_ASSERT_OK(braidBroadcast(root.data(), root.data(), root.size(), braidUint8, 0,
                                             comm, nullptr),
                              comm);
              EXPECT_EQ(std::memcmp(root.data(), buf.data(), root.size()), 0)
                  << "rank " << r << " differs from rank 0 for " << dtypeName(dt) << " count "
                  << count;
            }
          }
          BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
        },
        opt);
  }
}

// Collectives of count 0 move nothing and return at once (as in NCCL and MPI), NULL buffers
// allowed, on the NULL stream, on a stream and in a group, without waiting for a late rank; they
// still take their call numbers, so the next real call matches on every rank.
TEST(CollectivesZero, CountZeroReturnsAtOnceAndKeepsTheCallsInStep) {
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braidComm_t comm = initComm(r, n, id);
    ASSERT_NE(comm, nullptr);
    braidStream_t stream = nullptr;
    BRAID_ASSERT_OK(braidStreamCreate(&stream), comm);
    if (r == 2) std::this_thread::sleep_for(std::chrono::seconds(2));  // the late rank
    const double t0 = now();
    for (braidStream_t st : {static_cast<braidStream_t>(nullptr), stream}) {
      BRAID_ASSERT_OK(braidAllReduce(nullptr, nullptr, 0, braidFloat32, braidSum, comm, st), comm);
      BRAID_ASSERT_OK(braidBroadcast(nullptr, nullptr, 0, braidInt8, 1, comm, st), comm);
      BRAID_ASSERT_OK(braidReduce(nullptr, nullptr, 0, braidInt32, braidMax, 2, comm, st), comm);
      BRAID_ASSERT_OK(braidAllGather(nullptr, nullptr, 0, braidFloat64, comm, st), comm);
      BRAID_ASSERT_OK(braidReduceScatter(nullptr, nullptr, 0, braidUint8, braidSum, comm, st),
                      comm);
      BRAID_ASSERT_OK(braidAllToAll(nullptr, nullptr, 0, braidInt64, comm, st), comm);
    }
    BRAID_ASSERT_OK(braidGroupStart(), comm);
    BRAID_ASSERT_OK(braidAllReduce(nullptr, nullptr, 0, braidFloat32, braidSum, comm, nullptr),
                    comm);
    BRAID_ASSERT_OK(braidGroupEnd(), comm);
    EXPECT_LT(now() - t0, 1.0) << "rank " << r << " waited for the late rank";
    // Still rejected with count 0: a root out of range.
    EXPECT_EQ(braidBroadcast(nullptr, nullptr, 0, braidInt8, 7, comm, nullptr),
              braidInvalidArgument);
    BRAID_ASSERT_OK(braidStreamSynchronize(stream), comm);
    int v = r + 1;
    BRAID_ASSERT_OK(braidAllReduce(&v, &v, 1, braidInt32, braidSum, comm, nullptr), comm);
    EXPECT_EQ(v, n * (n + 1) / 2);
    BRAID_ASSERT_OK(braidStreamDestroy(stream), comm);
    BRAID_ASSERT_OK(braidCommDestroy(comm), nullptr);
  });
}

}  // namespace
}  // namespace braid::test
