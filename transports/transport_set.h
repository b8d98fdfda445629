// The transports of one communicator behind the one Transport interface: every allowed,
// usable transport (BRAID_TRANSPORTS) is opened, and each peer is routed to the most local
// one that reaches it: a node-local transport (shm) for ranks of this rank's node, the first
// general one (tcp) for the others. Counts what each transport carried.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transports/transport.h"

namespace braid {

// Per transport: messages and bytes posted through it by this rank.
struct TransportCounters {
  std::string name;
  uint64_t sends = 0, recvs = 0, sentBytes = 0, recvBytes = 0;
};

class TransportSet : public Transport {
 public:
  // Opens every transport of ctx.cfg->transports that this machine can run.
  static Status open(const TransportContext& ctx, std::unique_ptr<TransportSet>* out);
  ~TransportSet() override;

  const char* name() const override { return name_.c_str(); }
  // Every member's address, "name=address" records separated by '\x1e'.
  std::string localAddress() const override;
  Status setRankInfo(int rank, int nranks) override;
  // peers[r].address is rank r's localAddress() of the set; every rank but this one
  // (serve) is routed, same-node ones (sameNode) to a node-local transport when allowed.
  Status connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) override;
  void post(NetRequest* r) override;
  void abort(const Status& reason) override;
  Status close(Deadline deadline) override;
  std::string peerName(int rank) const override;
  void pathStats(std::vector<PathStatsRow>* out) const override;
  void deadRoutes(std::vector<std::string>* out) const override;
  // One handle for every member's registration (a token for their handles), or nullptr.
  Status registerBuffer(void* buf, size_t size, void** handle) override;
  void deregisterBuffer(void* handle) override;
  // deregisterBuffer of a handle this set returned and has not released yet; any other handle
  // (never returned, released already) is refused and changes nothing.
  Status release(void* handle);
  bool fastLink(int rank, FastLink* link, size_t* capacity) const override;
  std::string healthNote() const override;

  // The transport that carries traffic with `rank` (after connectAll).
  const char* routeName(int rank) const;
  std::vector<TransportCounters> counters() const;
  // Bytes this rank posted to send to `rank` (any transport).
  uint64_t sentTo(int rank) const;

 private:
  struct Member {
    std::unique_ptr<Transport> t;
    bool nodeLocal = false;
    std::atomic<uint64_t> sends{0}, recvs{0}, sentBytes{0}, recvBytes{0};
  };
  TransportSet() = default;

  std::vector<std::unique_ptr<Member>> members_;
  std::vector<int> route_;                           // per rank: index into members_ (-1: self)
  std::unique_ptr<std::atomic<uint64_t>[]> sentTo_;  // per rank
  std::string name_;
  std::mutex handlesMu_;
  std::map<void*, std::vector<void*>> handles_;  // registerBuffer's: the members' handles
  uintptr_t nextHandle_ = 1;
};

}  // namespace braid
