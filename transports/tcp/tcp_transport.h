// TCP transport: authenticated, non-blocking sockets driven by the communicator's progress
// loop, one per path. A peer is reached over every pair of this rank's NICs and the peer's
// (rails: NIC i to NIC i), with BRAID_TCP_SOCKETS_PER_PEER flows (distinct source ports, for
// ECMP entropy) per pair. The multipath layer (transports/multipath) cuts every message into
// chunks sprayed over the paths; a path that fails or stalls is dropped, its unacknowledged
// chunks are re-sent on the others, and the higher rank reconnects it in the background.
// Small messages go at once (eager); large ones wait for the receiver's ready-to-receive so
// that they land directly in the user's buffer.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "src/bootstrap/auth.h"
#include "src/engine/reactor.h"
#include "src/topology/netif.h"
#include "transports/multipath/announce.h"
#include "transports/multipath/multipath.h"
#include "transports/multipath/rehash.h"
#include "transports/transport.h"

namespace braid {

std::unique_ptr<TransportFactory> makeTcpTransportFactory();

namespace tcp {

// Appended to a NIC's name@address in the bootstrap record when it had no link at the start:
// both ends of its paths then skip the first connection.
inline constexpr std::string_view kNoLinkMark = "/nolink";

// PATHDOWN (tag: the path index): the sender found that path dead; the receiver drops it too.
enum class FrameType : uint8_t {
  kData = 1,
  kRtr = 2,
  kAbort = 3,
  kBye = 4,
  kAck = 5,
  kPathDown = 6,
  kPathUp = 7,  // tag: the path index; the link of the sender's NIC on that path came up
  kRehash = 8,  // tag: the path index; it lags its siblings: the higher rank moves it (rehash.h)
  kRts = 9      // tag, total: a send above the eager limit waits for its receive (size check)
};
// The receiver may acknowledge the chunk with its next frame instead of at once.
constexpr uint8_t kFlagLazyAck = 1;

// 40 bytes on the wire, little-endian (checked at compile time).
struct FrameHeader {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t len = 0;     // payload bytes following this header
  uint64_t tag = 0;     // ACK: every fid below this arrived
  uint64_t offset = 0;  // DATA: where the payload goes in the message
  uint64_t total = 0;   // DATA/RTR: message length
  uint64_t fid = 0;     // DATA/RTR: the chunk's id (multipath); 0 for the others
};
static_assert(sizeof(FrameHeader) == 40);

constexpr size_t kMaxAbortText = 4096;
constexpr size_t kMaxAckRanges = 256;  // ACK payload: (first, count) pairs of uint64
constexpr size_t kMaxUnexpectedBytes = size_t{1} << 30;
// Inbound staging per socket, and the payload remainder from which reads go direct.
constexpr size_t kStagingBytes = 16384;
constexpr size_t kDirectReadBytes = 4096;
// Messages up to this size are copied when posted, so their send completes at once.
constexpr size_t kCopyBytes = 16384;
// Hello.socketIndex of a connection that only checks that this rank still listens.
constexpr uint16_t kLivenessIndex = 0xFFFF;

class Transport;
struct Peer;

// The connection of one path.
class Socket : public Reactor::Handler {
 public:
  Socket(Peer* peer, int path, Fd fd);
  void onEvents(uint32_t events) override;
  void enqueue(const FrameHeader& h, const void* payload, std::string owned = {});
  // Ahead of queued data (acknowledgements): after the frame on the wire, if any.
  void enqueueUrgent(const FrameHeader& h, std::string owned);
  void flush();
  void closeNow();
  // Out of the loop like closeNow, but the connection stays open (the caller keeps the fd): the
  // peer sees no end of stream on it while it takes the connection that replaces it.
  Fd release();
  bool saidBye() const { return byeReceived_; }
  // After a failure: finish the frame on the wire (from a private copy), send ABORT with the
  // reason, then FIN; keep reading and discarding until the peer closes. So the peer reads
  // the reason before it sees the connection end, on whichever socket it reads first.
  void beginAbort(const FrameHeader& abortHdr, const std::string& text);
  // A chunk was acknowledged (another copy arrived): its payload may go away, so an unsent
  // frame of it is dropped and a half-sent one finishes from a copy.
  void forget(uint64_t fid);
  // Another path brings the chunk this socket is receiving: the rest of its payload here is
  // read and dropped, and the frame does not count as arrived.
  void abandonFrame(uint64_t fid);
  // Fault injection: the path stops moving data without a word (a blackhole).
  void freeze();
  bool alive() const { return fd_.valid(); }
  bool frozen() const { return frozen_; }
  size_t queuedBytes() const { return queued_; }
  int fd() const { return fd_.get(); }
  int path() const { return path_; }
  // Liveness: when this socket last read or wrote something (mp::nowNs clock).
  int64_t lastRecvNs() const { return lastRecvNs_; }
  bool heard() const { return heard_; }  // anything received yet
  int64_t lastSendNs() const { return lastSendNs_; }
  // The connection's identity, its ports (local << 16 | remote; 0 if unknown), and the same as
  // the peer's end sees it: a notice about a connection names it, so that a notice that arrives
  // after the path was connected anew does not take the new connection down.
  uint32_t connId() const { return connId_; }
  uint32_t peerConnId() const { return (connId_ << 16) | (connId_ >> 16); }
  // Whether the kernel's TCP made progress on this connection since the previous call: bytes
  // acknowledged by the peer's kernel, or nothing left in flight at all.
  bool kernelProgress();
  // Milliseconds since the kernel last received data on this connection (TCP_INFO).
  int64_t kernelQuietMs() const;
  // Whether the kernel holds bytes of this connection and none of them was acknowledged for
  // ageNs (retransmission backoff, a blackhole, a peer that stopped reading), or the socket
  // moves nothing any more (closed, frozen); a slow flow whose bytes keep being acknowledged
  // is not stalled. The first call (and one after progress) starts the count; a call within
  // kStallCheckNs of the previous one repeats its answer.
  bool kernelStalled(int64_t ageNs, int64_t nowNs);

