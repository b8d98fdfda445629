#include "src/engine/schedule.h"

#include "src/core/comm.h"

namespace braid {

NodeId Schedule::add(Node n, Deps deps) {
  NodeId id = static_cast<NodeId>(nodes_.size());
  nodes_.push_back(std::move(n));
  for (NodeId d : deps) addDep(d, id);
  return id;
}

void Schedule::addDep(NodeId before, NodeId after) {
  if (before == kNoNode || after == kNoNode) return;
  nodes_[before].succ.push_back(static_cast<uint32_t>(after));
  nodes_[after].deps++;
}

NodeId Schedule::send(int peer, uint32_t slot, const void* buf, size_t bytes, Deps deps) {
  Node n;
  n.kind = Node::Kind::kSend;
  n.peer = peer;
  n.slot = slot;
  n.src = buf;
  n.count = bytes;
  return add(std::move(n), deps);
}

NodeId Schedule::recv(int peer, uint32_t slot, void* buf, size_t bytes, Deps deps) {
  Node n;
  n.kind = Node::Kind::kRecv;
  n.peer = peer;
  n.slot = slot;
  n.dst = buf;
  n.count = bytes;
  return add(std::move(n), deps);
}

NodeId Schedule::reduce(void* dst, const void* a, const void* b, size_t count, braidDataType_t dt,
                        braidRedOp_t op, Deps deps) {
  Node n;
  n.kind = Node::Kind::kReduce;
  n.dst = dst;
  n.src = a;
  n.src2 = b;
  n.count = count;
  n.dt = dt;
  n.op = op;
  return add(std::move(n), deps);
}

NodeId Schedule::copy(void* dst, const void* src, size_t bytes, Deps deps) {
  Node n;
  n.kind = Node::Kind::kCopy;
  n.dst = dst;
  n.src = src;
  n.count = bytes;
  return add(std::move(n), deps);
}

NodeId Schedule::avg(void* buf, size_t count, braidDataType_t dt, int nranks, Deps deps) {
  Node n;
  n.kind = Node::Kind::kAvg;
  n.dst = buf;
  n.count = count;
  n.dt = dt;
  n.nranks = nranks;
  return add(std::move(n), deps);
}

NodeId Schedule::poll(std::unique_ptr<PollStep> step, Deps deps) {
  Node n;
  n.kind = Node::Kind::kPoll;
  n.slot = static_cast<uint32_t>(pollSteps_.size());
  pollSteps_.push_back(std::move(step));
  return add(std::move(n), deps);
}

void* Schedule::scratch(size_t bytes) {
  scratch_.push_back(comm_->scratchPool()->get(bytes));
  return scratch_.back().data();
}

}  // namespace braid
