// Job-secret authentication of every connection (bootstrap and data): a mutual HMAC-SHA256
// challenge-response. The secret itself never crosses the wire.
//
//   acceptor  -> connector : "BRAIDv1\0" + nonceA (32 random bytes)
//   connector -> acceptor  : Hello (32 bytes) + nonceC (32) + HMAC(secret, "C"|nonceA|nonceC|Hello)
//   acceptor  -> connector : HMAC(secret, "A"|nonceC|nonceA|Hello)
// A connection that fails any step is closed and logged; it never changes communicator state.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/bootstrap/socket_util.h"

namespace braid {

constexpr size_t kSecretBytes = 16;
using Secret = std::array<uint8_t, kSecretBytes>;
using Mac = std::array<uint8_t, 32>;

Status randomBytes(void* buf, size_t n);  // getrandom(2)
// HMAC-SHA256(secret, label): a one-way derivation (a tag sent in clear says nothing of the
// secret); deriveSecret: its first bytes as a secret of their own (a split's, an init's).
Mac derive(const Secret& secret, const std::string& label);
Secret deriveSecret(const Secret& secret, const std::string& label);
std::string toHex(const uint8_t* p, size_t n);
bool fromHex(const std::string& hex, uint8_t* out, size_t n);  // exactly 2n hex digits

enum class ConnKind : uint16_t { kBootstrap = 1, kData = 2 };

// Fixed-size, explicitly serialized (little-endian) greeting of the connecting side.
// Hello.flags: this connection replaces a live path that lagged its siblings (a re-hash).
inline constexpr uint8_t kHelloRehash = 1;

struct Hello {
  ConnKind kind = ConnKind::kData;
  uint16_t socketIndex = 0;  // which of the per-peer sockets this is
  int32_t rank = -1;
  int32_t nranks = 0;
  uint64_t commTag = 0;  // identifies the communicator (data connections)
  uint8_t flags = 0;     // kHelloRehash
  static constexpr size_t kBytes = 32;
  void serialize(uint8_t out[kBytes]) const;
  static bool parse(const uint8_t in[kBytes], Hello* out);
};

// Connecting side: runs the whole exchange (blocking, bounded by deadline).
// *greeted (when given) tells whether the acceptor's greeting came: a connection closed before
// it was refused (the acceptor is flooded, or out of files) and may be tried again.
Status connectorHandshake(int fd, const Secret& secret, const Hello& hello, Deadline deadline,
                          const std::string& peerName, bool* greeted = nullptr);

// Accepting side as a non-blocking state machine, so one slow or hostile connection never
// delays the others: call start() once, then onReadable() whenever fd is readable.
class AcceptorHandshake {
 public:
  AcceptorHandshake(Fd fd, const Secret& secret, Deadline deadline);
  Status start();
  // Returns ok with *done=false while more bytes are needed; ok with *done=true on success.
  Status onReadable(bool* done);
  int fd() const { return fd_.get(); }
  Fd takeFd() { return std::move(fd_); }
  const Hello& hello() const { return hello_; }
  Deadline deadline() const { return deadline_; }
  const std::string& peerName() const { return peerName_; }
  // Whether the peer has sent nothing yet (a connection closed at once is a probe, e.g. a
  // rank checking that the root named by a unique-id file is alive).
  bool silent() const { return got_ == 0; }
  // Whether it has sent nothing for at least kStaleHandshake: a real rank sends its hello as
  // soon as it is connected; a stranger holding connections open does not.
  bool stale() const { return got_ == 0 && Clock::now() - started_ >= kStaleHandshake; }

 private:
  static constexpr std::chrono::milliseconds kStaleHandshake{2000};
  Clock::time_point started_ = Clock::now();
  std::string peerName_;
  Fd fd_;
  Secret secret_;
  Deadline deadline_;
  std::array<uint8_t, 32> nonceA_{};
  std::array<uint8_t, Hello::kBytes + 32 + 32> in_{};
  size_t got_ = 0;
  Hello hello_;
};

}  // namespace braid

namespace braid {

// At most this many connections in their handshake at once (each holds a file). Past it, or
// when the process runs out of files, the handshakes that sent nothing for two seconds (a
// stranger holding connections open) are dropped, so that a flood of strangers' connections
// cannot fail the job; if none did, new connections wait (or, past the cap, are refused).
inline constexpr size_t kMaxHandshakes = 1024;

struct AcceptedConn {
  Hello hello;
  Fd fd;
};

// Accepts connections on listenFd until `onAccepted` says it has enough or the deadline passes.
// Each connection runs the acceptor handshake concurrently with the others; failures
// (strangers, garbage, wrong secret, a hello `admit` refuses) are closed and logged, and do not
// count. `onAccepted` returns true when no more connections are wanted.
Status acceptAuthenticated(int listenFd, const Secret& secret, Deadline deadline,
                           const std::function<Status(const Hello&)>& admit,
                           const std::function<bool(AcceptedConn&&)>& onAccepted,
                           const std::string& what);
// The same on several listening sockets at once (one per NIC). `enough`, when given, is asked
// at least every 100 ms: true ends the wait (successfully) with what was accepted so far;
// handshakes under way are dropped.
Status acceptAuthenticated(const std::vector<int>& listenFds, const Secret& secret,
                           Deadline deadline, const std::function<Status(const Hello&)>& admit,
                           const std::function<bool(AcceptedConn&&)>& onAccepted,
                           const std::string& what, const std::function<bool()>& enough = nullptr);

// Connects this rank with every rank `wanted` marks, one authenticated connection per pair
// (data connections of communicator commTag): it dials each wanted lower rank (dial opens
// the socket; the connector handshake follows) and accepts each wanted higher rank on
// listenFd, both at once. setup(peer, fd, dialed) runs for every connection (accepted ones on
// the accepting thread). An error names the ranks that never connected; `what` names the
// transport in messages.
Status connectPairs(int listenFd, const Secret& secret, uint64_t commTag, int rank, int nranks,
                    const std::vector<bool>& wanted, Deadline deadline,
                    const std::function<Status(int peer, Fd* fd)>& dial,
                    const std::function<Status(int peer, Fd fd, bool dialed)>& setup,
                    const std::function<std::string(int peer)>& peerName, const std::string& what);

}  // namespace braid