 private:
  struct OutFrame {
    FrameHeader h;
    const char* payload = nullptr;
    size_t len = 0;
    size_t sent = 0;    // of header + payload
    std::string owned;  // payload storage for control frames and copies
    // (read through data(): moving a frame in the queue may move a short string's bytes)
    const char* data() const { return owned.empty() ? payload : owned.data(); }
  };
  void readSome();
  bool consumeBuffered();
  bool onHeader();  // false: socket failed/closed
  void onPayloadDone();
  void updateInterest();
  void detachFront();  // the front frame's rest into owned storage
  // Of the bytes written, those the peer's kernel acknowledged (SIOCOUTQ), and whether the
  // kernel holds none; false if it cannot say.
  bool kernelAcked(uint64_t* acked, bool* empty) const;

  Peer* peer_;
  int path_;
  Fd fd_;
  std::deque<OutFrame> out_;
  size_t queued_ = 0;
  bool wantOut_ = false;
  // Inbound parse state.
  FrameHeader in_{};
  size_t inHdrGot_ = 0;
  bool inPayload_ = false;
  char* inDest_ = nullptr;  // nullptr: payload goes to inText_ (abort text, acks) or nowhere
  size_t inLeft_ = 0;
  NetRequest* inReq_ = nullptr;
  bool inNew_ = false;  // a reliable frame seen for the first time
  std::string inText_;
  std::vector<char> rbuf_;  // staging for headers and small payloads
  size_t rbufPos_ = 0;
  size_t rbufEnd_ = 0;
  bool byeReceived_ = false;  // the peer said goodbye on this socket: EOF is expected
  bool aborting_ = false;     // beginAbort ran: output ends with ABORT + FIN, input discarded
  bool frozen_ = false;
  int64_t lastRecvNs_ = mp::nowNs();
  bool heard_ = false;
  int64_t lastSendNs_ = mp::nowNs();
  uint32_t connId_ = 0;
  static constexpr int64_t kStallCheckNs = 1'000'000;
  uint64_t stallAcked_ = ~uint64_t{0};  // kernelStalled: acknowledged bytes when last seen
  int64_t stallSinceNs_ = 0, stallCheckNs_ = 0;
  bool stalledLast_ = false;
  uint64_t written_ = 0;      // bytes handed to the kernel
  uint64_t kernelAcked_ = 0;  // of them, acknowledged by the peer's kernel at the last check
};

struct Unexpected {
  std::vector<char> data;
  size_t got = 0;
  NetRequest* waiting = nullptr;  // a receive posted while the message was still arriving
};

struct Path {
  int localNic = 0, remoteNic = 0;
  std::string remoteAddr;              // for names and stats (the local side: localName)
  std::atomic<uint16_t> localPort{0};  // its connection's, once it has one
  bool primary = true;                 // else standby (failover)
  std::unique_ptr<Socket> sock;
  mp::PathCounters ctr;
  // Why it went down last: the peer closed it (EOF, reset, refused) rather than a timeout.
  bool closedByPeer = false;
  int64_t downSinceNs = 0;
  // Why it had no first connection (one of its NICs had no link when the job started, or it
  // did not connect in time), empty if it had one; the background probes make it later.
  std::string startWhy;
  bool startDead() const { return !startWhy.empty(); }
  // Reconnection (by the higher rank of the pair).
  bool probing = false;
  int64_t backoffMs = 0;
  uint32_t generation = 0;  // connections installed so far
  // Flap damping: a path that fails again soon after it came back (a link that flaps, an MTU
  // black hole that passes the small handshake but drops full segments) is re-admitted only
  // after a hold that doubles with each such failure: a failure within kFlapWindowNs of the
  // path's (re)admission counts; after n in a row its next connection waits
  // kFlapHoldNs << (n - 1), up to kFlapHoldMaxNs, from the failure.
  static constexpr int64_t kFlapWindowNs = 10'000'000'000;
  static constexpr int64_t kFlapHoldNs = 1'000'000'000;
  static constexpr int64_t kFlapHoldMaxNs = 30'000'000'000;
  int64_t upSinceNs = 0;
  int flaps = 0;
  // Re-hashing (rehash.h), one step at a time; every step but kNone keeps the path standby.
  //   kDraining: no new chunk; the ones out are acknowledged before the new connection takes
  //     over, so that none goes twice (at most kDrainWaitNs);
  //   kConnecting: (higher rank) its new connection is under way;
  //   kAsked: (lower rank) the peer was asked to connect it anew.
  enum class Rehash : uint8_t { kNone, kDraining, kConnecting, kAsked };
  Rehash rehash = Rehash::kNone;
  int64_t rehashStepNs = 0;  // when the step began
  int64_t lastRehashNs = 0;  // when a re-hash was last decided or asked for
};

struct Peer {
  int rank = -1;
  Transport* t = nullptr;
  std::vector<std::unique_ptr<Path>> paths;
  mp::Sender tx;
  mp::Receiver rx;
  mp::RehashPolicy rehash;  // over the paths, grouped by NIC pair
  std::unordered_map<uint64_t, NetRequest*> postedRecvs;
  std::unordered_map<uint64_t, Unexpected> unexpected;
  std::unordered_map<uint64_t, uint64_t> rtrs;  // tag -> length the receiver posted
  std::unordered_map<uint64_t, NetRequest*> awaitingRtr;
  mp::Announcements announced;           // sends' sizes (kRts) matched with receives
  bool pumping = false, repump = false;  // Transport::pump
  bool left = false;                     // said goodbye on every path and closed them, or gone
  std::string goneWhy;                   // left without goodbye (refused for BRAID_PEER_GONE_MS)
  int64_t allDownSinceNs = 0;            // every path dead since (0: some path lives)
  int64_t refusedSinceNs = 0;            // every path down and connections refused since
  bool livenessProbing = false;          // (lower rank) checking that the peer still listens
  // (lower rank) re-hashes asked of the peer in a row that it did not carry out (it runs with
  // BRAID_PATH_REHASH=0, or its connects fail): at kRehashUnanswered, it is asked no more.
  int rehashUnanswered = 0;
  static constexpr int kRehashUnanswered = 3;
  int64_t livenessBackoffMs = 0;
  Socket* liveSocket() const;
};

class Transport : public braid::Transport {
 public:
  explicit Transport(const TransportContext& ctx);
  ~Transport() override;
  Status listen();

