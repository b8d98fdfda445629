// TCP transport: several authenticated, non-blocking sockets per peer driven by the
// communicator's progress loop. Messages are cut into fragments sprayed over the peer's
// sockets (least queued bytes first) and placed by offset at the receiver. Small messages go
// at once (eager); large ones wait for the receiver's ready-to-receive so they land directly
// in the user's buffer and no unexpected data of large size is ever buffered.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/engine/reactor.h"
#include "transports/transport.h"

namespace braid {

std::unique_ptr<TransportFactory> makeTcpTransportFactory();

namespace tcp {

enum class FrameType : uint8_t { kData = 1, kRtr = 2, kAbort = 3, kBye = 4 };

// 32 bytes on the wire, little-endian (checked at compile time).
struct FrameHeader {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t len = 0;  // payload bytes following this header
  uint64_t tag = 0;
  uint64_t offset = 0;  // DATA: where the payload goes in the message
  uint64_t total = 0;   // DATA/RTR: message length
};
static_assert(sizeof(FrameHeader) == 32);

constexpr size_t kMaxAbortText = 4096;
constexpr size_t kMaxUnexpectedBytes = size_t{1} << 30;
// Inbound staging per socket, and the payload remainder from which reads go direct.
constexpr size_t kStagingBytes = 16384;
constexpr size_t kDirectReadBytes = 4096;

class Transport;
struct Peer;

class Socket : public Reactor::Handler {
 public:
  Socket(Peer* peer, int index, Fd fd) : peer_(peer), index_(index), fd_(std::move(fd)) {}
  void onEvents(uint32_t events) override;
  void enqueue(const FrameHeader& h, const void* payload, NetRequest* req, std::string owned = {});
  void flush();
  void closeNow();
  bool saidBye() const { return byeReceived_; }
  // After a failure: finish the frame on the wire (from a private copy), send ABORT with the
  // reason, then FIN; keep reading and discarding until the peer closes. So the peer reads
  // the reason before it sees the connection end, on whichever socket it reads first.
  void beginAbort(const FrameHeader& abortHdr, const std::string& text);
  bool alive() const { return fd_.valid(); }
  size_t queuedBytes() const { return queued_; }
  int fd() const { return fd_.get(); }
  int index() const { return index_; }
  void collectRequests(std::vector<NetRequest*>* out) const;

 private:
  struct OutFrame {
    FrameHeader h;
    const char* payload = nullptr;
    size_t len = 0;
    size_t sent = 0;  // of header + payload
    NetRequest* req = nullptr;
    std::string owned;  // payload storage for control frames
  };
  void readSome();
  bool consumeBuffered();
  bool onHeader();  // false: socket failed/closed
  void onPayloadDone();
  void updateInterest();

  Peer* peer_;
  int index_;
  Fd fd_;
  std::deque<OutFrame> out_;
  size_t queued_ = 0;
  bool wantOut_ = false;
  // Inbound parse state.
  FrameHeader in_{};
  size_t inHdrGot_ = 0;
  bool inPayload_ = false;
  char* inDest_ = nullptr;  // nullptr: payload goes to inText_ (abort text)
  size_t inLeft_ = 0;
  NetRequest* inReq_ = nullptr;
  std::string inText_;
  std::vector<char> rbuf_;  // staging for headers and small payloads
  size_t rbufPos_ = 0;
  size_t rbufEnd_ = 0;
  bool byeReceived_ = false;  // the peer said goodbye on this socket: EOF is expected
  bool aborting_ = false;     // beginAbort ran: output ends with ABORT + FIN, input discarded
};

struct Unexpected {
  std::vector<char> data;
  size_t got = 0;
  NetRequest* waiting = nullptr;  // a receive posted while the message was still arriving
};

struct Peer {
  int rank = -1;
  Transport* t = nullptr;
  std::vector<std::unique_ptr<Socket>> socks;
  std::unordered_map<uint64_t, NetRequest*> postedRecvs;
  std::unordered_map<uint64_t, Unexpected> unexpected;
  std::unordered_map<uint64_t, uint64_t> rtrs;  // tag -> length the receiver posted
  std::unordered_map<uint64_t, NetRequest*> awaitingRtr;
  // The live socket with the fewest queued bytes (nullptr when all are closed).
  Socket* leastQueued() const {
    Socket* best = nullptr;
    for (const auto& s : socks) {
      if (s->alive() && (best == nullptr || s->queuedBytes() < best->queuedBytes())) {
        best = s.get();
      }
    }
    return best;
  }
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
  void close(Deadline deadline) override;
  std::string peerName(int rank) const override;

  // Progress-thread internals used by Socket.
  const TransportContext& ctx() const { return ctx_; }
  void complete(NetRequest* r, Status s);
  void fail(const Status& reason, bool notifyPeers);
  void onSocketDown(Peer* p, Socket* s, const std::string& why);
  void onData(Peer* p, const FrameHeader& h, char** dest, NetRequest** req);
  void onDataDone(Peer* p, uint64_t tag, NetRequest* req, size_t len);
  void onRtr(Peer* p, const FrameHeader& h);
  void onGracefulClose(Peer* p);
  size_t eagerBytes() const { return static_cast<size_t>(ctx_.cfg->eagerBytes); }
  bool failed() const { return !failed_.isOk(); }
  std::string pathName(const Peer* p, const Socket* s) const;

 private:
  void postInLoop(NetRequest* r);
  void sendData(Peer* p, NetRequest* r);
  void sendControl(Peer* p, FrameHeader h);

  TransportContext ctx_;
  Fd listener_;
  SockAddr bound_;
  std::vector<PeerInfo> peerInfo_;
  std::vector<Peer> peers_;
  Status failed_;
  size_t unexpectedBytes_ = 0;
};

}  // namespace tcp
}  // namespace braid
