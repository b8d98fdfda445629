// braidUniqueId = root address + 128-bit job secret, explicitly serialized into 128 bytes.
#pragma once

#include "braid/braid.h"
#include "src/bootstrap/auth.h"
#include "src/bootstrap/socket_util.h"

namespace braid {

struct UniqueIdData {
  SockAddr root;
  Secret secret{};
};

void encodeUniqueId(const UniqueIdData& d, braidUniqueId* out);
Status decodeUniqueId(const braidUniqueId& id, UniqueIdData* out);

}  // namespace braid