  const char* name() const override { return "tcp"; }
  std::string localAddress() const override;
  Status setRankInfo(int rank, int nranks) override {
    ctx_.rank = rank;
    ctx_.nranks = nranks;
    return Status::ok();
  }
  Status connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) override;
  void post(NetRequest* r) override;
  void abort(const Status& reason) override;
  Status close(Deadline deadline) override;
  std::string peerName(int rank) const override;
  void pathStats(std::vector<PathStatsRow>* out) const override;
  void deadRoutes(std::vector<std::string>* out) const override;
  std::string healthNote() const override;

  // Progress-thread internals used by Socket and the connection helpers.
  const TransportContext& ctx() const { return ctx_; }
  void complete(NetRequest* r, Status s);
  void fail(const Status& reason, bool notifyPeers);
  // A path's connection failed (closedByPeer: EOF/reset, else a stall or local error).
  void onPathDown(Peer* p, int path, const std::string& why, bool closedByPeer, bool notify = true);
  void onPathDownNotice(Peer* p, uint64_t path, uint64_t conn);
  void onPathUpNotice(Peer* p, uint64_t path);
  void onLinkDown(const std::string& ifname);
  // A NIC's link came up: its dead paths are probed now rather than at their backoff.
  void onLinkUp(const std::string& ifname);
  void probeNow(Peer* p, int path);
  // Re-hashing (tcp_watch.cc): a lagging path moves to a new connection (source port).
  void checkRehash(Peer* p, int64_t now);
  void requestRehash(Peer* p, int path, const std::string& why);
  void onRehashRequest(Peer* p, uint64_t path);
  void endDrain(Peer* p, int path);  // back to up if it still drains for a re-hash
  void rehashIfDrained(Peer* p, int path, int64_t now);
  static constexpr int64_t kDrainWaitNs = 300'000'000;
  // A chunk header arrived: where its payload goes (dest nullptr: nowhere).
  void onData(Peer* p, const FrameHeader& h, char** dest, NetRequest** req);
  void onDataDone(Peer* p, uint64_t tag, NetRequest* req, size_t len);
  void onRtr(Peer* p, const FrameHeader& h);
  void onRts(Peer* p, const FrameHeader& h);
  void onAck(Peer* p, int path, uint64_t below, const std::string& ranges);
  void onGracefulClose(Peer* p);
  // Connections to p have been refused on every path for BRAID_PEER_GONE_MS: its process died,
  // or it destroyed its communicator while its goodbye could not reach this host. What waits
  // for it fails the communicator; otherwise it is taken as left (calls with it fail).
  void onPeerGone(Peer* p);
  void onBytesSent(Peer* p, int path, size_t bytes);
  // Late binding: a path whose socket has this much queued above the kernel takes no new
  // chunk until it drains below it (then onDrained), so the chunks left at the end of a
  // message go to the paths that are moving rather than queueing behind a stalled flow.
  static constexpr size_t kHoldBytes = 64 << 10;
  void onDrained(Peer* p, int path);
  static constexpr int kTcpRtoMinUs = 45;  // TCP_RTO_MIN_US (linux/tcp.h, 6.15+)
  // Acknowledgements owed to p ride on s (an ACK frame queued before s flushes).
  void appendAck(Peer* p, Socket* s);
  // Whether the chunk with this header was received before (verdict of the multipath layer);
  // a copy in flight on another path makes that path stale.
  bool acceptChunk(Peer* p, int path, const FrameHeader& h);
  void chunkArrived(Peer* p, int path, const FrameHeader& h);
  size_t eagerBytes() const { return static_cast<size_t>(ctx_.cfg->eagerBytes); }
  bool failed() const { return !failed_.isOk(); }
  std::string pathName(const Peer* p, int path) const;
  // "r0 10.0.0.1:40312": the path's NIC and its connection's local port (0 before one).
  std::string localName(const Path& pa) const;
  // "r1>10.101.0.2:0": a local NIC and a peer's NIC, without the port (deadRoutes()).
  std::string routeKey(int localNic, const SockAddr& remote) const;
  void noteConnected(Path* pa);  // a connection was installed: its time and local port
  // Flap damping: the path is not tried again before this (0: no hold).
  static int64_t flapHoldUntilNs(const Path& pa);
  // The (local NIC, peer's NIC) pairs that carry paths to a peer whose NICs have these names:
  // the same on both ends (the lower rank's order where the lists differ).
  std::vector<std::pair<int, int>> nicPairs(bool peerIsLower,
                                            const std::vector<std::string>& remote) const;
  // Installs a freshly authenticated connection as path `path` to `rank` (the loop).
  // rehash: it replaces a live connection of the path on purpose (Hello kHelloRehash).
  void installPath(int rank, int path, Fd fd, bool rehash = false);
  // Called by the timer: stalls, lazy acknowledgements, peers unreachable for too long.
  void onTick();
  void checkPaths(Peer* p, int64_t now, std::vector<int>* stalled);
  void tunePathSocket(int fd) const;
  // Unacknowledged bytes a path may carry (mp::SenderOptions::window).
  size_t pathWindow() const { return std::max<size_t>(4 * chunkBytes_, 1 << 20); }
  void onIncoming(Fd fd);
  // Incoming connections in their handshake; dropping those that sent nothing for a while
  // (strangers holding connections open: out of files, or too many), how many.
  size_t handshakesUnderWay() const;
  size_t dropStaleHandshakes(const char* why);
  Status admitPath(const Hello& h) const;
  void onProbeResult(int rank, int path, bool ok, bool refused, const std::string& why);

