// The communicator: rank, size, config, its progress loop and transport, sequence counters
// that tag every call's messages, the asynchronous error, and a scratch pool.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "src/bootstrap/auth.h"
#include "src/core/call_check.h"
#include "src/core/config.h"
#include "src/core/status.h"
#include "src/engine/fastbox.h"
#include "src/engine/reactor.h"
#include "src/engine/scratch.h"
#include "src/topology/nodes.h"
#include "transports/transport_set.h"

namespace braid {

class Comm : public std::enable_shared_from_this<Comm> {
 public:
  struct PeerTable {
    std::vector<std::string> hosts;
    std::vector<std::string> addresses;
    std::vector<std::string> nodes;    // per rank: node identity (host id or topology-file node)
    std::vector<std::string> hostIds;  // per rank: the real host (shared memory needs the same)
    int rails = 1;                     // and what BRAID_TOPO_FILE declares beyond the grouping
    LinkRate intra, inter;
  };

  ~Comm();

  // Joins the job at the rendezvous root (unique id) and connects to every peer.
  static Status initFromRoot(int nranks, int rank, const SockAddr& root, const Secret& secret,
                             const Config& cfg, std::shared_ptr<Comm>* out);
  // A communicator with no progress loop or transport, only rank, size and config: for
  // planning schedules (the schedule-build benchmark); it cannot run them.
  static std::shared_ptr<Comm> detached(int rank, int nranks, const Config& cfg);
  // Collective over this communicator (see braidCommSplit).
  Status split(int color, int key, std::shared_ptr<Comm>* out);

  int rank() const { return rank_; }
  // A rank's number in the communicator made at init that this one was split from (itself
  // when it was made at init).
  int worldRank(int r) const { return worldRanks_.empty() ? r : worldRanks_[r]; }
  // The process that created it, and the fork generation it belongs to (handles.h).
  int creatorPid() const { return creatorPid_; }
  uint64_t forkGeneration() const { return forkGen_; }
  int nranks() const { return nranks_; }
  const Config& config() const { return cfg_; }
  Transport* transport() const { return transport_.get(); }
  TransportSet* transports() const { return transport_.get(); }
  Reactor* reactor() const { return reactor_.get(); }
  // Which ranks share a node (host identity, or BRAID_TOPO_FILE for the world communicator).
  const NodeMap& nodes() const { return nodes_; }
  const std::shared_ptr<ScratchPool>& scratchPool() const { return scratch_; }
  // More ranks of this communicator run on this host than this process may use cores.
  bool oversubscribed() const { return oversubscribed_; }

  // Tag bases: collectives by call order (every rank calls them in the same order), with
  // the call's signature (call_check.h; `internal` names braid's own exchanges),
  // point-to-point by per-peer, per-direction order (NCCL matching semantics).
  uint64_t nextCollectiveTagBase(const CollArgs& a, const char* internal = nullptr);
  // Whether a peer's message for the call of this tag base showed that the peer made a
  // different call: then the communicator has failed (its peers are told) and this is why.
  Status checkCall(uint64_t tagBase);
  // Fails the communicator (any thread): calls in flight end with e, and the peers are told
  // (a call that failed half way leaves them waiting for this rank otherwise).
  void failWith(const Status& e);
  // Before a collective call that timed out fails (any thread but the loop's): what the peers
  // say of the call of this tag base (laggards.h), to append to the timeout's message.
  std::string whoIsLate(uint64_t tagBase);
  // The error of a call that timed out waiting for `waitingFor`, with `late` (whoIsLate) first;
  // or the failure that reached this communicator meanwhile, unless `late` names late ranks
  // (that failure cut the answers off and carries the first rank's diagnosis) or this rank
  // cannot reach a peer (`health`, Transport::healthNote: a partition that only this side of
  // it sees; the failure that came is then appended).
  Status timedOut(const std::string& call, int64_t timeoutMs, const std::string& waitingFor,
                  const std::string& late, const std::string& health = {});
  uint64_t nextSendTagBase(int peer);
  uint64_t nextRecvTagBase(int peer);

  Status asyncError();
  // Whether asyncError() is set: one atomic load, for polling loops.
  bool hasAsyncError() const { return failed_.load(std::memory_order_acquire); }
  void setAsyncError(const Status& s);
  // The fast boxes to every peer, when every peer shares memory with this rank and the
  // transport has them (BRAID_SHM_FAST_BYTES > 0); else nullptr.
  FastBoxes* fastBoxes() const { return fast_.get(); }
  void setLastError(const std::string& msg);
  std::string lastError();

