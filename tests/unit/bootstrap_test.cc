// Unit tests of the bootstrap pieces: unique id encoding, authentication, hello parsing,
// interface matching and the config table.
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "src/bootstrap/auth.h"
#include "src/bootstrap/socket_util.h"
#include "src/bootstrap/unique_id.h"
#include "src/core/config.h"
#include "src/topology/netif.h"

namespace braid {
namespace {

TEST(UniqueId, RoundTripsIpv4AndIpv6) {
  for (const char* text : {"10.1.2.3:4567", "[::1]:80"}) {
    UniqueIdData d;
    ASSERT_TRUE(SockAddr::parse(text, &d.root).isOk());
    ASSERT_TRUE(randomBytes(d.secret.data(), d.secret.size()).isOk());
    braidUniqueId id;
    encodeUniqueId(d, &id);
    UniqueIdData back;
    ASSERT_TRUE(decodeUniqueId(id, &back).isOk());
    EXPECT_EQ(back.root.toString(), d.root.toString());
    EXPECT_EQ(back.secret, d.secret);
  }
}

TEST(UniqueId, RejectsGarbage) {
  braidUniqueId id;
  std::memset(&id, 0x5a, sizeof id);
  UniqueIdData d;
  Status s = decodeUniqueId(id, &d);
  EXPECT_EQ(s.code(), braidInvalidArgument);
  EXPECT_NE(s.message().find("unique id"), std::string::npos);
}

TEST(SockAddr, ParsesAndRejects) {
  SockAddr a;
  EXPECT_TRUE(SockAddr::parse("127.0.0.1:0", &a).isOk());
  EXPECT_TRUE(a.isLoopback());
  EXPECT_FALSE(SockAddr::parse("127.0.0.1", &a).isOk());
  EXPECT_FALSE(SockAddr::parse("127.0.0.1:99999", &a).isOk());
  EXPECT_FALSE(SockAddr::parse("::1:80", &a).isOk());  // IPv6 needs brackets
  EXPECT_FALSE(SockAddr::parse("[::1:80", &a).isOk());
}

TEST(Hello, ParseRejectsOutOfRange) {
  Hello h;
  h.rank = 3;
  h.nranks = 4;
  h.commTag = 0x1234;
  uint8_t buf[Hello::kBytes];
  h.serialize(buf);
  Hello back;
  ASSERT_TRUE(Hello::parse(buf, &back));
  EXPECT_EQ(back.rank, 3);
  EXPECT_EQ(back.commTag, 0x1234u);
  h.rank = 4;  // == nranks
  h.serialize(buf);
  EXPECT_FALSE(Hello::parse(buf, &back));
  std::memset(buf, 0xff, sizeof buf);
  EXPECT_FALSE(Hello::parse(buf, &back));
}

// Runs the acceptor state machine against the connector over a socketpair.
Status handshake(const Secret& acceptorSecret, const Secret& connectorSecret, Status* conn) {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Fd a(sv[0]), c(sv[1]);
  Hello h;
  h.rank = 1;
  h.nranks = 2;
  std::thread t([&] {
    *conn = connectorHandshake(c.get(), connectorSecret, h, deadlineIn(5000), "acceptor");
    c.reset();
  });
  AcceptorHandshake acc(std::move(a), acceptorSecret, deadlineIn(5000));
  Status s = acc.start();
  bool done = false;
  while (s.isOk() && !done) {
    pollfd p{acc.fd(), POLLIN, 0};
    poll(&p, 1, 5000);
    s = acc.onReadable(&done);
  }
  acc.takeFd().reset();  // closing tells a rejected connector
  t.join();
  return s;
}

TEST(Auth, SameSecretSucceedsBothWays) {
  Secret s{};
  ASSERT_TRUE(randomBytes(s.data(), s.size()).isOk());
  Status conn;
  EXPECT_TRUE(handshake(s, s, &conn).isOk());
  EXPECT_TRUE(conn.isOk()) << conn.message();
}

TEST(Auth, WrongSecretIsRejectedOnBothSides) {
  Secret a{}, b{};
  ASSERT_TRUE(randomBytes(a.data(), a.size()).isOk());
  b = a;
  b[0] ^= 1;
  Status conn;
  Status acc = handshake(a, b, &conn);
  EXPECT_FALSE(acc.isOk());
  EXPECT_NE(acc.message().find("authentication"), std::string::npos) << acc.message();
  EXPECT_FALSE(conn.isOk());
}

// A connection set-up whose job is gone (a split whose parent failed: a rank died) stops at
// the abandon check, not at its deadline: connect retries to a refused port, accepting on a
// listener nobody dials (connectPairs, in the thread it starts), both with 20 s deadlines.
TEST(Auth, AbandonedSetUpStopsBeforeItsDeadline) {
  Fd listener;
  SockAddr loop, bound;
  ASSERT_TRUE(SockAddr::parse("127.0.0.1:0", &loop).isOk());
  ASSERT_TRUE(listenOn(loop, 4, &listener, &bound).isOk());
  const auto start = Clock::now();
  const AbandonCheck gone = [&]() -> Status {
    return Clock::now() - start > std::chrono::milliseconds(300) ? remoteError("rank 2 died")
                                                                 : Status::ok();
  };
  AbandonScope scope(&gone);
  Secret secret{};
  // Rank 0 of 2: accepts rank 1, which never comes.
  Status s = connectPairs(
      listener.get(), secret, 7, 0, 2, {true, true}, deadlineIn(20000),
      [](int, Fd*) { return Status::ok(); }, [](int, Fd, bool) { return Status::ok(); },
      [](int r) { return "rank " + std::to_string(r); }, "test");
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("rank 2 died"), std::string::npos) << s.message();
  listener.reset();  // now refused
  Fd fd;
  s = connectTo(bound, deadlineIn(20000), &fd, "rank 0");
  EXPECT_NE(s.message().find("rank 2 died"), std::string::npos) << s.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(Netif, IfnameSpecMatchesLikeNccl) {
  EXPECT_TRUE(ifnameMatches("eth", "eth0"));
  EXPECT_FALSE(ifnameMatches("eth", "ib0"));
  EXPECT_TRUE(ifnameMatches("eth,ib", "ib1"));
  EXPECT_FALSE(ifnameMatches("^eth", "eth0"));
  EXPECT_TRUE(ifnameMatches("^eth", "lo"));
  EXPECT_TRUE(ifnameMatches("=eth0", "eth0"));
  EXPECT_FALSE(ifnameMatches("=eth0", "eth01"));
  EXPECT_FALSE(ifnameMatches("^=lo", "lo"));
}

TEST(Config, SplitsCommaLists) {
  EXPECT_EQ(splitList("tcp"), std::vector<std::string>{"tcp"});
  EXPECT_EQ(splitList("tcp,,shm,"), (std::vector<std::string>{"tcp", "shm"}));
  EXPECT_TRUE(splitList("").empty());
  EXPECT_TRUE(splitList(",").empty());
}

TEST(Config, ReadsEnvAndRejectsMalformedValues) {
  setenv("BRAID_TIMEOUT_MS", "1234", 1);
  setenv("BRAID_CHUNK_BYTES", "1m", 1);
  Config c;
  ASSERT_TRUE(Config::fromEnv(&c).isOk());
  EXPECT_EQ(c.timeoutMs, 1234);
  EXPECT_EQ(c.chunkBytes, 1 << 20);
  setenv("BRAID_TIMEOUT_MS", "soon", 1);
  Status s = Config::fromEnv(&c);
  EXPECT_EQ(s.code(), braidInvalidArgument);
  EXPECT_NE(s.message().find("BRAID_TIMEOUT_MS"), std::string::npos);
  setenv("BRAID_TIMEOUT_MS", "0", 1);
  EXPECT_FALSE(Config::fromEnv(&c).isOk());
  unsetenv("BRAID_TIMEOUT_MS");
  unsetenv("BRAID_CHUNK_BYTES");
  // Shared-memory, multipath and verbs settings and the chunk are checked, naming the variable.
  for (auto [var, bad] : {std::pair{"BRAID_SHM_RING_BYTES", "100000"},  // not a power of two
                          std::pair{"BRAID_SHM_RING_BYTES", "65536"},   // < 2 x (eager + 128)
                          std::pair{"BRAID_SHM_CMA", "2"},
                          std::pair{"BRAID_CHUNK_BYTES", "100"},
                          std::pair{"BRAID_MULTIRAIL", "sideways"},
                          std::pair{"BRAID_PATH_TIMEOUT_MS", "5"},
                          std::pair{"BRAID_PATH_CHUNK_BYTES", "100"},
                          std::pair{"BRAID_IB_QPS_PER_PEER", "0"},
                          std::pair{"BRAID_IB_GID_INDEX", "-2"},
                          std::pair{"BRAID_IB_TIMEOUT", "32"},
                          std::pair{"BRAID_IB_RETRY_CNT", "8"},
                          std::pair{"BRAID_IB_RNR_RETRY", "-1"},
                          std::pair{"BRAID_IB_TC", "256"},
                          std::pair{"BRAID_IB_SL", "16"},
                          std::pair{"BRAID_IB_SLOTS", "1"},
                          std::pair{"BRAID_IB_SLOT_BYTES", "1000"},
                          std::pair{"BRAID_TCP_RTO_MIN_US", "500"},
                          std::pair{"BRAID_TCP_RTO_MIN_US", "300000"},
                          std::pair{"BRAID_LOG_LEVEL", "verbose"},
                          std::pair{"BRAID_LOG_SUBSYS", "net,bogus"},
                          std::pair{"BRAID_SOCKET_FAMILY", "inet6"},
                          std::pair{"BRAID_SOCKET_FAMILY", "AF_IPX"}}) {
    setenv(var, bad, 1);
    Status e = Config::fromEnv(&c);
    EXPECT_EQ(e.code(), braidInvalidArgument) << var << "=" << bad;
    EXPECT_NE(e.message().find(var), std::string::npos) << e.message();
    unsetenv(var);
  }
  // Log levels and subsystems in any case, as NCCL_DEBUG=info is written.
  setenv("BRAID_LOG_LEVEL", "info", 1);
  setenv("BRAID_LOG_SUBSYS", "^net,Shm", 1);
  EXPECT_TRUE(Config::fromEnv(&c).isOk());
  unsetenv("BRAID_LOG_LEVEL");
  unsetenv("BRAID_LOG_SUBSYS");
  setenv("BRAID_CHUNK_BYTES", "0", 1);  // automatic: the cost model's
  EXPECT_TRUE(Config::fromEnv(&c).isOk());
  unsetenv("BRAID_CHUNK_BYTES");
  // A congestion control the kernel lacks is refused when the tcp transport starts, naming
  // the variable and what the kernel offers; reno is always built in.
  Status cc = checkCongestionControl("no-such-cc");
  EXPECT_EQ(cc.code(), braidInvalidArgument);
  EXPECT_NE(cc.message().find("BRAID_TCP_CONGESTION"), std::string::npos) << cc.message();
  EXPECT_NE(cc.message().find("available: "), std::string::npos) << cc.message();
  EXPECT_TRUE(checkCongestionControl("reno").isOk());
  EXPECT_TRUE(checkCongestionControl("").isOk());
  int rows = 0;
  forEachConfigEntry([&](const ConfigEntry& e) {
    ++rows;
    EXPECT_EQ(std::string(e.env).rfind("BRAID_", 0), 0u);
  });
  EXPECT_GT(rows, 10);
}

}  // namespace
}  // namespace braid
