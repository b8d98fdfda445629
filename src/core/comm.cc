#include "src/core/comm.h"

#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>

#include "collectives/algorithms.h"
#include "src/bootstrap/rendezvous.h"
#include "src/core/handles.h"
#include "src/core/laggards.h"
#include "src/core/log.h"
#include "src/engine/executor.h"
#include "src/topology/machine.h"
#include "src/topology/netif.h"

namespace braid {
namespace {

std::string localHostName() {
  char h[256] = {};
  gethostname(h, sizeof h - 1);
  return h;
}

}  // namespace

std::shared_ptr<Comm> Comm::detached(int rank, int nranks, const Config& cfg) {
  return std::shared_ptr<Comm>(new Comm(rank, nranks, cfg, Secret{}));
}

Comm::Comm(int rank, int nranks, const Config& cfg, const Secret& secret)
    : rank_(rank), nranks_(nranks), cfg_(cfg), secret_(secret), calls_([this](int r) {
        return transport_ ? transport_->peerName(r) : fmt::format("rank {}", r);
      }) {
  creatorPid_ = static_cast<int>(::getpid());
  forkGen_ = braid::forkGeneration();
  auto tag = derive(secret, "braid comm tag");
  std::memcpy(&commTag_, tag.data(), sizeof commTag_);
  sendSeq_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(nranks));
  recvSeq_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(nranks));
}

Comm::~Comm() { (void)shutdown(); }

Status Comm::openTransport() {
  reactor_ = std::make_unique<Reactor>();
  BRAID_TRY(reactor_->open());
  TransportContext ctx;
  ctx.rank = rank_;
  ctx.nranks = nranks_;
  ctx.cfg = &cfg_;
  ctx.secret = secret_;
  ctx.commTag = commTag_;
  ctx.reactor = reactor_.get();
  ctx.deadRoutes = parentDeadRoutes_;
  ctx.onFatal = [this](const Status& s) { setAsyncError(s); };
  ctx.onEarlyMessage = [this](int peer, uint64_t tag) {
    if (isControlTag(tag)) {
      return answerLaggardQuery(transport_.get(), reactor_.get(), peer, tag, [this](uint64_t call) {
        uint16_t sig = 0;
        const bool made = calls_.signatureOf(call, &sig);
        return laggardAnswer(collSeq_.load(std::memory_order_relaxed), made ? &sig : nullptr);
      });
    }
    if (Status e = calls_.onArrival(peer, tag); !e.isOk()) failWith(e);
  };
  return TransportSet::open(ctx, &transport_);
}