 private:
  class Listener;
  class Acceptance;
  class Ticker;
  class Prober;
  class LinkWatch;
  void postInLoop(NetRequest* r);
  void sendData(Peer* p, NetRequest* r);
  void sendReliable(Peer* p, mp::Chunk&& c);
  void pump(Peer* p);  // hands queued chunks to paths with room and flushes them
  void pumpOnce(Peer* p);
  Status chooseCongestionControl();  // BRAID_TCP_CONGESTION -> congestion_
  void injectFault(int rank);
  void setPathState(Peer* p, int path, mp::PathState s, size_t* moved = nullptr);
  // linger: keep the connection open for a while (a re-hash: the peer takes the new one first).
  void retire(std::unique_ptr<Socket> s, bool linger = false);
  // rehash: due at once, the backoff untouched, and the hello says it is a re-hash.
  void scheduleProbe(Peer* p, int path, bool liveness, bool rehash = false);
  void allPathsDown(Peer* p);
  std::string pathsTried(const Peer* p) const;
  Status initialConnect(Deadline deadline);
  // Paths with a NIC that had no link at the start: dead from the start, probed from now on.
  void startDeadPaths();
  Status addListener(Fd fd, const SockAddr& bound);
  // Listeners for reconnections in the loop, the timer, the prober thread.
  Status startBackground();
  void stopBackground();
  // On the tick: listeners paused for a while, handshakes past their deadline (tcp_connect.cc).
  void tickConnections(int64_t now);
  Status startLinkWatch();
  // conn: the peer's Socket::connId of the connection that died (0: whichever it has).
  void notifyPathDown(Peer* p, int path, uint32_t conn);
  void notifyPath(Peer* p, int path, FrameType type, uint64_t conn = 0);

