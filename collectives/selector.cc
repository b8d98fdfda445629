// Chooses an algorithm per call from the message size and rank count; BRAID_ALGO overrides
// ("ring" for every collective that has one, or "allreduce=rd,broadcast=chain,...").
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <string>
#include <vector>

#include "collectives/algorithms.h"
#include "collectives/cost_model.h"
#include "src/core/comm.h"

namespace braid {

const char* collName(CollKind k) {
  switch (k) {
    case CollKind::kAllReduce:
      return "allreduce";
    case CollKind::kBroadcast:
      return "broadcast";
    case CollKind::kReduce:
      return "reduce";
    case CollKind::kAllGather:
      return "allgather";
    case CollKind::kReduceScatter:
      return "reducescatter";
    case CollKind::kAllToAll:
      return "alltoall";
    case CollKind::kAllToAllv:
      return "alltoallv";
    case CollKind::kSend:
      return "send";
    case CollKind::kRecv:
      return "recv";
    case CollKind::kBarrier:
      return "barrier";
  }
  return "?";
}

bool collReduces(CollKind k) {
  return k == CollKind::kAllReduce || k == CollKind::kReduce || k == CollKind::kReduceScatter;
}

bool collRooted(CollKind k) { return k == CollKind::kBroadcast || k == CollKind::kReduce; }

size_t chunksFor(size_t maxElems, size_t elemSize, const Schedule* s) {
  size_t chunkElems =
      std::max<size_t>(1, chunkBytes(s->comm()->config(), s->comm()->nodes()) / elemSize);
  return std::max<size_t>(1, (maxElems + chunkElems - 1) / chunkElems);
}

namespace {

using Builder = void (*)(const CollArgs&, Schedule*);

struct Algo {
  CollKind kind;
  const char* name;
  Builder build;
};

constexpr Algo kAlgos[] = {
    {CollKind::kAllReduce, "ring", allReduceRing},
    {CollKind::kAllReduce, "rd", allReduceRecursiveDoubling},
    {CollKind::kAllReduce, "rhd", allReduceHalvingDoubling},
    {CollKind::kAllReduce, "hier", allReduceHierarchical},
    {CollKind::kBroadcast, "binomial", broadcastBinomial},
    {CollKind::kBroadcast, "chain", broadcastChain},
    {CollKind::kBroadcast, "hier", broadcastHierarchical},
    {CollKind::kReduce, "binomial", reduceBinomial},
    {CollKind::kReduce, "chain", reduceChain},
    {CollKind::kReduce, "hier", reduceHierarchical},
    {CollKind::kAllGather, "ring", allGatherRing},
    {CollKind::kAllGather, "bruck", allGatherBruck},
    {CollKind::kAllGather, "hier", allGatherHierarchical},
    {CollKind::kReduceScatter, "ring", reduceScatterRing},
    {CollKind::kReduceScatter, "hier", reduceScatterHierarchical},
    {CollKind::kAllToAll, "pairwise", allToAllPairwise},
    {CollKind::kAllToAll, "rail", allToAllRail},
    {CollKind::kAllToAllv, "pairwise", allToAllPairwise},
    {CollKind::kBarrier, "dissemination", barrierDissemination},
    {CollKind::kSend, "p2p", pointToPoint},
    {CollKind::kRecv, "p2p", pointToPoint},
};

// One entry of BRAID_ALGO: "coll=name", or a bare "name" (coll empty) for every collective
// that has an algorithm of that name.
struct AlgoEntry {
  std::string coll, name;
};
AlgoEntry parseAlgoEntry(const std::string& item) {
  const size_t eq = item.find('=');
  if (eq == std::string::npos) return {"", item};
  return {item.substr(0, eq), item.substr(eq + 1)};
}

// The algorithm BRAID_ALGO asks for this collective ("" when none).
Status forcedAlgo(const std::string& spec, CollKind kind, std::string* out) {
  out->clear();
  for (const std::string& item : splitList(spec)) {
    const AlgoEntry e = parseAlgoEntry(item);
    if (e.coll.empty()) {
      for (const Algo& a : kAlgos) {
        if (a.kind == kind && e.name == a.name) *out = e.name;
      }
      continue;
    }
    if (e.coll == collName(kind)) {
      *out = e.name;
      for (const Algo& a : kAlgos) {
        if (a.kind == kind && *out == a.name) return Status::ok();
      }
      return invalidArgument(
          fmt::format("BRAID_ALGO: '{}' is not an algorithm of {}", *out, collName(kind)));
    }
  }
  return Status::ok();
}

}  // namespace

bool algorithmForced(const Config& cfg, CollKind kind) {
  std::string name;
  return forcedAlgo(cfg.algo, kind, &name).isOk() && !name.empty();
}

Status checkAlgoSpec(const std::string& spec) {
  // The distinct names `pick` returns over kAlgos, in table order.
  auto distinct = [](auto pick) {
    std::vector<std::string> v;
    for (const Algo& a : kAlgos) {
      std::string n = pick(a);
      if (!n.empty() && std::find(v.begin(), v.end(), n) == v.end()) v.push_back(n);
    }
    return fmt::format("{}", fmt::join(v, ", "));
  };
  for (const std::string& item : splitList(spec)) {
    const AlgoEntry e = parseAlgoEntry(item);
    const std::string &coll = e.coll, &name = e.name;  // (lambdas below capture them)
    auto ofColl = [&](const Algo& a) { return coll.empty() || coll == collName(a.kind); };
    if (!std::any_of(std::begin(kAlgos), std::end(kAlgos), ofColl)) {
      return invalidArgument(
          fmt::format("BRAID_ALGO: '{}' names no collective (one of: {})", coll,
                      distinct([](const Algo& a) { return std::string(collName(a.kind)); })));
    }
    if (std::none_of(std::begin(kAlgos), std::end(kAlgos),
                     [&](const Algo& a) { return ofColl(a) && name == a.name; })) {
      return invalidArgument(fmt::format(
          "BRAID_ALGO: '{}' is not an algorithm of {} (known: {})", name,
          coll.empty() ? std::string("any collective") : coll,
          distinct([&](const Algo& a) { return ofColl(a) ? std::string(a.name) : ""; })));
    }
  }
  return Status::ok();
}

std::string forcedButNotApplicable(const Config& cfg, const NodeMap& nm) {
  if (hierarchicalShape(nm)) return {};
  std::vector<std::string> out;
  for (CollKind k : {CollKind::kAllReduce, CollKind::kBroadcast, CollKind::kReduce,
                     CollKind::kAllGather, CollKind::kReduceScatter, CollKind::kAllToAll}) {
    std::string name;
    if (!forcedAlgo(cfg.algo, k, &name).isOk()) continue;
    if (name == "hier" || name == "rail") out.push_back(fmt::format("{}={}", collName(k), name));
  }
  return fmt::format("{}", fmt::join(out, ", "));
}

Status buildCollective(const CollArgs& a, Schedule* s) {
  if (fastboxApplies(a, *s->comm())) {
    s->defer([a, call = fastboxNextCall(*s->comm())](Schedule* sched) {
      fastboxSchedule(a, call, sched);
    });
    return Status::ok();
  }
  const Config& cfg = s->comm()->config();
  std::string name;
  BRAID_TRY(forcedAlgo(cfg.algo, a.kind, &name));
  if (name.empty()) {
    const size_t bytes = a.count * dtypeSize(a.dt);
    // The cost model over this communicator's nodes and links (cost_model.h).
    const NodeMap& nm = s->comm()->nodes();
    if (const char* c = cheapest(predict(a.kind, cfg, costModel(cfg, nm), nm, bytes))) name = c;
  }
  for (const Algo& al : kAlgos) {
    if (al.kind == a.kind && (name.empty() || name == al.name)) {
      s->defer([a, build = al.build](Schedule* sched) { build(a, sched); });
      return Status::ok();
    }
  }
  return internalError(fmt::format("no algorithm for {}", collName(a.kind)));
}

}  // namespace braid