Status Comm::connect(const PeerTable& table, Deadline deadline) {
  table_ = table;
  nodes_ = groupByHost(table.nodes);
  nodes_.rails = table.rails;
  nodes_.intra = table.intra;
  nodes_.inter = table.inter;
  LOG_INFO(kInit, "rank {} of {}: node {} ({} of {} nodes), local rank {} of {}", rank_, nranks_,
           nodes_.names[nodes_.nodeOf[rank_]], nodes_.nodeOf[rank_] + 1, nodes_.names.size(),
           nodes_.localRank(rank_), nodes_.localSize(rank_));
  std::vector<PeerInfo> peers(nranks_);
  for (int r = 0; r < nranks_; ++r) {
    // Shared memory only within a node (a topology file's virtual nodes split a host) and a
    // real host (and network namespace).
    const bool sameNode =
        nodes_.nodeOf[r] == nodes_.nodeOf[rank_] && table.hostIds[r] == table.hostIds[rank_];
    // A split's peers are also named by their rank in the communicator made at init (several
    // overlapping splits number the same process differently).
    std::string host = table.hosts[r];
    if (!worldRanks_.empty()) host += fmt::format(", world rank {}", worldRanks_[r]);
    peers[r] = PeerInfo{table.addresses[r], host, r != rank_, sameNode};
  }
  if (const std::string no = forcedButNotApplicable(cfg_, nodes_); !no.empty() && rank_ == 0) {
    LOG_WARN(kInit,
             "BRAID_ALGO forces {}, which needs 2 or more nodes of equal size with 2 or more "
             "ranks each; this communicator has {} node(s): the flat algorithm runs instead",
             no, nodes_.names.size());
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  int cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 0;
  int onHost = static_cast<int>(
      std::count(table.hostIds.begin(), table.hostIds.end(), table.hostIds[rank_]));
  oversubscribed_ = cores > 0 && onHost > cores;
  BRAID_TRY(transport_->connectAll(peers, deadline));
  setupFastBoxes();
  BRAID_TRY(reactor_->start(rank_));
  // A barrier over the new connections: a rank returns from init only once every rank has
  // made its connections (a rank whose own connections timed out or failed leaves the others
  // failing too, instead of returning a communicator whose first call fails).
  // It is collective call 0 on every communicator (messages count calls from the next one).
  CollArgs joined;
  joined.kind = CollKind::kBarrier;
  const uint64_t tagBase = nextCollectiveTagBase(joined, "connected");
  if (nranks_ < 2) return Status::ok();
  auto sched = std::make_unique<Schedule>(shared_from_this(), "connected", tagBase);
  barrierDissemination(joined, sched.get());
  std::vector<std::unique_ptr<Schedule>> v;
  v.push_back(std::move(sched));
  return executeSchedules(v, deadline);
}

// Every rank reaches the same answer: every pair of a one-node communicator shares memory
// (the transport set routes both ends of a pair alike), and the pairs checked at connect
// that both ranks use the same box capacity.
void Comm::setupFastBoxes() {
  if (nranks_ < 2) return;
  auto fb = std::make_unique<FastBoxes>();
  fb->links.resize(nranks_);
  fb->seen.assign(nranks_, 0);
  for (int r = 0; r < nranks_; ++r) {
    if (r != rank_ && !transport_->fastLink(r, &fb->links[r], &fb->capacity)) return;
  }
  fb->kinds = fastboxKinds(cfg_);
  LOG_INFO(kInit, "fast boxes to all {} peers ({} bytes each)", nranks_ - 1, fb->capacity);
  fast_ = std::move(fb);
}

namespace {

// What ranks say to each other (rendezvous rows, transport handshakes, frame and tag layouts,
// control messages): raise it whenever one of them changes, so that ranks of builds that
// would misread each other fail at init instead of exchanging garbage.
constexpr int kWireProtocol = 3;

// The settings every rank must share (each decides alone what the others' calls then must
// match: a forced algorithm, the fast boxes' size, the nodes of a topology file), as
// "NAME=value" lines, the first naming the build; a topology file by what it declares, not by
// its path.
std::string sharedSettings(const Config& cfg, const NodeMap& declared) {
  std::string topo = "none";
  if (!cfg.topoFile.empty()) {
    std::string canon =
        fmt::format("rails {} intra {} {} inter {} {}", declared.rails, declared.intra.latencyUs,
                    declared.intra.gbps, declared.inter.latencyUs, declared.inter.gbps);
    for (size_t n = 0; n < declared.names.size(); ++n) {
      canon += fmt::format(";{}:{}", declared.names[n], fmt::join(declared.ranks[n], ","));
    }
    topo = fmt::format("{} nodes, digest {:016x}", declared.names.size(),
                       std::hash<std::string>{}(canon));
  }
  const std::string build = fmt::format("{}.{}.{} (wire protocol {})", BRAID_MAJOR, BRAID_MINOR,
                                        BRAID_PATCH, kWireProtocol);
  // What picks the algorithms, their chunks and the messages' protocol: ranks that differ
  // build different schedules and wait for each other until BRAID_TIMEOUT_MS. The transports
  // as a set (their order does not matter).
  std::vector<std::string> transports = splitList(cfg.transports, ',');
  std::sort(transports.begin(), transports.end());
  transports.erase(std::unique(transports.begin(), transports.end()), transports.end());
  return fmt::format(
      "braid={}\nBRAID_ALGO={}\nBRAID_SHM_FAST_BYTES={}\nBRAID_TOPO_FILE={}\nBRAID_TRANSPORTS={}\n"
      "BRAID_CHUNK_BYTES={}\nBRAID_EAGER_BYTES={}\nBRAID_SMALL_ALLGATHER_BYTES={}\n"
      "BRAID_CHAIN_MIN_BYTES={}\nBRAID_ALLTOALL_WINDOW={}\nBRAID_TCP_SOCKETS_PER_PEER={}",
      build, cfg.algo, cfg.shmFastBytes, topo, fmt::join(transports, ","), cfg.chunkBytes,
      cfg.eagerBytes, cfg.smallAllgatherBytes, cfg.chainMinBytes, cfg.alltoallWindow,
      cfg.tcpSocketsPerPeer);
}

// Every rank holds every rank's settings: each finds the same difference and fails alike.
// Compared by name: a build that does not send a line (older) differs by its absence.
Status checkSharedSettings(const std::vector<std::string>& settings,
                           const std::vector<std::string>& hosts) {
  auto parse = [](const std::string& s) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const std::string& line : splitList(s, '\n')) {
      const size_t eq = line.find('=');
      out.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
    }
    return out;
  };
  auto find = [](const std::vector<std::pair<std::string, std::string>>& v, const std::string& k) {
    for (const auto& [name, value] : v) {
      if (name == k) return std::optional<std::string>(value);
    }
    return std::optional<std::string>();
  };
  const auto base = parse(settings[0]);
  for (size_t r = 1; r < settings.size(); ++r) {
    const auto mine = parse(settings[r]);
    const auto build0 = find(base, "braid"), buildR = find(mine, "braid");
    if (build0 != buildR) {
      constexpr const char* kOlder = "from before wire protocol 2 (it does not say its version)";
      return invalidUsage(fmt::format(
          "rank 0 ({}) runs braid {} and rank {} ({}) braid {}: every rank of a job must run "
          "the same braid build; check the library each rank loads (LD_LIBRARY_PATH, "
          "container image; braid-info prints the version)",
          hosts[0], build0.value_or(kOlder), r, hosts[r], buildR.value_or(kOlder)));
    }
    for (const auto& [name, value] : base) {
      if (name == "braid") continue;
      const auto other = find(mine, name);
      if (!other || *other == value) continue;
      return invalidUsage(fmt::format(
          "{} differs between ranks: '{}' on rank 0 ({}), '{}' on rank {} ({}); it must be the "
          "same on every rank",
          name, value, hosts[0], *other, r, hosts[r]));
    }
  }
  return Status::ok();
}

}  // namespace

