// braidGroupStart/End: calls made in between are built at once (so their message tags follow
// call order) but run only at the outermost braidGroupEnd, fused into one task per stream so
// that all their steps progress together (a ring of sends and receives cannot deadlock).
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "src/core/api_guard.h"
#include "src/core/comm.h"
#include "src/core/handles.h"
#include "src/engine/schedule.h"

namespace braid {
namespace {

struct Pending {
  std::shared_ptr<StreamQueue> stream;
  Task task;
};

struct PendingInit {
  braidComm_t* out;
  std::function<Status(std::shared_ptr<Comm>*)> init;
};

struct GroupState {
  int depth = 0;
  std::vector<Pending> pending;
  std::vector<PendingInit> inits;  // communicators to make at the end (groupDeferInit)
  Status error;                    // the first call of the group that was refused
  bool abandoned = false;          // or braidGroupAbandon's reason, in `error`, came first
  // A thread that ends with its group open: its calls took their numbers and never run, so
  // every later call on their communicators would wait for the peers' matching ones until
  // BRAID_TIMEOUT_MS. Those communicators fail instead, the peers told why.
  ~GroupState() {
    for (auto& p : pending) {
      for (auto& s : p.task.schedules) {
        s->comm()->failWith(invalidUsage(
            fmt::format("rank {}: a thread ended with a group open (braidGroupStart without its "
                        "braidGroupEnd): its calls never ran",
                        s->comm()->rank())));
      }
    }
  }
};

thread_local GroupState tlsGroup;

}  // namespace

bool groupOpen() { return tlsGroup.depth > 0; }

void groupNoteError(const Status& s) {
  if (groupOpen() && !s.isOk() && tlsGroup.error.isOk()) tlsGroup.error = s;
}

void groupDeferInit(braidComm_t* out, std::function<Status(std::shared_ptr<Comm>*)> init) {
  tlsGroup.inits.push_back(PendingInit{out, std::move(init)});
}

namespace {

// The group's communicator inits, all at once (each waits for the other ranks of its
// communicator, which may be the other inits here), each setting its handle; the first
// failure is returned (the communicators that were made are kept, their handles set).
Status runInits(std::vector<PendingInit>& inits) {
  if (inits.empty()) return Status::ok();
  std::vector<Status> results(inits.size());
  std::vector<std::shared_ptr<Comm>> made(inits.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < inits.size(); ++i) {
    try {
      threads.emplace_back(
          [&, i] { results[i] = statusOf([&] { return inits[i].init(&made[i]); }); });
    } catch (const std::system_error& e) {
      results[i] =
          systemError(fmt::format("braidGroupEnd: cannot start a thread for the "
                                  "init of communicator {} of the group: {}",
                                  i + 1, e.what()));
    }
  }
  results[0] = statusOf([&] { return inits[0].init(&made[0]); });
  for (auto& t : threads) t.join();
  Status first;
  for (size_t i = 0; i < inits.size(); ++i) {
    if (made[i] && results[i].isOk()) *inits[i].out = makeCommHandle(std::move(made[i]));
    if (!results[i].isOk() && first.isOk()) first = results[i];
  }
  return first;
}

}  // namespace

Status submit(Task task, const std::shared_ptr<StreamQueue>& stream) {
  if (groupOpen()) {
    for (auto& p : tlsGroup.pending) {
      if (p.stream == stream) {
        for (auto& s : task.schedules) p.task.schedules.push_back(std::move(s));
        return Status::ok();
      }
    }
    tlsGroup.pending.push_back(Pending{stream, std::move(task)});
    return Status::ok();
  }
  if (stream) {
    stream->enqueue(std::move(task));
    return Status::ok();
  }
  return runTask(task);
}

}  // namespace braid

extern "C" {

braidResult_t braidGroupStart(void) {
  ++braid::tlsGroup.depth;
  return braidSuccess;
}

braidResult_t braidGroupAbandon(const char* why) {
  if (!braid::groupOpen()) {
    return braid::report(braid::invalidUsage("braidGroupAbandon outside a group"));
  }
  if (braid::tlsGroup.error.isOk()) {
    braid::tlsGroup.error = braid::invalidUsage(why ? why : "(no reason given)");
    braid::tlsGroup.abandoned = true;
  }
  return braidSuccess;
}

braidResult_t braidGroupEnd(void) {
  if (braid::tlsGroup.depth == 0) {
    return braid::report(braid::invalidUsage("braidGroupEnd without a matching braidGroupStart"));
  }
  if (--braid::tlsGroup.depth > 0) return braidSuccess;
  std::vector<braid::PendingInit> inits;
  inits.swap(braid::tlsGroup.inits);
  std::vector<braid::Pending> pending;
  pending.swap(braid::tlsGroup.pending);
  braid::Status refused = std::move(braid::tlsGroup.error);
  const bool abandoned = std::exchange(braid::tlsGroup.abandoned, false);
  braid::tlsGroup.error = braid::Status::ok();
  // Each communicator with collectives in the group has this thread as its one caller until
  // the group has run (or been queued on its streams).
  std::vector<std::unique_ptr<braid::Comm::SoleCaller>> sole;
  std::vector<braid::Comm*> comms;
  for (auto& p : pending) {
    for (auto& s : p.task.schedules) {
      const std::shared_ptr<braid::Comm>& c = s->commPtr();
      if ((s->tagBase() & braid::kP2pBit) != 0) continue;
      if (std::find(comms.begin(), comms.end(), c.get()) != comms.end()) continue;
      comms.push_back(c.get());
      sole.push_back(std::make_unique<braid::Comm::SoleCaller>(c, "braidGroupEnd"));
      if (!sole.back()->status().isOk() && refused.isOk()) refused = sole.back()->status();
    }
  }
  if (!refused.isOk()) {
    // Its communicator inits do not run either (their handles stay NULL: nothing to destroy).
    // The group cannot run as written, and the peers expect its messages: nothing of it runs,
    // and each communicator with calls in it fails (its peers hear why at once instead of
    // waiting for the timeout).
    const braid::Status why(
        refused.code(),
        fmt::format("braidGroupEnd: nothing of the group ran, as {}: {}",
                    abandoned ? "the program abandoned it" : "a call in it was refused",
                    refused.message()));
    for (auto& p : pending) {
      for (auto& s : p.task.schedules) {
        s->comm()->failWith(braid::Status(
            refused.code(), fmt::format("rank {}: {}", s->comm()->rank(), why.message())));
      }
    }
    return braid::report(why);
  }
  // The streams' tasks are queued first: the NULL stream's runs here and now, to its end, and
  // its steps may wait for theirs (a receive here, its send on a stream).
  std::stable_partition(pending.begin(), pending.end(),
                        [](const braid::Pending& p) { return p.stream != nullptr; });
  braid::Status first = braid::runInits(inits);
  for (auto& p : pending) {
    braid::Status s = braid::submit(std::move(p.task), p.stream);
    if (!s.isOk() && first.isOk()) first = s;
  }
  for (auto& so : sole) first = so->finish(std::move(first));
  return braid::report(first);
}

}  // extern "C"
