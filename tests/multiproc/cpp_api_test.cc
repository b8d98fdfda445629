// The C++ wrapper (include/braid/braid.hpp) as a framework uses it: RAII communicator, stream
// and group, span-based calls, split, errors as braid::Error with the C API's code. Buffer
// sizes that do not fit the call throw before anything is sent (on every rank that sees them,
// so no peer is left waiting), a reduce's root checks its output, and an all-to-all whose
// send is not whole blocks is refused instead of truncated.
#include <gtest/gtest.h>

#include <braid/braid.hpp>
#include <numeric>
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

}  // namespace
}  // namespace braid::test