  // Fails everything in flight (any thread).
  void abort(const std::string& why);
  // Waits (bounded) for calls in flight and for what this rank sent to arrive, says goodbye to
  // peers, stops the progress loop; an error when some of it may not have arrived. With
  // `aborting` (braidCommAbort, the reason): queued stream calls are not waited for, calls
  // that started meanwhile are failed, and the transport gets a second at most.
  Status shutdown(const char* aborting = nullptr);
  // No call of this rank in flight or queued on a stream.
  bool idle() const { return inflight_.load() == 0 && queued_.load() == 0; }

  // Calls in flight (held by executing tasks) — destroy waits for them, abort fails them.
  void enter() { inflight_.fetch_add(1); }
  void leave() { inflight_.fetch_sub(1); }
  struct InFlight {
    explicit InFlight(Comm* c) : c_(c) { c_->enter(); }
    ~InFlight() { c_->leave(); }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    Comm* c_;
  };
  // Tasks queued on streams and not yet run (stream.h's QueuedMark) — destroy runs them first.
  void queued(int delta) { queued_.fetch_add(delta); }

  // One caller of collectives at a time: held by a call that takes a collective call number
  // (a collective, a split, the end of a group with collectives) while it is made (a blocking
  // one: until it returns). Two threads making collective calls on one communicator at once
  // number them in the order they come, which need not be the peers' order: the calls would be
  // matched wrongly (silently wrong results where their sizes agree). The second is refused
  // and the communicator fails, so that every rank hears of it (NCCL leaves this undefined).
  // Sends and receives are numbered per peer and direction and need no such guard.
  class SoleCaller {
   public:
    SoleCaller(std::shared_ptr<Comm> c,
               const char* call);  // (held: the caller may be its last owner)
    ~SoleCaller();
    SoleCaller(const SoleCaller&) = delete;
    SoleCaller& operator=(const SoleCaller&) = delete;
    // ok, or why the call is refused (the communicator has failed).
    const Status& status() const { return status_; }
    // The holder's result: its call, if another thread's call was refused meanwhile, is not a
    // success (its peers' matching calls may have been the other thread's).
    Status finish(Status result) const;

   private:
    std::shared_ptr<Comm> c_;
    bool owner_ = false;
    Status status_;
  };

 private:
  Comm(int rank, int nranks, const Config& cfg, const Secret& secret);
  Status openTransport();
  Status connect(const PeerTable& table, Deadline deadline);
  void setupFastBoxes();

  int rank_;
  int nranks_;
  Config cfg_;
  Secret secret_;
  uint64_t commTag_ = 0;
  uint64_t splitCount_ = 0;
  std::atomic<std::thread::id> caller_{};   // SoleCaller's holder
  std::atomic<bool> callerClashed_{false};  // a call was refused while the holder held it
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<TransportSet> transport_;
  PeerTable table_;
  std::vector<int> worldRanks_;  // per rank, for a split: worldRank()
  // For a split: the routes dead in the parent when it was made (Transport::deadRoutes).
  std::vector<std::string> parentDeadRoutes_;
  NodeMap nodes_;
  std::shared_ptr<ScratchPool> scratch_ = std::make_shared<ScratchPool>();
  std::atomic<uint64_t> collSeq_{0};  // collective calls made (the next one's number)
  std::atomic<uint32_t> probes_{0};
  int creatorPid_ = 0;
  uint64_t forkGen_ = 0;
  CallCheck calls_;
  std::mutex mu_;
  // Held by abort/failWith while they use the transport, and by shutdown while it frees it.
  std::recursive_mutex teardownMu_;
  // Per-peer point-to-point sequence numbers (atomic: callers on several threads).
  std::unique_ptr<std::atomic<uint64_t>[]> sendSeq_, recvSeq_;
  Status asyncError_;
  std::atomic<bool> failed_{false};
  std::unique_ptr<FastBoxes> fast_;
  std::string lastError_;
  std::atomic<int> inflight_{0};
  std::atomic<int> queued_{0};
  bool shutDown_ = false;
  bool oversubscribed_ = false;
};

}  // namespace braid
