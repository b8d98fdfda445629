// The ib transport's setup: devices, queue pairs, rings and the per-peer side channel.
#include "transports/ib/ib_transport.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <thread>

#include "src/core/log.h"
#include "src/topology/netif.h"

namespace braid {
namespace ib {
namespace {

constexpr uint32_t kMagic = HelloWire{}.magic;

std::string memlockHint() {
  rlimit rl{};
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return {};
  return fmt::format(
      " (RLIMIT_MEMLOCK is {} KiB: raise it, e.g. `ulimit -l unlimited` or memlock in "
      "/etc/security/limits.conf)",
      rl.rlim_cur >> 10);
}

}  // namespace

// Wakes the loop for completions while it sleeps (the completion channel), and for the
// device's asynchronous events (port down, QP fatal).
class FdHandler : public Reactor::Handler {
 public:
  explicit FdHandler(std::function<void()> fn) : fn_(std::move(fn)) {}
  void onEvents(uint32_t) override { fn_(); }

 private:
  std::function<void()> fn_;
};

class Transport::Timer : public Reactor::Handler {
 public:
  explicit Timer(Transport* t)
      : t_(t), fd_(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) {}
  Status arm(int64_t periodNs) {
    itimerspec its{};
    its.it_interval.tv_sec = periodNs / 1'000'000'000;
    its.it_interval.tv_nsec = periodNs % 1'000'000'000;
    its.it_value = its.it_interval;
    if (!fd_.valid() || timerfd_settime(fd_.get(), 0, &its, nullptr) != 0) {
      return systemError(fmt::format("ib: timerfd: {}", std::strerror(errno)));
    }
    return Status::ok();
  }
  void onEvents(uint32_t) override {
    uint64_t n = 0;
    if (::read(fd_.get(), &n, sizeof n) == sizeof n) t_->onTick();
  }
  int fd() const { return fd_.get(); }

 private:
  Transport* t_;
  Fd fd_;
};

Device::~Device() {
  if (cq != nullptr) ibv_destroy_cq(cq);
  if (channel != nullptr) ibv_destroy_comp_channel(channel);
  if (pd != nullptr) ibv_dealloc_pd(pd);
  if (ctx != nullptr) ibv_close_device(ctx);
}

Region::~Region() { release(); }

void Region::release() {
  if (mr != nullptr) ibv_dereg_mr(mr);
  if (base != nullptr) munmap(base, bytes);
  mr = nullptr;
  base = nullptr;
}

Status Region::allocate(ibv_pd* pd, size_t n, int access, const std::string& what) {
  bytes = n;
  void* m = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    base = nullptr;
    return systemError(fmt::format("ib: {} bytes for {}: {}", n, what, std::strerror(errno)));
  }
  base = static_cast<char*>(m);
  mr = ibv_reg_mr(pd, base, n, access);
  if (mr == nullptr) {
    return systemError(fmt::format("ib: registering {} bytes for {} failed: {}{}", n, what,
                                   std::strerror(errno), memlockHint()));
  }
  return Status::ok();
}

Path::~Path() {
  if (qp != nullptr) ibv_destroy_qp(qp);
}

Transport::Transport(const TransportContext& ctx) : ctx_(ctx) {}

Transport::~Transport() {
  if (!active_.empty()) ctx_.reactor->removePoller(this);
  for (auto& d : devices_) {
    if (d->channel != nullptr) ctx_.reactor->remove(d->channel->fd);
    if (d->ctx != nullptr) ctx_.reactor->remove(d->ctx->async_fd);
  }
  if (timer_) ctx_.reactor->remove(timer_->fd());
  for (Peer* p : active_) {
    if (p->sock.valid()) ctx_.reactor->remove(p->sock.get());
  }
  peers_.clear();  // QPs before their CQs and PDs
  for (auto& [base, reg] : regs_) {
    for (ibv_mr* m : reg->mrs) ibv_dereg_mr(m);
  }
  regs_.clear();
  devices_.clear();
}

Status Transport::listen() {
  std::string why;
  BRAID_TRY(discoverPorts(*ctx_.cfg, &allPorts_, &why));
  if (allPorts_.empty()) return systemError("ib: " + why);
  slots_ = static_cast<size_t>(ctx_.cfg->ibSlots);
  slotBytes_ = static_cast<size_t>(ctx_.cfg->ibSlotBytes);
  qpsPerPeer_ = static_cast<int>(ctx_.cfg->ibQpsPerPeer);
  pathTimeoutNs_ = ctx_.cfg->pathTimeoutMs * 1'000'000;
  BRAID_TRY(mp::FaultPlan::parse(ctx_.cfg->fault, &fault_, ctx_.nranks));
  NetIf nif;
  BRAID_TRY(chooseLocalAddress(*ctx_.cfg, nullptr, &nif));
  SockAddr bound;
  BRAID_TRY(listenOn(nif.addr, 1024, &listener_, &bound));
  address_ = bound.toString();
  return Status::ok();
}

std::string Transport::peerName(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(info_.size())) return fmt::format("rank {}", rank);
  return fmt::format("rank {} ({}, ib via {})", rank, info_[rank].host, info_[rank].address);
}

