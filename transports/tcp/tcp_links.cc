// Link state (rtnetlink) and path notices: a NIC of this rank that loses its link takes its
// paths down at once (no waiting for the path timeout), and a path that dies here is reported
// to the peer over a surviving path, so the peer re-sends at once too (its own NIC may be up:
// a cut elsewhere gives it no signal). A NIC whose link comes back has its dead paths probed
// at once: by this rank where it is the higher of the pair, else by the peer, told so.
#include <fmt/format.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "src/core/log.h"
#include "transports/tcp/tcp_transport.h"

namespace braid::tcp {

class Transport::LinkWatch : public Reactor::Handler {
 public:
  explicit LinkWatch(Transport* t)
      : t_(t), fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE)) {}
  Status open() {
    if (!fd_.valid()) return systemError(fmt::format("netlink socket: {}", std::strerror(errno)));
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_LINK;
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      return systemError(fmt::format("netlink bind: {}", std::strerror(errno)));
    }
    return Status::ok();
  }
  int fd() const { return fd_.get(); }
  void onEvents(uint32_t) override {
    alignas(nlmsghdr) char buf[16384];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) return;  // EAGAIN, or ENOBUFS (overrun: the next change comes anyway)
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(len));
           h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) continue;
        auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
        char name[IF_NAMESIZE] = {};
        int alen = static_cast<int>(IFLA_PAYLOAD(h));
        for (auto* a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
          if (a->rta_type == IFLA_IFNAME) {
            std::strncpy(name, static_cast<const char*>(RTA_DATA(a)), IF_NAMESIZE - 1);
          }
        }
        const bool up = h->nlmsg_type == RTM_NEWLINK && (ifi->ifi_flags & IFF_UP) &&
                        (ifi->ifi_flags & IFF_RUNNING);
        if (name[0] == '\0') continue;
        if (up) {
          t_->onLinkUp(name);
        } else {
          t_->onLinkDown(name);
        }
      }
    }
  }

 private:
  Transport* t_;
  Fd fd_;
};

Status Transport::startLinkWatch() {
  auto w = std::make_unique<LinkWatch>(this);
  if (Status s = w->open(); !s.isOk()) {
    LOG_INFO(kPath, "no link-state watch ({}): dead links are found by the path timeout",
             s.message());
    return Status::ok();
  }
  BRAID_TRY(ctx_.reactor->add(w->fd(), EPOLLIN, w.get()));
  linkWatch_ = std::move(w);
  return Status::ok();
}

void Transport::onLinkDown(const std::string& ifname) {
  if (failed() || stopping_) return;
  for (Peer& p : peers_) {
    for (size_t k = 0; k < p.paths.size(); ++k) {
      Path& pa = *p.paths[k];
      if (nics_[pa.localNic].name != ifname || !pa.sock || !pa.sock->alive()) continue;
      onPathDown(&p, static_cast<int>(k), fmt::format("interface {} lost its link", ifname), false);
      if (failed()) return;
    }
  }
}

void Transport::onLinkUp(const std::string& ifname) {
  if (failed() || stopping_) return;
  for (Peer& p : peers_) {
    for (size_t k = 0; k < p.paths.size(); ++k) {
      Path& pa = *p.paths[k];
      if (nics_[pa.localNic].name != ifname || (pa.sock && pa.sock->alive())) continue;
      if (ctx_.rank > p.rank) {
        probeNow(&p, static_cast<int>(k));
      } else {
        notifyPath(&p, static_cast<int>(k), FrameType::kPathUp);
      }
    }
  }
}

void Transport::onPathUpNotice(Peer* p, uint64_t path) {
  if (path >= p->paths.size() || ctx_.rank < p->rank || failed() || stopping_) return;
  Path& pa = *p->paths[path];
  if (!pa.sock || !pa.sock->alive()) probeNow(p, static_cast<int>(path));
}

void Transport::notifyPathDown(Peer* p, int path, uint32_t conn) {
  notifyPath(p, path, FrameType::kPathDown, conn);
}

void Transport::notifyPath(Peer* p, int path, FrameType type, uint64_t conn) {
  Socket* s = p->liveSocket();
  if (s == nullptr || stopping_) return;
  FrameHeader h;
  h.type = static_cast<uint8_t>(type);
  h.tag = static_cast<uint64_t>(path);
  h.offset = conn;
  s->enqueueUrgent(h, {});
  s->flush();
}

void Transport::onPathDownNotice(Peer* p, uint64_t path, uint64_t conn) {
  if (path >= p->paths.size()) return;
  Path& pa = *p->paths[path];
  if (!pa.sock || !pa.sock->alive()) return;
  // The notice waited behind data on a loaded path while this end saw the close itself and
  // the path was connected anew: it names the old connection, not this one.
  if (conn != 0 && pa.sock->connId() != 0 && conn != pa.sock->connId()) {
    LOG_DEBUG(kPath, "{}: a late notice about an earlier connection of {} ignored",
              peerName(p->rank), pathName(p, static_cast<int>(path)));
    return;
  }
  onPathDown(p, static_cast<int>(path), "the peer reports it dead", false, /*notify=*/false);
}

}  // namespace braid::tcp
