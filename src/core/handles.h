// The C handles behind braidComm_t / braidStream_t, and the table of live handles that lets
// every call detect a destroyed or foreign handle instead of crashing.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "braid/braid.h"
#include "src/core/comm.h"
#include "src/core/status.h"
#include "src/core/stream.h"

struct braidComm {
  std::shared_ptr<braid::Comm> impl;
};
struct braidStream {
  std::shared_ptr<braid::StreamQueue> impl;
};

namespace braid {

// How many fork()s this process descends from (a communicator belongs to one generation).
uint64_t forkGeneration();
void registerHandle(const void* h);
bool unregisterHandle(const void* h);
// Frees an unregistered handle's contents; its memory is reused only after many others.
void retireHandle(braidComm* h);
void retireHandle(braidStream* h);
bool handleAlive(const void* h);

Status lookupComm(braidComm_t c, std::shared_ptr<Comm>* out);
Status lookupStream(braidStream_t s, std::shared_ptr<StreamQueue>* out);  // NULL stream -> nullptr

// Records the error (on the communicator if any, and for this thread) and returns its code.
braidResult_t report(const Status& s, const std::shared_ptr<Comm>& comm = nullptr);
const char* threadLastError();

// Runs a ready task on the stream (or now, when stream is NULL), or adds it to the open group.
Status submit(Task task, const std::shared_ptr<StreamQueue>& stream);
bool groupOpen();
// A call made inside this thread's open group was refused (or failed): the outermost
// braidGroupEnd then runs nothing of the group and returns this error, as NCCL's does.
void groupNoteError(const Status& s);
// A communicator's init made inside this thread's open group (NCCL's way of making several
// ranks' communicators from one thread): it runs at the outermost braidGroupEnd, every such
// init of the group on its own thread at once, and *out is set then.
void groupDeferInit(braidComm_t* out, std::function<Status(std::shared_ptr<Comm>*)> init);

}  // namespace braid