std::string Transport::pathName(const Peer* p, const Path* path) const {
  return fmt::format("path {} of {} ({} -> {})", path->index, p->paths.size(), path->port->name(),
                     path->remotePort);
}

// This rank's ports: every selected port when it is alone on its node (or BRAID_MULTIRAIL=
// spray), else its rail's (local rank i: port i mod n). Then each device is opened once.
Status Transport::openDevices(const std::vector<PeerInfo>& peers) {
  int localRank = 0, localSize = 1;
  for (int r = 0; r < static_cast<int>(peers.size()); ++r) {
    if (r == ctx_.rank || !peers[r].sameNode) continue;
    ++localSize;
    if (r < ctx_.rank) ++localRank;
  }
  const std::string& mode = ctx_.cfg->multirail;
  if (mode == "spray" || (mode == "auto" && localSize == 1)) {
    ports_ = allPorts_;
  } else {
    ports_ = {allPorts_[static_cast<size_t>(localRank) % allPorts_.size()]};
  }
  for (const PortInfo& pi : ports_) {
    if (std::any_of(devices_.begin(), devices_.end(),
                    [&](const auto& d) { return d->name == pi.device; })) {
      continue;
    }
    auto d = std::make_unique<Device>();
    d->name = pi.device;
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    for (int i = 0; list != nullptr && i < n; ++i) {
      if (pi.device == ibv_get_device_name(list[i])) d->ctx = ibv_open_device(list[i]);
    }
    if (list != nullptr) ibv_free_device_list(list);
    if (d->ctx == nullptr) return systemError(fmt::format("ib: cannot open {}", pi.device));
    ibv_device_attr da{};
    if (ibv_query_device(d->ctx, &da) != 0)
      return systemError(fmt::format("ib: cannot query {}", pi.device));
    d->pd = ibv_alloc_pd(d->ctx);
    d->channel = ibv_create_comp_channel(d->ctx);
    d->cqe = std::min(da.max_cqe, 65536);
    d->cq = d->channel ? ibv_create_cq(d->ctx, d->cqe, nullptr, d->channel, 0) : nullptr;
    if (d->pd == nullptr || d->cq == nullptr) {
      return systemError(fmt::format("ib: protection domain or completion queue on {}: {}",
                                     pi.device, std::strerror(errno)));
    }
    BRAID_TRY(setNonBlocking(d->channel->fd));
    BRAID_TRY(setNonBlocking(d->ctx->async_fd));
    Device* raw = d.get();
    d->channelHandler = std::make_unique<FdHandler>([this, raw] {
      ibv_cq* cq = nullptr;
      void* cqCtx = nullptr;
      while (ibv_get_cq_event(raw->channel, &cq, &cqCtx) == 0) ibv_ack_cq_events(cq, 1);
      raw->armed = false;
      while (pollCq(raw)) {
      }
    });
    d->asyncHandler = std::make_unique<FdHandler>([this, raw] { onAsyncEvent(raw); });
    BRAID_TRY(ctx_.reactor->add(d->channel->fd, EPOLLIN, d->channelHandler.get()));
    BRAID_TRY(ctx_.reactor->add(d->ctx->async_fd, EPOLLIN, d->asyncHandler.get()));
    d->index = devices_.size();
    devices_.push_back(std::move(d));
  }
  return Status::ok();
}

