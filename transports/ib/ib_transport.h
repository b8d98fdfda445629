// InfiniBand / RoCE verbs transport (libibverbs). Every peer is reached over RC queue pairs,
// one path each: this rank's ports x the peer's ports (rails: port i to port i) x
// BRAID_IB_QPS_PER_PEER QPs per pair (distinct QPs get distinct RoCEv2 UDP source ports, so
// ECMP spreads them). Data moves by RDMA WRITE WITH IMMEDIATE into a ring of registered slots
// that the receiver owns per path: the sender copies a chunk into the matching slot of its
// own registered staging ring and writes it to the peer's slot; the immediate names the
// slot; the receiver places the chunk (into the posted buffer or the unexpected store) and
// returns slots as credits (a zero-length write with immediate), so no write ever lands in a
// slot still in use. Chunks are sprayed over the paths by the multipath layer
// (transports/multipath): a chunk counts as delivered when its RC work request completes, and
// the chunks of a QP that fails (error completion, port down, no completion for
// BRAID_PATH_TIMEOUT_MS) are re-sent on the surviving QPs; the receiver drops duplicates.
// Large messages wait for the receiver's ready-to-receive, like tcp. Queue-pair numbers,
// GIDs and ring keys are exchanged over an authenticated TCP connection per peer, which stays
// open to carry goodbyes, abort reasons and path-down notices, and to detect a dead process.
// Completions are polled while the loop is busy and waited for on the completion channel
// (ibv_req_notify_cq) when it sleeps, so an idle rank burns no core.
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <bit>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/bootstrap/auth.h"
#include "src/engine/reactor.h"
#include "transports/multipath/announce.h"
#include "transports/multipath/multipath.h"
#include "transports/transport.h"

