// Who a timed-out collective waits for. A rank stuck in its own code (or one that skipped a
// call) never times out: the ranks that time out are its partners and theirs, whose messages
// name only the peers they waited on directly ("rank 0 timed out waiting for ranks 1, 2, 4",
// each of which waited for rank 5). So, before failing, a rank whose collective timed out asks
// every peer how many collective calls it has made on this communicator; the peers' progress
// threads answer whatever their application threads are doing. The timeout's message (which
// its abort carries to every peer) then names the ranks that have not made the call, or says
// that every rank made it (data in transit is what is missing), or which peers did not answer.
//
// The messages are point-to-point tags that no call uses (bit 63 set, every sequence bit set):
// a query arrives before any receive (onEarlyMessage); the peer takes it and answers.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace braid {

class Reactor;
class Transport;

constexpr uint64_t kControlTagBits = ~uint64_t{0} << 24;  // p2p bit + all sequence bits
constexpr uint64_t kAnswerBit = uint64_t{1} << 23;        // low 23 bits: the probe's number
inline bool isControlTag(uint64_t tag) { return (tag & kControlTagBits) == kControlTagBits; }

// An answer's word: the collective calls the peer has made (bits 0..46) and, when it has
// made the queried call, that call's signature (bit 47 set, bits 48..63; call_check.h).
uint64_t laggardAnswer(uint64_t callsMade, const uint16_t* signature);

// Progress thread, from onEarlyMessage: a control message arrived from `peer`. A query (its
// word: the querier's call number) is taken and answered, on the loop, with answer(call), a
// laggardAnswer; anything else is left alone.
void answerLaggardQuery(Transport* t, Reactor* loop, int peer, uint64_t tag,
                        std::function<uint64_t(uint64_t call)> answer);

// Application thread, with the loop not held by it: asks every peer of `t` (ranks 0..nranks-1
// but `rank`) how many collective calls it has made and how it made call number `call`
// (0-based; this rank's signature `signature`, described as `mine`), waits up to waitMs for
// the answers, and returns what they say for the timeout's message: "rank 5 (...) has not
// made this call (call 12 on this communicator; it has made 11): the others wait for it",
// that ranks made it differently, or "" when nothing is known.
std::string probeLaggards(Transport* t, int rank, int nranks, uint64_t call, uint16_t signature,
                          const std::string& mine, uint32_t probeId, int64_t waitMs);

// Whether probeLaggards' text names ranks that have not made the call, or made it differently.
bool namesLateRanks(const std::string& late);

// A timed-out call's message: what the probe learnt first (the abort that carries it to the
// peers has a bounded length), then what this rank waited for.
std::string timeoutText(const std::string& call, int64_t timeoutMs, const std::string& waitingFor,
                        const std::string& late);

}  // namespace braid
