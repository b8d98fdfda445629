// braidGroupStart/End: calls made in between are built at once (so their message tags follow
// call order) but run only at the outermost braidGroupEnd, fused into one task per stream so
// that all their steps progress together (a ring of sends and receives cannot deadlock).
#include <vector>

#include "src/core/handles.h"

namespace braid {
namespace {

struct Pending {
  std::shared_ptr<StreamQueue> stream;
  Task task;
};

struct GroupState {
  int depth = 0;
  std::vector<Pending> pending;
};

thread_local GroupState tlsGroup;

}  // namespace

bool groupOpen() { return tlsGroup.depth > 0; }

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

braidResult_t braidGroupEnd(void) {
  if (braid::tlsGroup.depth == 0) {
    return braid::report(braid::invalidUsage("braidGroupEnd without a matching braidGroupStart"));
  }
  if (--braid::tlsGroup.depth > 0) return braidSuccess;
  std::vector<braid::Pending> pending;
  pending.swap(braid::tlsGroup.pending);
  braid::Status first;
  for (auto& p : pending) {
    braid::Status s = braid::submit(std::move(p.task), p.stream);
    if (!s.isOk() && first.isOk()) first = s;
  }
  return braid::report(first);
}

}  // extern "C"