Status Transport::createPath(Peer* p, Path* path) {
  Device* d = path->dev;
  path->sqDepth = 2 * slots_ + 16;
  const size_t rqDepth = slots_ + 16 + kRecvBatch;
  ibv_qp_init_attr ia{};
  ia.send_cq = d->cq;
  ia.recv_cq = d->cq;
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = static_cast<uint32_t>(path->sqDepth);
  ia.cap.max_recv_wr = static_cast<uint32_t>(rqDepth);
  ia.cap.max_send_sge = 1;
  ia.cap.max_recv_sge = 1;
  ia.cap.max_inline_data = 256;
  path->qp = ibv_create_qp(d->pd, &ia);
  if (path->qp == nullptr) {
    ia.cap.max_inline_data = 0;
    path->qp = ibv_create_qp(d->pd, &ia);
  }
  if (path->qp == nullptr) {
    return systemError(fmt::format("ib: creating a queue pair on {} for {}: {}", path->port->name(),
                                   peerName(p->rank), std::strerror(errno)));
  }
  path->maxInline = ia.cap.max_inline_data;
  path->slots = slots_;
  path->slotBytes = slotBytes_;
  BRAID_TRY(path->ring.allocate(d->pd, slots_ * slotBytes_,
                                IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                                "a receive ring"));
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = static_cast<uint8_t>(path->port->port);
  a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
  if (ibv_modify_qp(path->qp, &a,
                    IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) != 0) {
    return systemError(
        fmt::format("ib: queue pair to INIT on {}: {}", path->port->name(), std::strerror(errno)));
  }
  if (!postRecvs(path, rqDepth)) {
    return systemError(
        fmt::format("ib: posting receives on {}: {}", path->port->name(), std::strerror(errno)));
  }
  static thread_local std::mt19937 rng(std::random_device{}());
  path->psn = rng() & 0xffffff;
  return Status::ok();
}

PathWire Transport::pathRecord(const Path* path) const {
  PathWire w;
  w.qpn = path->qp->qp_num;
  w.psn = path->psn;
  w.ring = reinterpret_cast<uint64_t>(path->ring.base);
  w.rkey = path->ring.mr->rkey;
  w.slots = static_cast<uint32_t>(path->slots);
  w.slotBytes = path->slotBytes;
  return w;
}

Status Transport::connectPath(Peer* p, Path* path, const PathWire& w) {
  const std::string who = peerName(p->rank);
  if (w.qpn == 0 || w.slots < 2 || w.slots > 1024 || w.slotBytes < 4096 ||
      w.slotBytes > (16u << 20) ||
      (p->chunkMax != 0 && w.slotBytes - sizeof(FrameHeader) < p->chunkMax)) {
    return remoteError(fmt::format("ib: {} sent a malformed path record", who));
  }
  path->remoteRing = w.ring;
  path->remoteKey = w.rkey;
  path->remoteSlots = w.slots;
  path->remoteSlotBytes = w.slotBytes;
  BRAID_TRY(path->staging.allocate(path->dev->pd, w.slots * w.slotBytes, IBV_ACCESS_LOCAL_WRITE,
                                   "a send staging ring"));
  const PortWire& rport = path->remote;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = std::min(path->port->mtu, static_cast<ibv_mtu>(rport.mtu));
  a.dest_qp_num = w.qpn;
  a.rq_psn = w.psn;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.port_num = static_cast<uint8_t>(path->port->port);
  a.ah_attr.sl = static_cast<uint8_t>(ctx_.cfg->ibSl);
  a.ah_attr.dlid = rport.lid;
  if (path->port->linkLayer == IBV_LINK_LAYER_ETHERNET) {
    a.ah_attr.is_global = 1;
    std::memcpy(a.ah_attr.grh.dgid.raw, rport.gid, 16);
    a.ah_attr.grh.sgid_index = static_cast<uint8_t>(path->port->gidIndex);
    a.ah_attr.grh.hop_limit = 64;
    a.ah_attr.grh.traffic_class = static_cast<uint8_t>(ctx_.cfg->ibTc);
  }
  if (ibv_modify_qp(path->qp, &a,
                    IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                        IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) != 0) {
    // (RoCE: the GID picks the source address; one without a route to the peer's, such as a
    // link-local one forced by BRAID_IB_GID_INDEX, fails here.)
    return systemError(fmt::format(
        "ib: queue pair to RTR ({} -> {}, GID {} {}{}): {}", path->port->name(), who,
        path->port->gidIndex, path->port->gidKind,
        ctx_.cfg->ibGidIndex >= 0 ? " from BRAID_IB_GID_INDEX" : "", std::strerror(errno)));
  }
  ibv_qp_attr s{};
  s.qp_state = IBV_QPS_RTS;
  s.timeout = static_cast<uint8_t>(ctx_.cfg->ibTimeout);
  s.retry_cnt = static_cast<uint8_t>(ctx_.cfg->ibRetryCnt);
  s.rnr_retry = static_cast<uint8_t>(ctx_.cfg->ibRnrRetry);
  s.sq_psn = path->psn;
  s.max_rd_atomic = 1;
  if (ibv_modify_qp(path->qp, &s,
                    IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                        IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC) != 0) {
    return systemError(fmt::format("ib: queue pair to RTS ({} -> {}): {}", path->port->name(), who,
                                   std::strerror(errno)));
  }
  byQpn_[qpKey(path->dev, path->qp->qp_num)] = {p, path};
  return Status::ok();
}