namespace braid {

std::unique_ptr<TransportFactory> makeIbTransportFactory();

namespace ib {

static_assert(std::endian::native == std::endian::little, "the wire formats are little-endian");

// DATA carries its payload in the slot; DATA_ZC's payload was RDMA-written straight into the
// receiver's registered buffer just before it (same QP, so it has landed); RTR may carry the
// receiver's registered buffer (address, then one rkey per path) for zero-copy.
// kRts: a send above the eager limit waits for its receive (tag, total: the receiver checks it).
enum class FrameType : uint8_t { kData = 1, kRtr = 2, kDataZc = 3, kRts = 4 };

// At the start of every slot; 40 bytes.
struct FrameHeader {
  uint8_t type = 0;
  uint8_t reserved[3] = {};
  uint32_t len = 0;  // payload bytes after the header
  uint64_t tag = 0;
  uint64_t offset = 0;  // DATA: where the payload goes in the message
  uint64_t total = 0;   // DATA/RTR: message length
  uint64_t fid = 0;     // the chunk's id (multipath)
  // Credits riding on the chunk: kCreditImm | the writer's count of slots consumed from this
  // path's ring (its reader's credits, as in a credit write), or 0 when unchanged.
  uint32_t credit = 0;
  uint32_t reserved2 = 0;
};
static_assert(sizeof(FrameHeader) == 48);

// Immediate data: the slot sequence number, or (top bit) the receiver's count of consumed
// slots, both modulo 2^31. Every chunk also carries that count in its header, so a write of
// credits alone is needed only where little flows the other way.
constexpr uint32_t kCreditImm = 0x80000000u;
constexpr uint32_t kSeqMask = 0x7fffffffu;
constexpr size_t kMaxUnexpectedBytes = size_t{1} << 30;
constexpr size_t kCopyBytes = 16384;  // sends up to this size are copied and complete at once
constexpr size_t kRecvBatch = 8;      // receives posted again together
constexpr size_t kMaxAbortText = 4096;

// Side-channel (TCP) messages: one type byte, a 32-bit length, the payload. A dead path is
// rebuilt with a fresh QP by the higher rank of the pair: REPAIR_OFFER (its new QP), the lower
// rank answers with its own (qpn 0: not now), then REPAIR_DONE; each side re-admits the path
// once its QP is ready to send and the peer's is ready to receive.
enum class SideType : uint8_t {
  kBye = 1,
  kAbort = 2,
  kPathDown = 3,
  kRepairOffer = 4,
  kRepairAnswer = 5,
  kRepairDone = 6,
};

// Connection records, exchanged over the side channel.
struct HelloWire {
  uint32_t magic = 0x31766269;  // "ibv1"
  int32_t rank = -1;
  uint32_t ports = 0;
  uint32_t qps = 0;
};
struct PortWire {
  uint8_t gid[16] = {};
  uint16_t lid = 0;
  uint8_t mtu = 0;
  uint8_t linkLayer = 0;
  uint32_t reserved = 0;
};
struct PathWire {  // one per path; qpn 0 in a repair answer: refused
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint64_t ring = 0;
  uint32_t rkey = 0;
  uint32_t slots = 0;
  uint64_t slotBytes = 0;
};
struct RepairWire {
  uint32_t path = 0;
  uint32_t generation = 0;
  PathWire rec;
};
static_assert(sizeof(HelloWire) == 16 && sizeof(PortWire) == 24 && sizeof(PathWire) == 32 &&
              sizeof(RepairWire) == 40);

// What `BRAID_IB_HCA` and the port's state allow: one usable port of one device.
struct PortInfo {
  std::string device;
  int port = 1;
  int linkLayer = IBV_LINK_LAYER_UNSPECIFIED;
  ibv_mtu mtu = IBV_MTU_1024;
  uint16_t lid = 0;
  int gidIndex = -1;
  ibv_gid gid{};
  std::string gidKind;  // "RoCEv2 IPv4", "IB", ...
  std::string netdev;   // RoCE: the Ethernet interface behind the GID
  std::string name() const;
};

// Lists the active ports BRAID_IB_HCA selects ("mlx5_0:1,^mlx5_1", "=exact"), with their GID
// (by type: RoCEv2 first, the address family of BRAID_SOCKET_FAMILY, IPv4 by default; or
// BRAID_IB_GID_INDEX). *why says what was skipped and why when the list is empty.
Status discoverPorts(const Config& cfg, std::vector<PortInfo>* out, std::string* why);
// Whether `spec` (BRAID_IB_HCA syntax) selects port `port` of `device`.
bool hcaMatches(const std::string& spec, const std::string& device, int port);
// A BRAID_IB_HCA that does not parse (an empty item, a port that is no number from 1).
Status checkHcaSpec(const std::string& spec);

class Transport;

struct Device {
  std::string name;
  size_t index = 0;  // in the transport's device list (registrations keep one MR per device)
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_comp_channel* channel = nullptr;
  ibv_cq* cq = nullptr;
  int cqe = 0;
  bool armed = false;  // a completion event was requested
  std::unique_ptr<Reactor::Handler> channelHandler, asyncHandler;
  ~Device();
};

// A registered buffer (staging or receive ring).
struct Region {
  char* base = nullptr;
  size_t bytes = 0;
  ibv_mr* mr = nullptr;
  Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();
  Status allocate(ibv_pd* pd, size_t n, int access, const std::string& what);
  void release();
};

struct Path {
  int index = 0;
  Device* dev = nullptr;
  const PortInfo* port = nullptr;
  std::string remotePort;  // the peer's port name, for names and stats
  PortWire remote;         // the peer's port (GID, LID, MTU)
  ibv_qp* qp = nullptr;
  uint32_t generation = 0;  // QPs built for this path so far (repairs)
  uint32_t psn = 0;         // this side's initial packet sequence number
  bool dead = false;
  bool repairing = false;  // a fresh QP is being exchanged with the peer
  int64_t nextRepairNs = 0, backoffMs = 0, repairStartNs = 0;
  int64_t retiredNs = 0;  // replaced by a newer QP since (freed long after)
  bool frozen = false;    // fault injection: a blackhole (nothing leaves, nothing is said)
  std::string deathReason;
  Region ring;     // this side's receive slots: slots x slotBytes
  Region staging;  // what writes are sent from: the peer's geometry (remoteSlots x ...)
  size_t slots = 0, slotBytes = 0;
  size_t remoteSlots = 0, remoteSlotBytes = 0;
  uint64_t remoteRing = 0;
  uint32_t remoteKey = 0;
  uint32_t maxInline = 0;
  // Sending: slots used, and the receiver's consumed count (credits) as last heard.
  uint64_t sendSeq = 0, peerConsumed = 0;
  // Receiving: the next slot expected, slots consumed, and the consumed count last returned.
  uint64_t recvSeq = 0, consumed = 0, returned = 0;
  size_t recvsOwed = 0;  // receives taken and not yet posted again (see kRecvBatch)
  size_t sqDepth = 0;
  // Signaled work requests in post order (fid, 0 for a credit return): completions of one QP
  // come in that order.
  std::deque<uint64_t> inflight;
  std::deque<mp::Chunk*> wire;  // assigned to this path by the scheduler, waiting for a slot
  mp::PathCounters ctr;
  ~Path();
  // Chunks this path can write now: free slots at the peer, room in the send queue.
  size_t canWrite() const {
    const size_t slots = remoteSlots - std::min<size_t>(remoteSlots, sendSeq - peerConsumed);
    const size_t sq = inflight.size() + 2 < sqDepth ? sqDepth - 2 - inflight.size() : 0;
    return std::min(slots, sq);
  }
};

// A buffer registered by braidCommRegister: one memory region per device.
struct Registration {
  uintptr_t base = 0;
  size_t bytes = 0;
  std::vector<ibv_mr*> mrs;
};

// Where a zero-copy send writes: the receiver's buffer and keys (per path), and this side's
// keys (per device).
struct ZcTarget {
  uint64_t addr = 0;
  std::vector<uint32_t> rkeys, lkeys;
};

struct Unexpected {
  std::vector<char> data;
  size_t got = 0;
  NetRequest* waiting = nullptr;
};

struct Peer : public Reactor::Handler {
  int rank = -1;
  Transport* t = nullptr;
  Fd sock;  // the side channel
  std::string sideIn;
  bool byeSeen = false, closed = false;
  std::vector<std::unique_ptr<Path>> paths;
  std::vector<std::unique_ptr<Path>> retired;  // replaced QPs whose completions may still come
  int64_t allDownSinceNs = 0;                  // every path dead since (0: some path lives)
  size_t chunkMax = 0;                         // payload bytes one slot of every path takes
  mp::Sender tx;
  mp::Receiver rx;
  std::unordered_map<uint64_t, NetRequest*> postedRecvs;
  // The node of the last receive taken, reused by the next one posted: a blocking receive
  // costs no allocation.
  std::unordered_map<uint64_t, NetRequest*>::node_type spareRecvNode;
  void addPostedRecv(NetRequest* r) {
    if (spareRecvNode.empty()) {
      postedRecvs[r->tag] = r;
      return;
    }
    spareRecvNode.key() = r->tag;
    spareRecvNode.mapped() = r;
    auto res = postedRecvs.insert(std::move(spareRecvNode));
    if (!res.inserted) {
      res.position->second = r;
      spareRecvNode = std::move(res.node);
    }
  }
  void takePostedRecv(std::unordered_map<uint64_t, NetRequest*>::iterator it) {
    spareRecvNode = postedRecvs.extract(it);
  }
  std::unordered_map<uint64_t, Unexpected> unexpected;
  std::unordered_map<uint64_t, uint64_t> rtrs;  // tag -> length the receiver posted
  std::unordered_map<uint64_t, NetRequest*> awaitingRtr;
  mp::Announcements announced;                     // sends' sizes (kRts) matched with receives
  std::unordered_map<uint64_t, ZcTarget> zcRtrs;   // tag -> zero-copy target of an early RTR
  std::unordered_map<uint64_t, ZcTarget> zcSends;  // tag -> target of a send in progress
  void onEvents(uint32_t events) override;         // the side channel
  void sendSide(SideType type, const std::string& payload);
};

class Transport : public braid::Transport, public Reactor::Poller {
 public:
  explicit Transport(const TransportContext& ctx);
  ~Transport() override;
  Status listen();