  TransportContext ctx_;
  std::vector<NetIf> nics_;  // the NICs this rank listens and sends on, rail order
  int primaryNic_ = 0;
  bool spray_ = true;  // every NIC's paths carry chunks (else the primary's; others standby)
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::vector<SockAddr>> remoteNics_;  // per rank
  std::vector<PeerInfo> peerInfo_;
  std::vector<Peer> peers_;
  // Peer.allDownSinceNs, readable from any thread (healthNote).
  std::vector<std::atomic<int64_t>> downSince_;
  int flows_ = 1;
  size_t chunkBytes_ = 1 << 20;
  int64_t stragglerNs_ = 50'000'000;  // mp::Sender::resendStragglers age
  std::string congestion_;            // TCP_CONGESTION of the data connections ("": the system's)
  mutable std::atomic<bool> rtoMinNoted_{false};  // logged once: no TCP_RTO_MIN_US here
  int64_t pathTimeoutNs_ = 0;
  std::unique_ptr<Ticker> ticker_;
  std::unique_ptr<Reactor::Handler> linkWatch_;  // a LinkWatch (tcp_links.cc)
  std::unique_ptr<Prober> prober_;
  std::vector<std::unique_ptr<Acceptance>> acceptances_;
  // Closed sockets of replaced paths (since when), freed long after.
  std::vector<std::pair<int64_t, std::unique_ptr<Socket>>> graveyard_;
  // Connections replaced by a re-hash, still open (since when), closed a while after.
  std::vector<std::pair<int64_t, Fd>> lingering_;
  bool rehash_ = true;  // BRAID_PATH_REHASH
  std::vector<uint64_t> rehashBytes_;
  std::vector<bool> rehashBacklog_, rehashUsable_;
  std::vector<int> rehashOut_;
  std::atomic<bool> stopping_{false};  // closing: no probes, no new paths
  Status failed_;
  size_t unexpectedBytes_ = 0;
  // Fault injection.
  mp::FaultPlan fault_;
  std::mt19937_64 faultRng_;
  int faultsLeft_ = 0;
  uint64_t faultBytes_ = 0;  // bytes sent since the last injected fault
  int64_t startNs_ = 0, lastFaultNs_ = 0;
  int64_t startGraceNs_ = 0;  // see checkPaths
  std::vector<mp::Range> ackScratch_;
};

}  // namespace tcp
}  // namespace braid
