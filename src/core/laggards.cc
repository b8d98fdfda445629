#include "src/core/laggards.h"

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <vector>

#include "src/engine/reactor.h"
#include "transports/transport.h"

namespace braid {
namespace {

constexpr uint64_t kSigBit = uint64_t{1} << 47;
constexpr uint64_t kMadeMask = kSigBit - 1;

// The requests of one side of an exchange, alive until every one has come back (an abort
// brings back those never answered); whoever sees the last one, with the owner gone, frees it.
struct Exchange : CompletionSink {
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;
  int answersLeft = 0;
  bool abandoned = false;  // the owner no longer looks
  std::vector<NetRequest> reqs;
  std::vector<uint64_t> words;  // the requests' buffers, one 64-bit word each
  // Per peer: the calls it said it made; kSilent before it answers, kFailed when the receive
  // failed (this rank's transport or the peer failed: its own error says why). And its call's
  // signature, -1 when it did not say.
  std::vector<int64_t> made;
  std::vector<int32_t> sigs;
  static constexpr int64_t kSilent = -1, kFailed = -2;

  explicit Exchange(size_t n) : reqs(n), words(n, 0) {}
  void onComplete(NetRequest* r) override {
    bool last;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (r->kind == NetRequest::Kind::kRecv && !made.empty()) {
        const uint64_t w = words[r - reqs.data()];
        const auto p = static_cast<size_t>(r->peer);
        made[p] = r->status.isOk() ? static_cast<int64_t>(w & kMadeMask) : kFailed;
        if (r->status.isOk() && (w & kSigBit) != 0) sigs[p] = static_cast<int32_t>(w >> 48);
        --answersLeft;
      }
      last = --pending == 0 && abandoned;
      cv.notify_all();
    }
    if (last) delete this;
  }
  void post(Transport* t, size_t i, NetRequest::Kind kind, int peer, uint64_t tag) {
    NetRequest& q = reqs[i];
    q.kind = kind;
    q.peer = peer;
    q.tag = tag;
    q.buf = &words[i];
    q.bytes = sizeof(uint64_t);
    q.sink = this;
    t->post(&q);
  }
  // The owner is done with it (under no lock): freed now or by the last completion.
  void abandon() {
    bool now;
    {
      std::lock_guard<std::mutex> lock(mu);
      abandoned = true;
      now = pending == 0;
    }
    if (now) delete this;
  }
};

std::string names(Transport* t, const std::vector<int>& ranks,
                  const std::vector<int64_t>* made = nullptr) {
  constexpr size_t kMost = 8;
  std::string out;
  for (size_t i = 0; i < ranks.size() && i < kMost; ++i) {
    out += fmt::format("{}{}", i ? ", " : "", t->peerName(ranks[i]));
    if (made) {
      out += fmt::format(" ({} made)",
                         std::max<int64_t>((*made)[static_cast<size_t>(ranks[i])] - 1, 0));
    }
  }
  if (ranks.size() > kMost) out += fmt::format(" and {} more", ranks.size() - kMost);
  return out;
}

}  // namespace

uint64_t laggardAnswer(uint64_t callsMade, const uint16_t* signature) {
  uint64_t w = callsMade & kMadeMask;
  if (signature != nullptr) w |= kSigBit | uint64_t{*signature} << 48;
  return w;
}

namespace {

// One answer: takes the query in, then (on the loop) sends answer(query's call number) back;
// frees itself once the reply went or the query could not be taken.
struct Answer : CompletionSink {
  Transport* t;
  Reactor* loop;
  std::function<uint64_t(uint64_t)> answer;
  NetRequest query, reply;
  uint64_t call = 0, word = 0;
  void onComplete(NetRequest* r) override {
    if (r == &query && r->status.isOk()) {
      loop->post([this] {
        word = answer(call);
        reply.kind = NetRequest::Kind::kSend;
        reply.peer = query.peer;
        reply.tag = query.tag | kAnswerBit;
        reply.buf = &word;
        reply.bytes = sizeof word;
        reply.sink = this;
        t->post(&reply);
      });
      return;
    }
    delete this;
  }
};

}  // namespace

void answerLaggardQuery(Transport* t, Reactor* loop, int peer, uint64_t tag,
                        std::function<uint64_t(uint64_t call)> answer) {
  if ((tag & kAnswerBit) != 0) return;  // an answer after its probe gave up: left alone
  loop->post([t, loop, peer, tag, answer = std::move(answer)]() mutable {
    auto* a = new Answer;
    a->t = t;
    a->loop = loop;
    a->answer = std::move(answer);
    a->query.kind = NetRequest::Kind::kRecv;
    a->query.peer = peer;
    a->query.tag = tag;
    a->query.buf = &a->call;
    a->query.bytes = sizeof a->call;
    a->query.sink = a;
    t->post(&a->query);
  });
}