Status Comm::initFromRoot(int nranks, int rank, const SockAddr& root, const Secret& secret,
                          const Config& cfg, std::shared_ptr<Comm>* out) {
  std::shared_ptr<Comm> c(new Comm(rank, nranks, cfg, secret));
  logSetThreadRank(rank);
  warnUnknownVariables();
  Deadline deadline = deadlineIn(cfg.timeoutMs);
  // A topology file is checked before anyone waits on anyone: a bad one fails every rank now.
  NodeMap declared;
  if (!cfg.topoFile.empty()) BRAID_TRY(loadTopologyFile(cfg.topoFile, nranks, &declared));
  BRAID_TRY(checkAlgoSpec(cfg.algo));  // likewise a misspelt BRAID_ALGO
  // Sockets or doorbells to every peer, a few per path: more than the default 1024 at scale.
  raiseFileLimit(256 + 16 * static_cast<size_t>(nranks));
  BRAID_TRY(c->openTransport());
  std::string blob = localHostName() + '\n' + hostIdentity() + '\n' +
                     c->transport_->localAddress() + '\n' + sharedSettings(cfg, declared);
  std::vector<std::string> rows;
  BRAID_TRY(rendezvous(root, secret, rank, nranks, blob, deadline, &rows));
  PeerTable table;
  // Rails: what the topology file declares, else the interfaces BRAID_RAILS names.
  table.rails = cfg.topoFile.empty()
                    ? std::max<int>(1, static_cast<int>(configuredRails(cfg).size()))
                    : declared.rails;
  table.intra = declared.intra;
  table.inter = declared.inter;
  std::vector<std::string> settings;
  for (int r = 0; r < nranks; ++r) {
    size_t nl = rows[r].find('\n'), nl2 = nl == std::string::npos ? nl : rows[r].find('\n', nl + 1);
    if (nl2 == std::string::npos) {
      return remoteError(fmt::format("rendezvous: malformed address record of rank {}", r));
    }
    const size_t nl3 = rows[r].find('\n', nl2 + 1);
    table.hosts.push_back(rows[r].substr(0, nl));
    table.hostIds.push_back(rows[r].substr(nl + 1, nl2 - nl - 1));
    table.nodes.push_back(cfg.topoFile.empty() ? table.hostIds.back()
                                               : declared.names[declared.nodeOf[r]]);
    table.addresses.push_back(
        rows[r].substr(nl2 + 1, nl3 == std::string::npos ? nl3 : nl3 - nl2 - 1));
    settings.push_back(nl3 == std::string::npos ? std::string() : rows[r].substr(nl3 + 1));
  }
  BRAID_TRY(checkSharedSettings(settings, table.hosts));
  BRAID_TRY(c->connect(table, deadline));
  LOG_INFO(kInit, "communicator ready: rank {} of {} (transport {})", rank, nranks,
           c->transport_->name());
  *out = std::move(c);
  return Status::ok();
}

