// A schedule: the per-rank DAG of steps one collective call turns into. Collectives build it;
// the executor runs it (net steps through the communicator's transport, local steps on the
// calling/stream thread), starting every step as soon as the steps it depends on are done.
// This is where chunk pipelining comes from: chunk k of step s+1 waits only for chunk k of s.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "braid/braid.h"
#include "src/core/status.h"
#include "src/engine/scratch.h"

namespace braid {

class Comm;

// A step that completes by being polled (no transport request): the executor polls it on
// every pass of its wait loop (and every 100 µs while it sleeps, unless it is busy) until it
// says it is done.
class PollStep {
 public:
  virtual ~PollStep() = default;
  // Whether the step has finished; *err is set when it finished with an error.
  virtual bool poll(Status* err) = 0;
  // What it waits for, for a timeout's message.
  virtual std::string waitingFor() const = 0;
  // Whether the last poll() did work without finishing (a step that moves data itself, a
  // share at a time): the executor then keeps polling instead of going to sleep.
  virtual bool busy() const { return false; }
  // Steps of one lane (non-null) can only finish one after another, in laneOrder(): the
  // executor polls only the first pending one of each lane (fast-box calls of a communicator,
  // which run in call order: a group of thousands then costs one poll per pass, not thousands).
  virtual const void* lane() const { return nullptr; }
  virtual uint64_t laneOrder() const { return 0; }
};

using NodeId = int64_t;
constexpr NodeId kNoNode = -1;

struct Node {
  enum class Kind : uint8_t { kSend, kRecv, kReduce, kCopy, kAvg, kPoll };
  Kind kind = Kind::kCopy;
  int peer = -1;
  uint32_t slot = 0;  // net: distinguishes messages of one call between two ranks; poll: index
  void* dst = nullptr;
  const void* src = nullptr;
  const void* src2 = nullptr;
  size_t count = 0;  // bytes for send/recv/copy, elements for reduce/avg
  braidDataType_t dt = braidFloat32;
  braidRedOp_t op = braidSum;
  int nranks = 1;
  uint32_t deps = 0;
  std::vector<uint32_t> succ;
};

class Schedule {
 public:
  Schedule(std::shared_ptr<Comm> comm, std::string name, uint64_t tagBase)
      : comm_(std::move(comm)), name_(std::move(name)), tagBase_(tagBase) {
    nodes_.reserve(8);  // small calls: one allocation
  }

  using Deps = std::initializer_list<NodeId>;
  NodeId send(int peer, uint32_t slot, const void* buf, size_t bytes, Deps deps = {});
  NodeId recv(int peer, uint32_t slot, void* buf, size_t bytes, Deps deps = {});
  NodeId reduce(void* dst, const void* a, const void* b, size_t count, braidDataType_t dt,
                braidRedOp_t op, Deps deps = {});
  NodeId copy(void* dst, const void* src, size_t bytes, Deps deps = {});
  NodeId avg(void* buf, size_t count, braidDataType_t dt, int nranks, Deps deps = {});
  NodeId poll(std::unique_ptr<PollStep> step, Deps deps = {});
  PollStep* pollStep(uint32_t index) const { return pollSteps_[index].get(); }
  void addDep(NodeId before, NodeId after);

  // Defers building the steps until prepare() (called when the schedule starts running).
  void defer(std::function<void(Schedule*)> build) { deferred_ = std::move(build); }
  void prepare() {
    if (!deferred_) return;
    auto build = std::move(deferred_);
    deferred_ = nullptr;
    build(this);
  }

  // Scratch memory that lives as long as the schedule (from the communicator's pool).
  void* scratch(size_t bytes);

  Comm* comm() const { return comm_.get(); }
  const std::shared_ptr<Comm>& commPtr() const { return comm_; }
  const std::string& name() const { return name_; }
  uint64_t tag(uint32_t slot) const { return tagBase_ | slot; }
  uint64_t tagBase() const { return tagBase_; }
  std::vector<Node>& nodes() { return nodes_; }
  const std::vector<Node>& nodes() const { return nodes_; }

 private:
  NodeId add(Node n, Deps deps);

  std::shared_ptr<Comm> comm_;
  std::string name_;
  uint64_t tagBase_;
  std::vector<Node> nodes_;
  std::vector<ScratchBuffer> scratch_;
  std::vector<std::unique_ptr<PollStep>> pollSteps_;
  std::function<void(Schedule*)> deferred_;
};

}  // namespace braid
