// The Transport interface every transport implements (tcp now; shm, ib, cuda_ipc later), and
// the registry that finds them by name. Collectives never name a transport.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/bootstrap/auth.h"
#include "src/core/config.h"
#include "src/core/status.h"

namespace braid {

class Reactor;
struct NetRequest;
struct FastLink;

// Receives completions; called on the progress thread, must not block.
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  virtual void onComplete(NetRequest* r) = 0;
};

// One tagged point-to-point transfer. The poster owns it and keeps it (and its buffer) alive
// until the sink has been told it completed, successfully or not.
struct NetRequest {
  enum class Kind : uint8_t { kSend, kRecv };
  Kind kind = Kind::kSend;
  int peer = -1;
  uint64_t tag = 0;
  void* buf = nullptr;  // const for sends
  size_t bytes = 0;
  CompletionSink* sink = nullptr;
  size_t node = 0;  // the poster's bookkeeping (schedule node index)
  Status status;    // set before the sink is told
  // Transport-private progress counters.
  size_t progress = 0;
  size_t fragmentsLeft = 0;
};

struct TransportContext;
// Reports a message that arrived before its match (TransportContext::onEarlyMessage).
void reportEarly(const TransportContext& ctx, int peer, uint64_t tag);

// Sets the request's status and tells its sink (on the loop; the poster may free it after).
inline void completeRequest(NetRequest* r, Status s) {
  r->status = std::move(s);
  r->sink->onComplete(r);
}

// The error when two ranks disagree on a message's size (this rank sends or expects `mine`).
Status sizeMismatch(const std::string& peer, uint64_t tag, size_t mine, size_t theirs,
                    bool sending);

struct TransportContext {
  int rank = 0;
  int nranks = 0;
  const Config* cfg = nullptr;
  Secret secret{};
  uint64_t commTag = 0;
  Reactor* reactor = nullptr;
  // Called on the progress thread when the transport has failed as a whole (dead peer, abort
  // message from a peer); the communicator records it as its asynchronous error.
  std::function<void(const Status&)> onFatal;
  // Called on the progress thread for each message (or announcement of one: RTS, RTR) that
  // arrives before this rank posted its match, with the peer and tag (call_check.h).
  std::function<void(int peer, uint64_t tag)> onEarlyMessage;
  // The deadRoutes() of the communicator this one is split from (empty for others).
  std::vector<std::string> deadRoutes;
};

// What a transport learns of each rank at connect time (index = rank; its own entry unused).
struct PeerInfo {
  std::string address;  // the peer's localAddress() for this transport
  std::string host;     // host name, for messages
  bool serve = false;   // this transport carries the traffic with this peer
  // Same node and same real host as this rank: node-local transports (shm) may carry it.
  bool sameNode = false;
};