// A point-to-point tag's sequence field: bits kSlotBits..62 (bit 63 marks point-to-point).
constexpr uint64_t kTagSeqMask = (uint64_t{1} << (63 - kSlotBits)) - 1;

uint64_t Comm::nextCollectiveTagBase(const CollArgs& a, const char* internal) {
  return calls_.record(collSeq_.fetch_add(1), a, internal);
}

Status Comm::checkCall(uint64_t tagBase) {
  Status e = calls_.check(tagBase);
  if (!e.isOk()) failWith(e);
  return e;
}

void Comm::failWith(const Status& e) {
  if (hasAsyncError()) return;
  setAsyncError(e);
  std::lock_guard<std::recursive_mutex> lock(teardownMu_);
  if (transport_) transport_->abort(e);
}

Comm::SoleCaller::SoleCaller(std::shared_ptr<Comm> c, const char* call) : c_(std::move(c)) {
  Comm* const comm = c_.get();
  const std::thread::id me = std::this_thread::get_id();
  std::thread::id holder{};
  if (comm->caller_.compare_exchange_strong(holder, me, std::memory_order_acq_rel)) {
    owner_ = true;
  } else if (holder != me) {
    status_ = invalidUsage(fmt::format(
        "{}: rank {}: another thread of this process is making a call on this communicator "
        "(it has not returned): two threads' calls would be matched with the peers' calls in "
        "different orders (wrong results), so the communicator fails. Make the calls on one "
        "communicator from one thread at a time, in the same order on every rank (a "
        "communicator per thread for concurrent calls)",
        call, comm->rank()));
    comm->callerClashed_.store(true, std::memory_order_release);
    comm->failWith(status_);
  }
}

Status Comm::SoleCaller::finish(Status result) const {
  if (owner_ && result.isOk() && c_->callerClashed_.load(std::memory_order_acquire)) {
    return c_->asyncError();
  }
  return result;
}

Comm::SoleCaller::~SoleCaller() {
  if (owner_) c_->caller_.store(std::thread::id{}, std::memory_order_release);
}

std::string Comm::whoIsLate(uint64_t tagBase) {
  // (The query and answer must go eagerly: a message above BRAID_EAGER_BYTES waits for its
  // receive, which a peer posts only once it saw the query.)
  if ((tagBase & kP2pBit) != 0 || !transport_ || nranks_ < 2 || cfg_.eagerBytes < 8) return {};
  // Answers come from the peers' progress threads within a round trip; a peer that does not
  // answer in this time is named as such.
  const int64_t waitMs = std::clamp<int64_t>(cfg_.timeoutMs / 4, 1, 1000);
  const uint64_t call = calls_.callOf(tagBase);
  return probeLaggards(transport_.get(), rank_, nranks_, call,
                       static_cast<uint16_t>(tagBase >> kSigShift), calls_.describe(call),
                       probes_.fetch_add(1, std::memory_order_relaxed), waitMs);
}

Status Comm::timedOut(const std::string& call, int64_t timeoutMs, const std::string& waitingFor,
                      const std::string& late, const std::string& health) {
  if (!namesLateRanks(late) && hasAsyncError() && health.empty()) return asyncError();
  // Peers this rank cannot reach lead (the others' silence follows from it); when it reaches
  // none, its own links are the likely cause.
  std::string lead = late;
  if (!health.empty()) {
    std::string unreachable = health.substr(health.rfind("; ", 0) == 0 ? 2 : 0);
    size_t count = 0;
    for (size_t at = 0; (at = unreachable.find(" is unreachable", at)) != std::string::npos; ++at) {
      ++count;
    }
    // (Peers on this node are reached through memory: the network ones count.)
    const int remote = nranks_ - nodes_.localSize(rank_);
    if (remote >= 2 && count >= static_cast<size_t>(remote)) {
      unreachable +=
          " (every peer on another node: this host's own links or NICs are the likely "
          "cause)";
    }
    lead = late.empty() ? unreachable : unreachable + "; " + late;
  }
  std::string text = timeoutText(call, timeoutMs, waitingFor, lead);
  if (!namesLateRanks(late) && hasAsyncError()) {
    text += fmt::format(" (meanwhile: {})", asyncError().message());
  }
  return timeoutError(text);
}