  const char* name() const override { return "ib"; }
  std::string localAddress() const override { return address_; }
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
  std::string healthNote() const override;
  Status registerBuffer(void* buf, size_t size, void** handle) override;
  void deregisterBuffer(void* handle) override;

  // Poller.
  bool poll() override;
  bool armSleep() override;
  void disarm() override;

  // Loop internals (ib_peer.cc).
  void fail(const Status& reason);
  void onSideMessage(Peer* p, SideType type, const std::string& payload);
  void onSideDown(Peer* p, const std::string& why);
  void onAsyncEvent(Device* d);
  void onTick();
  bool failed() const { return !failed_.isOk(); }

 private:
  class Timer;
  // Connection setup (ib_transport.cc).
  Status openDevices(const std::vector<PeerInfo>& peers);
  Status setupPeer(Peer* p, Fd sock, Deadline deadline);  // symmetric: either side may dial
  // A path's QP in INIT with its receive ring and receives posted (ib_transport.cc).
  Status createPath(Peer* p, Path* path);
  PathWire pathRecord(const Path* path) const;
  // Staging for the peer's ring geometry, then RTR and RTS towards the peer's record.
  Status connectPath(Peer* p, Path* path, const PathWire& w);
  // Repairs (ib_paths.cc).
  std::unique_ptr<Path> freshPath(Peer* p, int k);
  void startRepair(Peer* p, int k);
  void onRepair(Peer* p, SideType type, const std::string& payload);
  void admitPath(Peer* p, Path* path);
  void sendRepair(Peer* p, SideType type, int k, uint32_t generation, const PathWire& w);
  // Data path (ib_peer.cc).
  void postInLoop(NetRequest* r);
  void sendData(Peer* p, NetRequest* r);
  void pump(Peer* p);
  void drainWire(Peer* p, Path* path);
  bool writeChunk(Peer* p, Path* path, const mp::Chunk& c);
  // The registration covering [buf, buf + n), if any: its keys (under regMu_).
  bool findKeys(const void* buf, size_t n, std::vector<uint32_t>* lkeys,
                std::vector<uint32_t>* rkeys);
  void returnCredits(Path* path, bool force);
  bool takeCredits(Path* path, uint32_t count);
  bool postRecvs(Path* path, size_t n);
  bool pollCq(Device* d);
  void onSendCompletion(Peer* p, Path* path, const ibv_wc& wc);
  void onRecvCompletion(Peer* p, Path* path, const ibv_wc& wc);
  void onChunk(Peer* p, Path* path, const FrameHeader& h, const char* payload);
  void onData(Peer* p, const FrameHeader& h, const char* payload);
  void onRtr(Peer* p, const FrameHeader& h, const char* payload);
  void onRts(Peer* p, const FrameHeader& h);
  void pathDown(Peer* p, Path* path, const std::string& why, bool notify);
  void injectFault();
  std::string pathName(const Peer* p, const Path* path) const;
  void complete(NetRequest* r, Status s) { completeRequest(r, std::move(s)); }

