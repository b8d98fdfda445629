// Shared-memory transport between ranks of one node. Every pair of ranks shares one anonymous
// segment (memfd, passed over an authenticated Unix socket with SCM_RIGHTS, so nothing is ever
// named in /dev/shm and a crashed job leaves nothing behind) holding two single-producer /
// single-consumer byte rings, one per direction, with head, tail and sleep flags on separate
// cache lines. Small messages are copied through the ring (eager). Large ones are announced
// (RTS) and, where the kernel lets this rank read the sender's memory, copied once straight
// from the sender's buffer into the receiver's with process_vm_readv (CMA), then acknowledged
// (FIN); otherwise the receiver answers CTS and the sender streams the data through the ring.
// The Unix socket stays open as the doorbell (a byte when the peer's loop sleeps) and as the
// death detector: the kernel closes it when the peer process dies, like a TCP EOF.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/engine/fastbox.h"
#include "src/engine/reactor.h"
#include "transports/transport.h"

namespace braid {

std::unique_ptr<TransportFactory> makeShmTransportFactory();

namespace shm {

constexpr uint64_t kMagic = 0x31766d6873646962ULL;  // "bidshmv1"
constexpr size_t kLine = 64;
constexpr size_t kMaxAbortText = 4096;
constexpr size_t kMaxFastBytes = 64 << 10;  // BRAID_SHM_FAST_BYTES's upper bound
constexpr size_t kMaxUnexpectedBytes = size_t{1} << 30;
// A CMA copy is done in slices so that one large message does not hold the loop.
constexpr size_t kCmaSliceBytes = 256 << 10;
// A streamed DATA frame carries at most this much (and at least this much unless less is left).
constexpr size_t kMaxDataFrame = 256 << 10;
constexpr size_t kMinDataFrame = 4 << 10;

enum class FrameType : uint8_t {
  kEager = 1,  // whole message in the payload
  kRts = 2,    // a = total, b = sender's address (0: send me a CTS, I stream)
  kCts = 3,    // a = total the receiver posted
  kData = 4,   // a = offset, b = total
  kFin = 5,    // the receiver read the message from the sender's memory
  kAbort = 6,  // payload = reason
  kBye = 7,
};

// 32 bytes; frames start on cache-line boundaries of the ring.
struct Frame {
  uint8_t type = 0;
  uint8_t reserved[3] = {};
  uint32_t len = 0;  // payload bytes
  uint64_t tag = 0;
  uint64_t a = 0;
  uint64_t b = 0;
};
static_assert(sizeof(Frame) == 32);

// Per side of the pair: written by that side.
struct alignas(kLine) SideCtl {
  std::atomic<uint32_t> sleeping{0};     // this side's loop thread sleeps: ring the doorbell
  std::atomic<uint32_t> canReadPeer{0};  // CMA from the other side's memory works
  std::atomic<uint64_t> base{0};         // where this side mapped the segment (CMA probe)
};

struct alignas(kLine) RingCtl {
  alignas(kLine) std::atomic<uint64_t> head{0};  // bytes ever written (producer)
  alignas(kLine) std::atomic<uint64_t> tail{0};  // bytes ever consumed (consumer)
};

struct alignas(kLine) SegmentHeader {
  uint64_t magic = 0;
  uint64_t ringBytes = 0;
  int32_t ranks[2] = {-1, -1};  // side 0 = the lower rank
  uint64_t commTag = 0;
  uint64_t fastBytes = 0;  // capacity of each fast box (BRAID_SHM_FAST_BYTES; 0: none)
};

// Layout: header | side ctl ×2 | ring ctl ×2 | fast boxes ×4 (side s, parity j at 2s + j;
// written by side s) | a line per side (its done, worked and stopped call numbers) | the
// direct allreduce's claim line | ring data ×2 (ring s is written by side s), rings
// page-aligned.
struct SegmentLayout {
  SegmentHeader hdr;
  SideCtl side[2];
  RingCtl ring[2];
};
size_t segmentBytes(size_t ringBytes, size_t fastBytes);

class Transport;

struct OutItem {
  Frame f;
  const char* payload = nullptr;  // kData: the whole message; else the frame's payload
  NetRequest* req = nullptr;      // completed when the item is fully written (eager, data)
  size_t offset = 0;              // kData: next byte to stream
};

struct CmaJob {
  NetRequest* req = nullptr;
  uint64_t remote = 0;
  size_t done = 0;
};

// Requests by tag: a handful are pending per peer at a time, so a flat vector beats a hash
// map (no allocation per message once warm).
class RequestTable {
 public:
  void put(uint64_t tag, NetRequest* r) { v_.emplace_back(tag, r); }
  NetRequest* find(uint64_t tag) const {
    for (const auto& [t, r] : v_) {
      if (t == tag) return r;
    }
    return nullptr;
  }
  NetRequest* take(uint64_t tag) {
    for (size_t i = 0; i < v_.size(); ++i) {
      if (v_[i].first == tag) {
        NetRequest* r = v_[i].second;
        v_[i] = v_.back();
        v_.pop_back();
        return r;
      }
    }
    return nullptr;
  }
  bool empty() const { return v_.empty(); }
  size_t size() const { return v_.size(); }
  void clear() { v_.clear(); }
  const std::vector<std::pair<uint64_t, NetRequest*>>& all() const { return v_; }