uint64_t Comm::nextSendTagBase(int peer) {
  uint64_t seq = sendSeq_[peer].fetch_add(1, std::memory_order_relaxed) & kTagSeqMask;
  return kP2pBit | (seq << kSlotBits);
}

uint64_t Comm::nextRecvTagBase(int peer) {
  uint64_t seq = recvSeq_[peer].fetch_add(1, std::memory_order_relaxed) & kTagSeqMask;
  return kP2pBit | (seq << kSlotBits);
}

Status Comm::asyncError() {
  std::lock_guard<std::mutex> lock(mu_);
  return asyncError_;
}

void Comm::setAsyncError(const Status& s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (asyncError_.isOk()) asyncError_ = s;
  failed_.store(true, std::memory_order_release);
  lastError_ = s.message();
}

void Comm::setLastError(const std::string& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  lastError_ = msg;
}

std::string Comm::lastError() {
  std::lock_guard<std::mutex> lock(mu_);
  return lastError_;
}

void Comm::abort(const std::string& why) {
  Status s = invalidUsage(fmt::format("rank {}: {}", rank_, why));
  std::lock_guard<std::recursive_mutex> lock(teardownMu_);
  if (transport_) transport_->abort(s);
}

Status Comm::shutdown(const char* aborting) {
  // What was queued on streams runs first, as NCCL's destroy completes the operations already
  // issued; unless the communicator failed (or was aborted): then they fail at once anyway.
  // Bounded by the timeout (each queued call is bounded by it too).
  const Deadline flushBy = deadlineIn(cfg_.timeoutMs);
  while (!aborting && queued_.load() > 0 && !hasAsyncError() && Clock::now() < flushBy) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutDown_) return Status::ok();
    shutDown_ = true;
    // Calls still queued on streams find this and fail cleanly instead of using a dead transport.
    if (asyncError_.isOk()) {
      asyncError_ = invalidUsage(aborting ? fmt::format("rank {}: {}", rank_, aborting)
                                          : "the communicator was destroyed");
    }
    failed_.store(true, std::memory_order_release);
  }
  if (aborting && !idle()) abort(aborting);  // calls in flight or queued fail now
  Deadline d = deadlineIn(cfg_.timeoutMs);
  while (inflight_.load() > 0 && Clock::now() < d) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Status closed;
  if (transport_ && reactor_ && reactor_->running()) {
    // (Not waiting for acknowledgements once failed: nothing more arrives.)
    closed = transport_->close(aborting ? std::min(d, deadlineIn(1000)) : d);
  }
  if (reactor_) reactor_->stop();
  // An abort from another thread (braidCommAbort racing braidCommDestroy) may be using them.
  std::lock_guard<std::recursive_mutex> lock(teardownMu_);
  transport_.reset();
  reactor_.reset();
  return closed;
}