  TransportContext ctx_;
  std::vector<PortInfo> allPorts_;  // what BRAID_IB_HCA selects on this machine
  std::vector<PortInfo> ports_;     // what this rank uses (its rail, or all)
  std::vector<std::unique_ptr<Device>> devices_;
  Fd listener_;
  std::string address_;
  std::vector<PeerInfo> info_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<Peer*> active_;
  // A completion's path: QP numbers are unique per device only (two rails' devices number
  // their QPs alike, the first job after a boot exactly alike), so the key is both.
  static uint64_t qpKey(const Device* d, uint32_t qpn) {
    return (static_cast<uint64_t>(d->index) << 32) | qpn;
  }
  std::unordered_map<uint64_t, std::pair<Peer*, Path*>> byQpn_;
  std::unique_ptr<Timer> timer_;
  // Peer.allDownSinceNs per rank, readable from any thread (healthNote).
  std::unique_ptr<std::atomic<int64_t>[]> downSince_;
  std::atomic<bool> closing_{false};  // close() began: no more repairs
  std::mutex regMu_;                  // regs_ (registration runs on user threads)
  std::multimap<uintptr_t, std::unique_ptr<Registration>> regs_;
  Status failed_;
  size_t unexpectedBytes_ = 0;
  size_t slots_ = 8, slotBytes_ = 256 << 10;
  int qpsPerPeer_ = 1;
  int64_t pathTimeoutNs_ = 0;
  mp::FaultPlan fault_;
  uint64_t faultBytes_ = 0;
  int faultsLeft_ = 0;
  int64_t startNs_ = 0, lastFaultNs_ = 0;
  std::vector<int> expiredScratch_;
};

}  // namespace ib
}  // namespace braid