std::string probeLaggards(Transport* t, int rank, int nranks, uint64_t call, uint16_t signature,
                          const std::string& mine, uint32_t probeId, int64_t waitMs) {
  if (nranks < 2) return {};
  const uint64_t query = kControlTagBits | (probeId & (kAnswerBit - 1));
  auto* x = new Exchange(2 * static_cast<size_t>(nranks));
  x->made.assign(static_cast<size_t>(nranks), Exchange::kSilent);
  x->sigs.assign(static_cast<size_t>(nranks), -1);
  {
    std::lock_guard<std::mutex> lock(x->mu);
    x->pending = 2 * (nranks - 1);
    x->answersLeft = nranks - 1;
  }
  for (int p = 0; p < nranks; ++p) {
    if (p == rank) continue;
    const auto i = 2 * static_cast<size_t>(p);
    x->words[i + 1] = call;
    x->post(t, i, NetRequest::Kind::kRecv, p, query | kAnswerBit);
    x->post(t, i + 1, NetRequest::Kind::kSend, p, query);
  }
  std::vector<int64_t> made;
  std::vector<int32_t> sigs;
  {
    std::unique_lock<std::mutex> lock(x->mu);
    x->cv.wait_for(lock, std::chrono::milliseconds(waitMs), [x] { return x->answersLeft == 0; });
    made = x->made;
    sigs = x->sigs;
  }
  x->abandon();
  std::vector<int> behind, silent, differ;
  size_t cut = 0;  // answers lost when the communicator failed meanwhile
  for (int p = 0; p < nranks; ++p) {
    if (p == rank) continue;
    const int64_t m = made[static_cast<size_t>(p)];
    if (m == Exchange::kSilent) {
      silent.push_back(p);
    } else if (m == Exchange::kFailed) {
      ++cut;
    } else if (static_cast<uint64_t>(m) <= call) {
      behind.push_back(p);
    } else if (sigs[static_cast<size_t>(p)] >= 0 && sigs[static_cast<size_t>(p)] != signature) {
      differ.push_back(p);
    }
  }
  std::string out;
  // (Call numbers count every collective call on the communicator, braid's own exchanges such
  // as splits too, from 1; call 0 is the barrier that ends the communicator's set-up.)
  if (behind.size() == 1) {
    out = fmt::format(
        "{} has not made this call (call {} on this communicator; it has made {}): the others "
        "wait for it",
        t->peerName(behind[0]), call,
        std::max<int64_t>(made[static_cast<size_t>(behind[0])] - 1, 0));
  } else if (!behind.empty()) {
    out = fmt::format(
        "{} ranks have not made this call (call {} on this communicator): {}; the others wait "
        "for them",
        behind.size(), call, names(t, behind, &made));
  } else if (!differ.empty()) {
    // (Calls whose messages never meet: a reduce whose ranks name different roots waits on
    // both sides, where a message of the wrong call would have failed it at once.)
    out = fmt::format(
        "{} made this call differently (call {} on this communicator: another collective, or "
        "another count, datatype, op or root than this rank's {}): every rank must make the "
        "same collective calls in the same order",
        names(t, differ), call, mine);
  } else if (silent.empty() && cut == 0) {
    out =
        "every rank has made this call (what is missing is data in transit, or a call queued "
        "on a rank's stream behind another that waits)";
  }
  if (!behind.empty() && cut > 0) {
    out += fmt::format(" (the answers of {} more were cut off: the communicator failed meanwhile)",
                       cut);
  }
  if (!silent.empty()) {
    out += fmt::format("{}no answer within {} ms from {} (stopped, too busy, or cut off?)",
                       out.empty() ? "" : "; ", waitMs, names(t, silent));
  }
  return out;
}

bool namesLateRanks(const std::string& late) {
  return late.find("not made this call") != std::string::npos ||
         late.find("made this call differently") != std::string::npos;
}

std::string timeoutText(const std::string& call, int64_t timeoutMs, const std::string& waitingFor,
                        const std::string& late) {
  if (late.empty()) {
    return fmt::format("{} timed out after {} ms waiting for {}", call, timeoutMs, waitingFor);
  }
  return fmt::format("{} timed out after {} ms: {}; this rank waited for {}", call, timeoutMs, late,
                     waitingFor);
}

}  // namespace braid