// Both sides: hello + ports, then create the paths, then path records, then RTR/RTS, then a
// ready byte (no write may arrive before the peer's QP can take it).
Status Transport::setupPeer(Peer* p, Fd sock, Deadline deadline) {
  const std::string who = peerName(p->rank);
  HelloWire mine;
  mine.rank = ctx_.rank;
  mine.ports = static_cast<uint32_t>(ports_.size());
  mine.qps = static_cast<uint32_t>(qpsPerPeer_);
  std::string out(reinterpret_cast<const char*>(&mine), sizeof mine);
  for (const PortInfo& pi : ports_) {
    PortWire w;
    std::memcpy(w.gid, pi.gid.raw, 16);
    w.lid = pi.lid;
    w.mtu = static_cast<uint8_t>(pi.mtu);
    w.linkLayer = static_cast<uint8_t>(pi.linkLayer);
    out.append(reinterpret_cast<const char*>(&w), sizeof w);
  }
  BRAID_TRY(writeFull(sock.get(), out.data(), out.size(), deadline, who));
  HelloWire theirs;
  BRAID_TRY(readFull(sock.get(), &theirs, sizeof theirs, deadline, who));
  if (theirs.magic != kMagic || theirs.rank != p->rank || theirs.ports == 0 || theirs.ports > 64 ||
      theirs.qps == 0 || theirs.qps > 64) {
    return remoteError(fmt::format("ib: {} sent a malformed connection record", who));
  }
  std::vector<PortWire> remote(theirs.ports);
  BRAID_TRY(readFull(sock.get(), remote.data(), remote.size() * sizeof(PortWire), deadline, who));
  for (const PortWire& w : remote) {
    if ((w.linkLayer == IBV_LINK_LAYER_ETHERNET) !=
        (ports_[0].linkLayer == IBV_LINK_LAYER_ETHERNET)) {
      return systemError(
          fmt::format("ib: {} uses {} and this rank {}: no RDMA path between them", who,
                      w.linkLayer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand",
                      ports_[0].linkLayer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand"));
    }
  }
  const size_t q = std::min<size_t>(theirs.qps, static_cast<size_t>(qpsPerPeer_));
  const size_t rails = std::max<size_t>(ports_.size(), remote.size());
  const size_t npaths = rails * q;
  std::string recs;
  for (size_t j = 0; j < npaths; ++j) {
    auto path = std::make_unique<Path>();
    path->index = static_cast<int>(j);
    path->port = &ports_[(j / q) % ports_.size()];
    const size_t rp = (j / q) % remote.size();
    path->remotePort = fmt::format("rank {} port {}", p->rank, rp);
    path->remote = remote[rp];
    for (auto& d : devices_) {
      if (d->name == path->port->device) path->dev = d.get();
    }
    BRAID_TRY(createPath(p, path.get()));
    PathWire w = pathRecord(path.get());
    recs.append(reinterpret_cast<const char*>(&w), sizeof w);
    p->paths.push_back(std::move(path));
  }
  BRAID_TRY(writeFull(sock.get(), recs.data(), recs.size(), deadline, who));
  std::vector<PathWire> rpaths(npaths);
  BRAID_TRY(readFull(sock.get(), rpaths.data(), npaths * sizeof(PathWire), deadline, who));
  for (size_t j = 0; j < npaths; ++j) BRAID_TRY(connectPath(p, p->paths[j].get(), rpaths[j]));
  char ready = 'R', theirReady = 0;
  BRAID_TRY(writeFull(sock.get(), &ready, 1, deadline, who));
  BRAID_TRY(readFull(sock.get(), &theirReady, 1, deadline, who));
  if (theirReady != 'R') return remoteError(fmt::format("ib: {} did not get ready", who));
  mp::SenderOptions opt;
  opt.timeoutNs = pathTimeoutNs_;
  size_t window = SIZE_MAX;
  p->chunkMax = SIZE_MAX;
  for (auto& path : p->paths) {
    window = std::min(window, path->remoteSlots * path->remoteSlotBytes);
    p->chunkMax = std::min(p->chunkMax, path->remoteSlotBytes - sizeof(FrameHeader));
  }
  // At least a few of the largest (zero-copy) chunks in flight per path.
  opt.window = std::max(window, 4 * static_cast<size_t>(ctx_.cfg->pathChunkBytes));
  p->tx = mp::Sender(static_cast<int>(npaths), opt);
  LOG_INFO(kIb, "ib: {} connected over {} path(s) ({} rail(s) x {} QP(s); first {} -> {}, {})", who,
           npaths, rails, q, ports_[0].name(), p->paths[0]->remotePort, ports_[0].gidKind);
  p->sock = std::move(sock);
  return Status::ok();
}

Status Transport::connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int me = ctx_.rank, n = ctx_.nranks;
  info_ = peers;
  peers_.clear();
  peers_.resize(n);
  bool any = false;
  for (int r = 0; r < n; ++r) {
    if (r == me || !peers[r].serve) continue;
    peers_[r] = std::make_unique<Peer>();
    peers_[r]->rank = r;
    peers_[r]->t = this;
    any = true;
  }
  if (!any) {
    listener_.reset();
    return Status::ok();
  }
  BRAID_TRY(openDevices(peers));
  std::vector<bool> wanted(n);
  for (int r = 0; r < n; ++r) wanted[r] = peers_[r] != nullptr;
  Status s = connectPairs(
      listener_.get(), ctx_.secret, ctx_.commTag, me, n, wanted, deadline,
      [&](int r, Fd* fd) {
        SockAddr to;
        BRAID_TRY(SockAddr::parse(peers[r].address, &to));
        return connectTo(to, deadline, fd, peerName(r));
      },
      [&](int r, Fd fd, bool) { return setupPeer(peers_[r].get(), std::move(fd), deadline); },
      [&](int r) { return peerName(r); }, "ib");
  listener_.reset();
  BRAID_TRY(s);
  for (auto& p : peers_) {
    if (!p) continue;
    BRAID_TRY(setNonBlocking(p->sock.get()));
    BRAID_TRY(ctx_.reactor->add(p->sock.get(), EPOLLIN, p.get()));
    active_.push_back(p.get());
  }
  downSince_ = std::make_unique<std::atomic<int64_t>[]>(static_cast<size_t>(n));
  timer_ = std::make_unique<Timer>(this);
  BRAID_TRY(timer_->arm(std::clamp<int64_t>(pathTimeoutNs_ / 4, 5'000'000, 100'000'000)));
  BRAID_TRY(ctx_.reactor->add(timer_->fd(), EPOLLIN, timer_.get()));
  ctx_.reactor->addPoller(this);
  startNs_ = lastFaultNs_ = mp::nowNs();
  if (fault_.enabled && (fault_.rank < 0 || fault_.rank == me)) {
    size_t most = 0;
    for (const Peer* p : active_) {
      if (fault_.peer < 0 || p->rank == fault_.peer) most = std::max(most, p->paths.size());
    }
    BRAID_TRY(fault_.checkPath(static_cast<int>(most)));
  }
  faultsLeft_ = fault_.enabled && (fault_.rank < 0 || fault_.rank == me) ? fault_.times : 0;
  std::string portNames;
  for (const PortInfo& pi : ports_) portNames += (portNames.empty() ? "" : ", ") + pi.name();
  LOG_INFO(kIb, "ib: connected to {} peers on {}", active_.size(), portNames);
  return Status::ok();
}

Status Transport::registerBuffer(void* buf, size_t size, void** handle) {
  *handle = nullptr;
  if (devices_.empty()) return Status::ok();  // no peer over ib
  auto reg = std::make_unique<Registration>();
  reg->base = reinterpret_cast<uintptr_t>(buf);
  reg->bytes = size;
  for (auto& d : devices_) {
    ibv_mr* mr = ibv_reg_mr(d->pd, buf, size, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) {
      Status s = systemError(fmt::format("ib: registering {} bytes at {} on {} failed: {}{}", size,
                                         buf, d->name, std::strerror(errno), memlockHint()));
      for (ibv_mr* m : reg->mrs) ibv_dereg_mr(m);
      return s;
    }
    reg->mrs.push_back(mr);
  }
  std::lock_guard<std::mutex> lock(regMu_);
  Registration* raw = reg.get();
  regs_.emplace(reg->base, std::move(reg));
  *handle = raw;
  return Status::ok();
}

void Transport::deregisterBuffer(void* handle) {
  std::unique_ptr<Registration> reg;
  {
    std::lock_guard<std::mutex> lock(regMu_);
    auto* r = static_cast<Registration*>(handle);
    auto [lo, hi] = regs_.equal_range(r->base);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.get() == r) {
        reg = std::move(it->second);
        regs_.erase(it);
        break;
      }
    }
  }
  if (reg) {
    for (ibv_mr* m : reg->mrs) ibv_dereg_mr(m);
  }
}