// One path of a multipath connection (braidCommGetPathStats).
struct PathStatsRow {
  int peer = -1, path = 0;
  std::string transport, local, remote, state;
  uint64_t bytesSent = 0, bytesReceived = 0, chunksSent = 0, chunksReceived = 0;
  uint64_t retransmits = 0, failures = 0, readmissions = 0, rehashes = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  // Opaque bytes the bootstrap gives every other rank (e.g. listening address).
  virtual std::string localAddress() const = 0;
  // Sets this rank's place once known (a split learns it after the listener exists).
  virtual Status setRankInfo(int rank, int nranks) = 0;
  // Connects to every peer it serves; blocking, bounded by the deadline. Every connection
  // proves knowledge of the job secret.
  virtual Status connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) = 0;
  // Any thread. Non-blocking; completion is reported through r->sink (possibly an error).
  virtual void post(NetRequest* r) = 0;
  // Any thread. Fails every pending and future request with `reason`, tells the peers, closes.
  virtual void abort(const Status& reason) = 0;
  // Graceful close at destroy: waits until what this rank sent has arrived (a send may return
  // once its data is copied), then tells the peers this rank leaves; bounded by the deadline.
  // An error when some of it may not have arrived (nothing acknowledged it by the deadline).
  virtual Status close(Deadline deadline) = 0;
  // close()'s phases: the wait for acknowledgements ends kCloseTailMs before the deadline
  // (still looking once when that has passed: a deadline the calls in flight used up, or a
  // transport closed after another), and the goodbyes after it get at least kCloseTailMs,
  // at most capMs.
  static constexpr int64_t kCloseTailMs = 250;
  static Deadline ackWaitEnd(Deadline d) {
    return std::max(d - std::chrono::milliseconds(kCloseTailMs), deadlineIn(20));
  }
  static Deadline tailEnd(Deadline d, int64_t capMs) {
    return std::min(std::max(d, deadlineIn(kCloseTailMs)), deadlineIn(capMs));
  }
  // close()'s error for chunks still unacknowledged ("3 chunk(s) to rank 1 (...)").
  // (failure: the communicator failed meanwhile, which dropped them.)
  static Status unackedAtClose(const std::string& what, int64_t timeoutMs,
                               const Status& failure = Status::ok()) {
    if (!failure.isOk()) {
      return Status(failure.code(), "closing: " + what +
                                        " not acknowledged when the "
                                        "communicator failed (" +
                                        failure.message() +
                                        "): what this rank sent there last may not have arrived");
    }
    return timeoutError("closing: " + what + " not acknowledged within BRAID_TIMEOUT_MS (" +
                        std::to_string(timeoutMs) +
                        " ms): what this rank sent there last may not have arrived");
  }
  // "rank 3 (host-b, 10.0.0.2:41000)" for error messages.
  virtual std::string peerName(int rank) const = 0;
  // Any thread: appends a row per path of a multipath transport (none for single-path ones).
  virtual void pathStats(std::vector<PathStatsRow>*) const {}
  // Any thread: appends the routes (a local NIC and a remote address, as the transport names
  // them) on which every path of this communicator is dead now. A communicator split from
  // this one starts its paths there dead, made later by the background probes, instead of
  // waiting seconds at its start for connections that cannot form (TransportContext).
  virtual void deadRoutes(std::vector<std::string>*) const {}
  // Any thread: registers memory for zero-copy transfers (RDMA transports); *handle stays
  // nullptr where the transport needs none. Deregistering nullptr does nothing.
  virtual Status registerBuffer(void* buf, size_t size, void** handle) {
    (void)buf;
    (void)size;
    *handle = nullptr;
    return Status::ok();
  }
  virtual void deregisterBuffer(void* handle) { (void)handle; }
  // After connectAll: the fast boxes shared with `rank` (shared-memory transports), or false.
  virtual bool fastLink(int rank, FastLink* link, size_t* capacity) const {
    (void)rank;
    (void)link;
    (void)capacity;
    return false;
  }
  // Peers this transport cannot reach right now, for error messages ("; rank 3 (...) is
  // unreachable ..."), or empty. Any thread.
  virtual std::string healthNote() const { return {}; }
};

class TransportFactory {
 public:
  virtual ~TransportFactory() = default;
  virtual const char* name() const = 0;
  // Whether this machine can run the transport at all (devices present, etc.).
  virtual bool usable(const Config& cfg) const = 0;
  // Why usable() is false, for braid-info and errors.
  virtual std::string unusableReason(const Config&) const { return {}; }
  // Reaches only ranks of the same node (shared memory); otherwise any rank.
  virtual bool nodeLocal() const { return false; }
  virtual Status open(const TransportContext& ctx, std::unique_ptr<Transport>* out) = 0;
};

// The factory of a transport that runs on every machine and opens by listening:
// T(ctx), then T::listen().
template <typename T>
class ListeningFactory : public TransportFactory {
 public:
  ListeningFactory(const char* name, bool nodeLocal) : name_(name), nodeLocal_(nodeLocal) {}
  const char* name() const override { return name_; }
  bool usable(const Config&) const override { return true; }
  bool nodeLocal() const override { return nodeLocal_; }
  Status open(const TransportContext& ctx, std::unique_ptr<Transport>* out) override {
    auto t = std::make_unique<T>(ctx);
    BRAID_TRY(t->listen());
    *out = std::move(t);
    return Status::ok();
  }

 private:
  const char* name_;
  bool nodeLocal_;
};

// The registry (the one piece of global state): built-ins are registered on first use.
void registerTransport(std::unique_ptr<TransportFactory> factory);
TransportFactory* findTransport(const std::string& name);
std::vector<std::string> transportNames();

}  // namespace braid
