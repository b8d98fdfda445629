#include "transports/transport_set.h"

#include <fmt/format.h>

#include <algorithm>

#include "src/core/log.h"

namespace braid {
namespace {
constexpr char kSep = '\x1e';
}  // namespace

Status TransportSet::open(const TransportContext& ctx, std::unique_ptr<TransportSet>* out) {
  std::unique_ptr<TransportSet> set(new TransportSet());
  std::string unusable;
  std::vector<TransportFactory*> chosen;
  for (const std::string& name : splitList(ctx.cfg->transports)) {
    TransportFactory* f = findTransport(name);
    if (f == nullptr) {
      std::string names;
      for (auto& n : transportNames()) names += (names.empty() ? "" : ", ") + n;
      return invalidArgument(
          fmt::format("BRAID_TRANSPORTS: '{}' is not a known transport (have: {})", name, names));
    }
    if (std::find(chosen.begin(), chosen.end(), f) != chosen.end()) continue;
    if (!f->usable(*ctx.cfg)) {
      std::string why = f->unusableReason(*ctx.cfg);
      unusable +=
          fmt::format("{}{}{}{}", unusable.empty() ? "" : "; ", name, why.empty() ? "" : ": ", why);
      continue;
    }
    chosen.push_back(f);
  }
  if (chosen.empty()) {
    return systemError(fmt::format("BRAID_TRANSPORTS='{}': no usable transport on this machine{}",
                                   ctx.cfg->transports,
                                   unusable.empty() ? "" : " (unusable: " + unusable + ")"));
  }
  TransportSet* raw = set.get();
  for (TransportFactory* f : chosen) {
    auto m = std::make_unique<Member>();
    m->nodeLocal = f->nodeLocal();
    TransportContext c = ctx;
    Member* self = m.get();
    // One member failing fails the communicator: the others fail their requests too.
    c.onFatal = [raw, self, fatal = ctx.onFatal](const Status& s) {
      if (fatal) fatal(s);
      for (auto& other : raw->members_) {
        if (other.get() != self) other->t->abort(s);
      }
    };
    BRAID_TRY(f->open(c, &m->t));
    if (!set->name_.empty()) set->name_ += '+';
    set->name_ += f->name();
    set->members_.push_back(std::move(m));
  }
  *out = std::move(set);
  return Status::ok();
}

TransportSet::~TransportSet() = default;

std::string TransportSet::localAddress() const {
  std::string out;
  for (const auto& m : members_) {
    if (!out.empty()) out += kSep;
    out += fmt::format("{}={}", m->t->name(), m->t->localAddress());
  }
  return out;
}

Status TransportSet::setRankInfo(int rank, int nranks) {
  for (auto& m : members_) BRAID_TRY(m->t->setRankInfo(rank, nranks));
  return Status::ok();
}

Status TransportSet::connectAll(const std::vector<PeerInfo>& peers, Deadline deadline) {
  const int n = static_cast<int>(peers.size());
  route_.assign(n, -1);
  sentTo_ = std::make_unique<std::atomic<uint64_t>[]>(n);
  std::vector<std::vector<PeerInfo>> per(members_.size(), std::vector<PeerInfo>(n));
  for (int r = 0; r < n; ++r) {
    // The peer's records: name=address per transport it opened.
    std::vector<std::pair<std::string, std::string>> recs;
    for (const std::string& rec : splitList(peers[r].address, kSep)) {
      size_t eq = rec.find('=');
      if (eq == std::string::npos) {
        return remoteError(fmt::format("rank {} sent a malformed transport address", r));
      }
      recs.emplace_back(rec.substr(0, eq), rec.substr(eq + 1));
    }
    const bool local = peers[r].sameNode;
    for (size_t i = 0; i < members_.size(); ++i) {
      per[i][r].host = peers[r].host;
      per[i][r].sameNode = local;
      for (auto& [name, addr] : recs) {
        if (name == members_[i]->t->name()) per[i][r].address = addr;
      }
    }
    if (!peers[r].serve) continue;  // this rank
    // Most local first: a node-local transport for a same-node peer, else the first general
    // one; both sides compute the same choice from the same facts.
    for (int pass = local ? 0 : 1; pass < 2 && route_[r] < 0; ++pass) {
      for (size_t i = 0; i < members_.size() && route_[r] < 0; ++i) {
        if (members_[i]->nodeLocal == (pass == 0) && !per[i][r].address.empty()) {
          route_[r] = static_cast<int>(i);
        }
      }
    }
    if (route_[r] < 0) {
      return invalidArgument(fmt::format(
          "BRAID_TRANSPORTS='{}' has no transport that reaches rank {} ({}{}): shared memory "
          "only connects ranks of one node; allow tcp",
          name_, r, peers[r].host, local ? ", same node" : ", another node"));
    }
    per[route_[r]][r].serve = true;
  }
  for (size_t i = 0; i < members_.size(); ++i) {
    BRAID_TRY(members_[i]->t->connectAll(per[i], deadline));
  }
  return Status::ok();
}

void TransportSet::post(NetRequest* r) {
  int idx = r->peer >= 0 && r->peer < static_cast<int>(route_.size()) ? route_[r->peer] : -1;
  if (idx < 0) {
    return completeRequest(r, internalError(fmt::format("no transport routes rank {}", r->peer)));
  }
  Member& m = *members_[idx];
  if (r->kind == NetRequest::Kind::kSend) {
    m.sends.fetch_add(1, std::memory_order_relaxed);
    m.sentBytes.fetch_add(r->bytes, std::memory_order_relaxed);
    sentTo_[r->peer].fetch_add(r->bytes, std::memory_order_relaxed);
  } else {
    m.recvs.fetch_add(1, std::memory_order_relaxed);
    m.recvBytes.fetch_add(r->bytes, std::memory_order_relaxed);
  }
  m.t->post(r);
}

void TransportSet::abort(const Status& reason) {
  for (auto& m : members_) m->t->abort(reason);
}

Status TransportSet::close(Deadline deadline) {
  Status first;
  for (auto& m : members_) {
    Status s = m->t->close(deadline);
    if (first.isOk()) first = s;
  }
  return first;
}

std::string TransportSet::peerName(int rank) const {
  int idx = rank >= 0 && rank < static_cast<int>(route_.size()) ? route_[rank] : -1;
  return members_[idx < 0 ? 0 : idx]->t->peerName(rank);
}

std::string TransportSet::healthNote() const {
  std::string out;
  for (const auto& m : members_) out += m->t->healthNote();
  return out;
}

Status TransportSet::registerBuffer(void* buf, size_t size, void** handle) {
  std::vector<void*> handles(members_.size(), nullptr);
  bool any = false;
  for (size_t i = 0; i < members_.size(); ++i) {
    Status s = members_[i]->t->registerBuffer(buf, size, &handles[i]);
    if (!s.isOk()) {
      for (size_t j = 0; j < i; ++j) members_[j]->t->deregisterBuffer(handles[j]);
      return s;
    }
    any = any || handles[i] != nullptr;
  }
  *handle = nullptr;
  if (!any) return Status::ok();
  // The handle is a number never given out again (not an address, which a later registration
  // could get back): a second deregistration of it is always refused.
  std::lock_guard<std::mutex> lock(handlesMu_);
  *handle = reinterpret_cast<void*>(nextHandle_++ << 4);
  handles_.emplace(*handle, std::move(handles));
  return Status::ok();
}

Status TransportSet::release(void* handle) {
  if (handle == nullptr) return Status::ok();
  std::vector<void*> handles;
  {
    std::lock_guard<std::mutex> lock(handlesMu_);
    auto it = handles_.find(handle);
    if (it == handles_.end()) {
      return invalidArgument(fmt::format(
          "handle {} is not one braidCommRegister returned on this communicator, or it was "
          "deregistered already",
          handle));
    }
    handles = std::move(it->second);
    handles_.erase(it);
  }
  for (size_t i = 0; i < members_.size() && i < handles.size(); ++i) {
    members_[i]->t->deregisterBuffer(handles[i]);
  }
  return Status::ok();
}

void TransportSet::deregisterBuffer(void* handle) { (void)release(handle); }

void TransportSet::pathStats(std::vector<PathStatsRow>* out) const {
  for (const auto& m : members_) m->t->pathStats(out);
}

void TransportSet::deadRoutes(std::vector<std::string>* out) const {
  for (const auto& m : members_) m->t->deadRoutes(out);
}

bool TransportSet::fastLink(int rank, FastLink* link, size_t* capacity) const {
  int idx = rank >= 0 && rank < static_cast<int>(route_.size()) ? route_[rank] : -1;
  return idx >= 0 && members_[idx]->t->fastLink(rank, link, capacity);
}

const char* TransportSet::routeName(int rank) const {
  int idx = rank >= 0 && rank < static_cast<int>(route_.size()) ? route_[rank] : -1;
  return idx < 0 ? "self" : members_[idx]->t->name();
}

uint64_t TransportSet::sentTo(int rank) const {
  return rank >= 0 && rank < static_cast<int>(route_.size()) ? sentTo_[rank].load() : 0;
}

std::vector<TransportCounters> TransportSet::counters() const {
  std::vector<TransportCounters> out;
  for (const auto& m : members_) {
    out.push_back(
        {m->t->name(), m->sends.load(), m->recvs.load(), m->sentBytes.load(), m->recvBytes.load()});
  }
  return out;
}

}  // namespace braid