bool Transport::findKeys(const void* buf, size_t n, std::vector<uint32_t>* lkeys,
                         std::vector<uint32_t>* rkeys) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(buf);
  std::lock_guard<std::mutex> lock(regMu_);
  auto it = regs_.upper_bound(a);
  while (it != regs_.begin()) {
    --it;
    const Registration& r = *it->second;
    if (a >= r.base && a + n <= r.base + r.bytes) {
      lkeys->clear();
      rkeys->clear();
      for (ibv_mr* m : r.mrs) {
        lkeys->push_back(m->lkey);
        rkeys->push_back(m->rkey);
      }
      return true;
    }
  }
  return false;
}

void Transport::pathStats(std::vector<PathStatsRow>* out) const {
  for (Peer* p : active_) {
    for (const auto& path : p->paths) {
      PathStatsRow row;
      row.peer = p->rank;
      row.path = path->index;
      row.transport = "ib";
      row.local = path->port->name();
      row.remote = path->remotePort;
      row.state = mp::pathStateName(static_cast<mp::PathState>(path->ctr.state.load()));
      row.bytesSent = path->ctr.bytesSent.load();
      row.bytesReceived = path->ctr.bytesReceived.load();
      row.chunksSent = path->ctr.chunksSent.load();
      row.chunksReceived = path->ctr.chunksReceived.load();
      row.retransmits = path->ctr.retransmits.load();
      row.failures = path->ctr.failures.load();
      row.readmissions = path->ctr.readmissions.load();
      out->push_back(std::move(row));
    }
  }
}

}  // namespace ib

namespace {

class IbFactory : public TransportFactory {
 public:
  const char* name() const override { return "ib"; }
  bool usable(const Config& cfg) const override { return unusableReason(cfg).empty(); }
  std::string unusableReason(const Config& cfg) const override {
    std::vector<ib::PortInfo> ports;
    std::string why;
    Status s = ib::discoverPorts(cfg, &ports, &why);
    if (!s.isOk()) return s.message();
    return ports.empty() ? why : std::string();
  }
  Status open(const TransportContext& ctx, std::unique_ptr<Transport>* out) override {
    auto t = std::make_unique<ib::Transport>(ctx);
    BRAID_TRY(t->listen());
    *out = std::move(t);
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<TransportFactory> makeIbTransportFactory() { return std::make_unique<IbFactory>(); }

}  // namespace braid