Status Comm::split(int color, int key, std::shared_ptr<Comm>* out) {
  // In flight like any call: braidCommAbort from another thread fails it (the exchange, and
  // the new communicator's connections through parentFailed), and destroy waits for it.
  const InFlight call(this);
  // 1. Everyone opens a listener for the new communicator (if it gets one), then the records
  //    {color, key, host, address} are all-gathered over this communicator.
  constexpr size_t kRec = 512;
  std::shared_ptr<Comm> child;
  uint64_t splitId = splitCount_++;
  std::string addr;
  // A rank that cannot make its part (out of file descriptors, say) still takes part in the
  // exchange, its record saying why ('!' and the reason where its address goes): the others
  // of its color fail at once instead of waiting for it until the timeout.
  Status opened;
  if (color >= 0) {
    // The child's secret is derived from ours, the split number and the color.
    child.reset(new Comm(
        0, 1, cfg_, deriveSecret(secret_, fmt::format("braid split {} color {}", splitId, color))));
    // Routes dead here start dead there: the new connections need not wait for them.
    transport_->deadRoutes(&child->parentDeadRoutes_);
    opened = child->openTransport();
    if (opened.isOk()) {
      addr = child->transport_->localAddress();
      if (addr.size() >= 300) {
        opened =
            internalError(fmt::format("split: transport address too long ({} bytes)", addr.size()));
      }
    }
    if (!opened.isOk()) addr = "!" + opened.message().substr(0, 290);
  }
  std::string mine(kRec, '\0');
  std::string host = localHostName();
  int32_t hdr[2] = {color, key};
  std::memcpy(mine.data(), hdr, sizeof hdr);
  std::snprintf(mine.data() + 8, 200, "%s", host.c_str());
  std::snprintf(mine.data() + 208, 300, "%s", addr.c_str());
  std::vector<char> all(kRec * nranks_);
  {
    CollArgs exchange;
    exchange.kind = CollKind::kAllGather;
    exchange.dt = braidInt8;
    exchange.count = kRec;
    const uint64_t tagBase = nextCollectiveTagBase(exchange, "commSplit");
    BRAID_TRY(checkCall(tagBase));
    auto sched = std::make_unique<Schedule>(shared_from_this(), "commSplit", tagBase);
    // Simple all-to-all exchange of the fixed-size records.
    for (int r = 0; r < nranks_; ++r) {
      if (r == rank_) {
        sched->copy(all.data() + kRec * r, mine.data(), kRec);
      } else {
        sched->send(r, 0, mine.data(), kRec);
        sched->recv(r, 0, all.data() + kRec * r, kRec);
      }
    }
    std::vector<std::unique_ptr<Schedule>> v;
    v.push_back(std::move(sched));
    BRAID_TRY(executeSchedules(v));
  }
  if (!opened.isOk()) return opened;
  if (color < 0) {
    *out = nullptr;
    return Status::ok();
  }
  struct Member {
    int key, parentRank;
    std::string host, addr;
  };
  std::vector<Member> members;
  for (int r = 0; r < nranks_; ++r) {
    int32_t h[2];
    std::memcpy(h, all.data() + kRec * r, sizeof h);
    if (h[0] != color) continue;
    const char* rec = all.data() + kRec * r;
    if (rec[208] == '!') {
      return remoteError(
          fmt::format("split: {} could not make its part of the new communicator: {}",
                      transport_->peerName(r), std::string(rec + 209, strnlen(rec + 209, 299))));
    }
    members.push_back({h[1], r, std::string(rec + 8, strnlen(rec + 8, 200)),
                       std::string(rec + 208, strnlen(rec + 208, 300))});
  }
  std::stable_sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
    return a.key != b.key ? a.key < b.key : a.parentRank < b.parentRank;
  });
  PeerTable table;
  table.rails = nodes_.rails;
  table.intra = nodes_.intra;
  table.inter = nodes_.inter;
  int newRank = -1;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].parentRank == rank_) newRank = static_cast<int>(i);
    table.hosts.push_back(members[i].host);
    table.addresses.push_back(members[i].addr);
    table.nodes.push_back(table_.nodes[members[i].parentRank]);  // the parent's grouping
    table.hostIds.push_back(table_.hostIds[members[i].parentRank]);
    child->worldRanks_.push_back(worldRank(members[i].parentRank));
  }
  // Re-seat the child with its real rank and size (the transport listener is kept).
  child->rank_ = newRank;
  child->nranks_ = static_cast<int>(members.size());
  child->sendSeq_ = std::make_unique<std::atomic<uint64_t>[]>(members.size());
  child->recvSeq_ = std::make_unique<std::atomic<uint64_t>[]>(members.size());
  BRAID_TRY(child->transport_->setRankInfo(newRank, child->nranks_));
  // A rank that dies now is seen by this (parent) communicator, not by the new one's
  // connections, which would wait for it until the timeout.
  const AbandonCheck parentFailed = [this]() -> Status {
    if (!hasAsyncError()) return Status::ok();
    Status e = asyncError();
    return Status(e.code(), fmt::format("split: the parent communicator failed while the new one "
                                        "connected: {}",
                                        e.message()));
  };
  AbandonScope scope(&parentFailed);
  BRAID_TRY(child->connect(table, deadlineIn(cfg_.timeoutMs)));
  *out = std::move(child);
  return Status::ok();
}

}  // namespace braid
