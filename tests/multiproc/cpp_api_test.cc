// The C++ wrapper (include/braid/braid.hpp) as a framework uses it: RAII communicator, stream
// and group, span-based calls, split, errors as braid::Error with the C API's code. Buffer
// sizes that do not fit the call throw before anything is sent (on every rank that sees them,
// so no peer is left waiting), a reduce's root checks its output, and an all-to-all whose
// send is not whole blocks is refused instead of truncated.
#include <gtest/gtest.h>

#include <array>
#include <braid/braid.hpp>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "harness/ranks.h"

namespace braid::test {
namespace {

// Runs f, which must throw braid::Error with `code` and a message containing `text`.
template <typename F>
void expectError(F&& f, braidResult_t code, const std::string& text) {
  try {
    f();
    ADD_FAILURE() << "no exception (expected: " << text << ")";
  } catch (const braid::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(CppApi, CollectivesStreamsGroupsAndSplit) {
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braid::Communicator comm(n, id, r);
    ASSERT_EQ(comm.rank(), r);
    ASSERT_EQ(comm.size(), n);
    std::vector<float> send(1000, static_cast<float>(r + 1)), recv(1000, 0);
    comm.allReduce<float>(send, recv);
    EXPECT_EQ(recv[999], 6.0f);
    comm.allReduce<float>(send);  // in place
    EXPECT_EQ(send[0], 6.0f);
    std::vector<int32_t> b(10, r == 1 ? 42 : 0);
    comm.broadcast<int32_t>(b, 1);
    EXPECT_EQ(b[9], 42);
    std::vector<double> mine(5, r), root(r == 2 ? 5 : 0);  // recv only on the root
    comm.reduce<double>(mine, root, 2, braidMax);
    if (r == 2) {
      EXPECT_EQ(root[4], 2.0);
    }
    std::vector<int32_t> blocks(3 * 4), got(3 * 4, -1);
    std::iota(blocks.begin(), blocks.end(), 100 * r);
    comm.allToAll<int32_t>(blocks, got);
    for (int p = 0; p < n; ++p) EXPECT_EQ(got[p * 4], 100 * p + 4 * r) << "block from " << p;
    // A ring exchange in one group, then an allgather on a stream.
    int32_t out = r, in = -1;
    {
      braid::Group g;
      comm.send<int32_t>({&out, 1}, (r + 1) % n);
      comm.recv<int32_t>({&in, 1}, (r + n - 1) % n);
    }
    EXPECT_EQ(in, (r + n - 1) % n);
    braid::Stream stream;
    std::vector<int64_t> one{r}, all(3, -1);
    comm.allGather<int64_t>(one, all, &stream);
    stream.synchronize();
    EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 2}));
    // Split: ranks 0 and 2 together, rank 1 alone.
    braid::Communicator half = comm.split(r % 2, r);
    ASSERT_TRUE(half);
    EXPECT_EQ(half.size(), r % 2 == 0 ? 2 : 1);
    float v = 1;
    half.allReduce<float>({&v, 1});
    EXPECT_EQ(v, r % 2 == 0 ? 2.0f : 1.0f);
  });
}

TEST(CppApi, BuffersThatDoNotFitThrowBeforeAnythingMoves) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braid::Communicator comm(n, id, r);
    std::vector<float> ten(10), nine(9);
    expectError([&] { comm.allReduce<float>(ten, nine); }, braidInvalidArgument,
                "allReduce: recv has 9 elements where the call needs 10");
    expectError([&] { comm.allGather<float>(ten, ten); }, braidInvalidArgument,
                "allGather: recv has 10 elements where the call needs 20");
    expectError([&] { comm.reduceScatter<float>(nine, ten); }, braidInvalidArgument,
                "reduceScatter: send has 9 elements where the call needs 20");
    // 9 elements on 2 ranks: not whole blocks (it was cut to 4 per rank, the last one unsent).
    expectError([&] { comm.allToAll<float>(nine, nine); }, braidInvalidArgument,
                "allToAll: send has 9 elements, not a multiple of the 2 ranks");
    // A bad root reaches the C API on every rank, which refuses it with its code.
    expectError([&] { comm.broadcast<float>(ten, 5); }, braidInvalidArgument, "root");
    // A reduce's root checks its output (it would have written past it). Alone in a split,
    // so that no other rank waits for the refused call.
    braid::Communicator alone = comm.split(r, 0);
    std::vector<float> hundred(100, 1.0f);
    expectError([&] { alone.reduce<float>(hundred, ten, 0); }, braidInvalidArgument,
                "reduce: recv (on the root) has 10 elements where the call needs 100");
    // The communicator still works after refused calls.
    comm.allReduce<float>(ten);
    std::vector<float> ok(10, 1.0f);
    comm.allReduce<float>(ok);
    EXPECT_EQ(ok[0], 2.0f);
  });
}

