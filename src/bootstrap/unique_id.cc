#include "src/bootstrap/unique_id.h"

#include <arpa/inet.h>

#include <cstring>

namespace braid {
namespace {
// Layout: magic[4] "BRD1" | family u8 (4 or 6) | pad u8 | port u16 (network order) |
//         addr[16] | secret[16] | zero padding.
constexpr char kMagic[4] = {'B', 'R', 'D', '1'};
}  // namespace

void encodeUniqueId(const UniqueIdData& d, braidUniqueId* out) {
  std::memset(out, 0, sizeof *out);
  auto* p = reinterpret_cast<uint8_t*>(out->internal);
  std::memcpy(p, kMagic, 4);
  uint16_t port = htons(static_cast<uint16_t>(d.root.port()));
  std::memcpy(p + 6, &port, 2);
  if (d.root.family() == AF_INET) {
    p[4] = 4;
    std::memcpy(p + 8, &reinterpret_cast<const sockaddr_in*>(&d.root.ss)->sin_addr, 4);
  } else {
    p[4] = 6;
    std::memcpy(p + 8, &reinterpret_cast<const sockaddr_in6*>(&d.root.ss)->sin6_addr, 16);
  }
  std::memcpy(p + 24, d.secret.data(), d.secret.size());
}

Status decodeUniqueId(const braidUniqueId& id, UniqueIdData* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(id.internal);
  if (std::memcmp(p, kMagic, 4) != 0 || (p[4] != 4 && p[4] != 6)) {
    return invalidArgument("the unique id is not one made by braidGetUniqueId (bad magic)");
  }
  UniqueIdData d;
  uint16_t port;
  std::memcpy(&port, p + 6, 2);
  if (p[4] == 4) {
    auto* a = reinterpret_cast<sockaddr_in*>(&d.root.ss);
    a->sin_family = AF_INET;
    std::memcpy(&a->sin_addr, p + 8, 4);
    a->sin_port = port;
    d.root.len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&d.root.ss);
    a->sin6_family = AF_INET6;
    std::memcpy(&a->sin6_addr, p + 8, 16);
    a->sin6_port = port;
    d.root.len = sizeof(sockaddr_in6);
  }
  std::memcpy(d.secret.data(), p + 24, d.secret.size());
  *out = d;
  return Status::ok();
}

}  // namespace braid