 private:
  std::vector<std::pair<uint64_t, NetRequest*>> v_;
};

struct Pending {
  uint64_t total = 0;
  uint64_t addr = 0;  // RTS: sender's address (0: stream after CTS)
};

struct Peer : public Reactor::Handler {
  int rank = -1;
  int side = 0;  // which side of the segment this rank is
  Transport* t = nullptr;
  Fd sock;      // doorbell + death detection
  int pid = 0;  // the peer's process
  char* map = nullptr;
  size_t mapBytes = 0;
  SegmentLayout* seg = nullptr;
  char* outData = nullptr;  // ring this rank writes
  char* inData = nullptr;   // ring this rank reads
  uint64_t cap = 0;
  FastLink fast;  // the pair's fast boxes (none when the segment has no room for them)
  uint64_t outHead = 0, outTailSeen = 0;  // producer's copies
  uint64_t inTail = 0;                    // consumer's copy
  bool byeSeen = false, closed = false;
  // Closed without a goodbye while nothing here waited for it (onSocketDown): why.
  std::string goneWhy;
  std::atomic<bool> left{false};  // byeSeen or goneWhy, for the fast boxes' readers (any thread)
  std::deque<OutItem> out;
  RequestTable postedRecvs;  // incl. streams being received
  std::unordered_map<uint64_t, std::vector<char>> unexpected;
  std::unordered_map<uint64_t, Pending> rts;  // announced, not yet posted here
  RequestTable awaitingCts, awaitingFin;
  std::deque<CmaJob> cma;

  ~Peer() override;
  // Whether a receive or a send of this rank still needs the peer's part.
  bool awaited() const {
    return !postedRecvs.empty() || !awaitingCts.empty() || !awaitingFin.empty() || !cma.empty();
  }
  void onEvents(uint32_t events) override;
  RingCtl& outCtl() { return seg->ring[side]; }
  RingCtl& inCtl() { return seg->ring[1 - side]; }
  SideCtl& mine() { return seg->side[side]; }
  SideCtl& theirs() { return seg->side[1 - side]; }
  // Ring operations (with the loop held).
  size_t outFree();
  void put(const Frame& f, const void* payload, size_t len);  // caller checked the space
  bool tryPut(const Frame& f, const void* payload, size_t len);
  void sendControl(const Frame& f);  // now if there is room and nothing queued, else queued
  void copyOut(void* dst, uint64_t pos, size_t len) const;  // from the inbound ring
  bool flushOut();   // writes queued items while space lasts; whether any was written
  bool consumeIn();  // handles arrived frames; whether any was
  bool runCma();     // one slice of the first CMA job; whether any
  void notify();     // doorbell when the peer's loop sleeps
  void doorbell();
  bool hasWork();             // something could be done right now
  size_t frontNeeds() const;  // ring bytes the first queued item needs to make progress
};

class Transport : public braid::Transport, public Reactor::Poller {
 public:
  explicit Transport(const TransportContext& ctx);
  ~Transport() override;
  Status listen();

  const char* name() const override { return "shm"; }
  std::string localAddress() const override { return sockName_; }
  Status setRankInfo(int rank, int nranks) override {
    ctx_.rank = rank;
    ctx_.nranks = nranks;
    return Status::ok();
  }
  Status connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) override;
  void post(NetRequest* r) override;
  bool fastLink(int rank, FastLink* link, size_t* capacity) const override;
  void abort(const Status& reason) override;
  Status close(Deadline deadline) override;
  std::string peerName(int rank) const override;

  // Poller.
  bool poll() override;
  bool armSleep() override;
  void disarm() override;

  // Loop internals used by Peer.
  void complete(NetRequest* r, Status s);
  void fail(const Status& reason);
  // f's payload starts at ring position pos of p's inbound ring.
  void onFrame(Peer* p, const Frame& f, uint64_t pos);
  void onSocketDown(Peer* p, const std::string& why);
  bool cmaEnabled() const { return ctx_.cfg->shmCma != 0; }
  bool failed() const { return !failed_.isOk(); }
  const Status& failure() const { return failed_; }

 private:
  Status setupPeer(Peer* p, Fd sock, bool creator, Deadline deadline);
  Status attachAccepted(int rank, Fd sock, Deadline deadline);
  void postInLoop(NetRequest* r);
  void startRecv(Peer* p, NetRequest* r, const Pending& announced);
  void control(Peer* p, FrameType type, uint64_t tag, uint64_t a, uint64_t b = 0);
  void onGracefulClose(Peer* p);

  TransportContext ctx_;
  Fd listener_;
  std::string sockName_;
  std::vector<PeerInfo> info_;
  std::vector<std::unique_ptr<Peer>> peers_;  // nullptr: not served by shm
  std::vector<Peer*> active_;
  Status failed_;
  size_t unexpectedBytes_ = 0;
};

}  // namespace shm
}  // namespace braid