// As a framework writes it: std::vector arguments with the element type deduced, the
// integer types of the platform (long long, unsigned long), and all-to-all(v) with blocks of
// different sizes with gaps between them; blocks that do not fit their buffer are refused.
TEST(CppApi, VectorsDeduceTheTypeAndAllToAllvTakesCountsAndDisplacements) {
  runRanks(3, [](int r, int n, const braidUniqueId& id) {
    braid::Communicator comm(n, id, r);
    std::vector<long long> a(7, r + 1), b(7, 0);
    comm.allReduce(a, b);
    EXPECT_EQ(b[6], 6);
    std::vector<unsigned long> u(4, static_cast<unsigned long>(r));
    comm.allReduce(u, braidMax);
    EXPECT_EQ(u[3], 2u);
    std::vector<int> one{r * 10}, all(3, -1);
    comm.allGather(one, all);
    EXPECT_EQ(all, (std::vector<int>{0, 10, 20}));
    std::vector<double> d(2, r == 2 ? 3.5 : 0);
    comm.broadcast(d, 2);
    EXPECT_EQ(d[1], 3.5);
    // Every rank sends p + 1 elements to rank p, its blocks laid out back to front with a gap
    // of one element between them; rank p receives p + 1 from each rank, packed in rank order.
    std::vector<size_t> sc(3), sd(3), rc(3), rd(3);
    size_t at = 0;
    for (int p = n - 1; p >= 0; --p) {
      sc[p] = static_cast<size_t>(p) + 1;
      sd[p] = at;
      at += sc[p] + 1;
    }
    std::vector<int> send(at, -7);
    for (int p = 0; p < n; ++p) {
      for (size_t i = 0; i < sc[p]; ++i) send[sd[p] + i] = 100 * r + 10 * p + static_cast<int>(i);
    }
    for (int p = 0; p < n; ++p) {
      rc[p] = static_cast<size_t>(r) + 1;
      rd[p] = static_cast<size_t>(p) * rc[p];
    }
    std::vector<int> recv(static_cast<size_t>(n) * rc[0], -1);
    comm.allToAllv(send, sc, sd, recv, rc, rd);
    for (int p = 0; p < n; ++p) {
      for (size_t i = 0; i < rc[p]; ++i) {
        EXPECT_EQ(recv[rd[p] + i], 100 * p + 10 * r + static_cast<int>(i)) << p << " " << i;
      }
    }
    std::vector<size_t> past = rd;
    past[1] = recv.size();  // rank 1's block would start at the end and go past it
    expectError([&] { comm.allToAllv(send, sc, sd, recv, rc, past); }, braidInvalidArgument,
                "allToAllv: recv's block for rank 1");
    std::vector<size_t> two(2);
    expectError([&] { comm.allToAllv(send, two, sd, recv, rc, rd); }, braidInvalidArgument,
                "allToAllv: sendcounts has 2 elements where the call needs 3");
    comm.barrier();
  });
}

