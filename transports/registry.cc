#include <fmt/format.h>

#include <mutex>

#include "transports/ib/ib_transport.h"
#include "transports/shm/shm_transport.h"
#include "transports/tcp/tcp_transport.h"
#include "transports/transport.h"

namespace braid {
namespace {

struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<TransportFactory>> factories;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    reg->factories.push_back(makeShmTransportFactory());
    reg->factories.push_back(makeIbTransportFactory());
    reg->factories.push_back(makeTcpTransportFactory());
    return reg;
  }();
  return *r;
}

}  // namespace

void reportEarly(const TransportContext& ctx, int peer, uint64_t tag) {
  if (ctx.onEarlyMessage) ctx.onEarlyMessage(peer, tag);
}

Status sizeMismatch(const std::string& peer, uint64_t tag, size_t mine, size_t theirs,
                    bool sending) {
  return invalidUsage(fmt::format(
      "mismatched message sizes with {} (tag {:#x}): this rank {} {} bytes, the peer {} {} "
      "bytes; every rank must pass matching counts",
      peer, tag, sending ? "sends" : "expects", mine, sending ? "expects" : "sends", theirs));
}

void registerTransport(std::unique_ptr<TransportFactory> factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.factories.push_back(std::move(factory));
}

TransportFactory* findTransport(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (auto& f : r.factories) {
    if (name == f->name()) return f.get();
  }
  return nullptr;
}

std::vector<std::string> transportNames() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (auto& f : r.factories) names.emplace_back(f->name());
  return names;
}

}  // namespace braid