// Buffers as frameworks hold them: a writable std::span as the send buffer, std::array, C
// arrays, a vector with a span; none of these compiled (only span<const T>/span<T> and
// vector/vector did).
TEST(CppApi, AnyContiguousRangeIsABuffer) {
  runRanks(2, [](int r, int n, const braidUniqueId& id) {
    braid::Communicator comm(n, id, r);
    std::vector<float> a(4, static_cast<float>(r + 1)), b(4);
    comm.allReduce(std::span<float>(a), std::span<float>(b));
    EXPECT_EQ(b[3], 3.0f);
    std::array<int, 4> x{r, r, r, r}, y{};
    comm.allReduce(x, y, braidMax);
    EXPECT_EQ(y[0], 1);
    double c[2] = {1.5, 2.5}, d[2] = {0, 0};
    comm.allReduce(c, d);
    EXPECT_EQ(d[1], 5.0);
    std::vector<int64_t> mine{r}, all(2, -1);
    comm.allGather(std::span<int64_t>(mine), all);
    EXPECT_EQ(all, (std::vector<int64_t>{0, 1}));
    std::array<float, 2> in{1.0f, 1.0f};
    comm.allReduce(in);  // in place
    EXPECT_EQ(in[1], 2.0f);
    int32_t v = r, got = -1;
    {
      braid::Group g;
      comm.send(std::span<int32_t>(&v, 1), 1 - r);
      comm.recv<int32_t>({&got, 1}, 1 - r);
    }
    EXPECT_EQ(got, 1 - r);
  });
}

// An op where reduce's root goes does not compile (the C enum converts to int: it reduced
// with braidSum to the root numbered braidMax); a root does, of any buffer kind.
template <typename S, typename R, typename Root>
constexpr bool reduceCompiles = requires(braid::Communicator& c, const S& s, R& r, Root root) {
  c.reduce(s, r, root);
};
static_assert(reduceCompiles<std::vector<float>, std::vector<float>, int>);
static_assert(!reduceCompiles<std::vector<float>, std::vector<float>, braidRedOp_t>);
static_assert(reduceCompiles<std::span<const float>, std::span<float>, int>);
static_assert(!reduceCompiles<std::span<const float>, std::span<float>, braidRedOp_t>);

// An exception leaving a braid::Group's scope (here the wrapper's own size check, thrown on
// rank 0 only) abandons the group: the allreduce made before it in the group does not run
// (it did, and rank 0 learnt of the failure only at its next call), and rank 1, whose group
// was complete, is told at once instead of waiting for the timeout.
TEST(CppApi, AnExceptionLeavingAGroupRunsNothingOfIt) {
  RankOptions opt;
  opt.env = {{"BRAID_TIMEOUT_MS", "30000"}};
  runRanks(
      2,
      [](int r, int n, const braidUniqueId& id) {
        braid::Communicator comm(n, id, r);
        std::vector<float> p(4, 1.0f), q(4, -1.0f), q2(r == 0 ? 3 : 4, -1.0f);
        const double t0 = now();
        std::string error = "no exception";
        braidResult_t code = braidSuccess;
        try {
          braid::Group g;
          comm.allReduce(p, q);
          comm.allReduce(p, q2);  // throws on rank 0
        } catch (const braid::Error& e) {
          error = e.what();
          code = e.code();
        }
        if (r == 0) {
          EXPECT_EQ(code, braidInvalidArgument) << error;
          EXPECT_NE(error.find("recv has 3 elements"), std::string::npos) << error;
          EXPECT_EQ(q[0], -1.0f);  // nothing of the group ran
          braidResult_t async = braidSuccess;
          EXPECT_EQ(braidCommGetAsyncError(comm.get(), &async), braidSuccess);
          EXPECT_NE(async, braidSuccess);
          const std::string msg = braidGetLastError(comm.get());
          EXPECT_NE(msg.find("abandoned"), std::string::npos) << msg;
        } else {
          // Rank 1's group was whole: it fails (~Group throws) once rank 0's abandonment
          // reaches it, saying so.
          EXPECT_EQ(code, braidRemoteError) << error;
          EXPECT_NE(error.find("abandoned"), std::string::npos) << error;
        }
        EXPECT_LT(now() - t0, 20.0);
      },
      opt);
}

}  // namespace
}  // namespace braid::test
