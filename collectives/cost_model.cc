#include "collectives/cost_model.h"

#include <fmt/format.h>

#include <cmath>

namespace braid {
namespace {

// Defaults: shm and TCP on one 2-core VM (benchmarks/results/2026-11-25-cpp-2core).
constexpr LinkCost kShm{3.0, 24.0};  // ~3 GB/s single-copy
constexpr LinkCost kTcp{40.0, 8.0};  // ~1 GB/s, ~40 us per step with the stack's wake-ups

LinkCost fromRate(const LinkRate& r, LinkCost dflt) {
  if (r.latencyUs > 0) dflt.alphaUs = r.latencyUs;
  if (r.gbps > 0) dflt.gbitPerS = r.gbps;
  return dflt;
}

struct Shape {
  int n = 1, p = 1, logp = 0, logn = 0;  // p: largest power of two <= n; logn: ceil(log2 n)
  double N = 1, L = 1;                   // nodes and ranks per node (equal nodes only)
  bool hier = false;
};

Shape shapeOf(const NodeMap& nm) {
  Shape s;
  s.n = std::max(1, nm.nranks());
  while (s.p * 2 <= s.n) {
    s.p *= 2;
    ++s.logp;
  }
  s.logn = s.logp + (s.p == s.n ? 0 : 1);
  s.hier = hierarchicalShape(nm);
  if (s.hier) {
    s.N = static_cast<double>(nm.ranks.size());
    s.L = static_cast<double>(nm.ranks[0].size());
  }
  return s;
}

}  // namespace

CostModel costModel(const Config& cfg, const NodeMap& nm) {
  const bool shm = cfg.transports.find("shm") != std::string::npos;  // no allocation per call
  CostModel m;
  m.intra = fromRate(nm.intra, shm ? kShm : kTcp);
  m.inter = fromRate(nm.inter, kTcp);
  return m;
}

Candidates predict(CollKind kind, const Config& cfg, const CostModel& m, const NodeMap& nm,
                   size_t bytes) {
  const Shape h = shapeOf(nm);
  const double n = h.n, S = static_cast<double>(bytes), N = h.N, L = h.L;
  const double red = 1.0 / (m.reduceGBps * 1e3);  // us per reduced byte
  // A flat algorithm is as slow as its slowest link.
  const LinkCost& flat = nm.names.size() > 1 ? m.inter : m.intra;
  const LinkCost &in = m.intra, &out = m.inter;
  const double chunk = static_cast<double>(chunkBytes(cfg, nm));
  const double K = std::max(1.0, std::ceil(S / chunk));  // pipeline depth
  Candidates c;
  switch (kind) {
    case CollKind::kAllReduce: {
      const double fold = h.n == h.p ? 0 : 2 * flat.us(S);  // in and out of the fold
      const double p = h.p;
      c[0] = {"rd", h.logp * (flat.us(S) + S * red) + fold, true};
      c[1] = {"ring", 2 * (n - 1) * flat.us(S / n) + (n - 1) / n * S * red, true};
      c[2] = {"rhd",
              2 * h.logp * flat.alphaUs + 2 * (p - 1) / p * (flat.us(S) - flat.alphaUs) +
                  (p - 1) / p * S * red + fold,
              true};
      const double part = S / L;
      c[3] = {"hier",
              2 * (in.alphaUs * (L - 1) + in.us((L - 1) * part) - in.alphaUs) +
                  (L - 1) * part * red + 2 * (N - 1) * out.us(part / N) + (N - 1) / N * part * red,
              h.hier};
      break;
    }
    case CollKind::kAllGather:
      c[0] = {"bruck", h.logn * flat.alphaUs + (n - 1) * (flat.us(S) - flat.alphaUs),
              S * n <= static_cast<double>(cfg.smallAllgatherBytes)};
      c[1] = {"ring", (n - 1) * flat.us(S), true};
      c[2] = {"hier", (N - 1) * out.us(S) + (L - 1) * N * in.us(S), h.hier};
      break;
    case CollKind::kReduceScatter:
      c[0] = {"ring", (n - 1) * (flat.us(S) + S * red), true};
      c[1] = {"hier", (L - 1) * N * (in.us(S) + S * red) + (N - 1) * (out.us(S) + S * red), h.hier};
      break;
    case CollKind::kBroadcast:
    case CollKind::kReduce: {
      const bool small = S < static_cast<double>(cfg.chainMinBytes);
      const bool reduces = kind == CollKind::kReduce;
      const double r = reduces ? S / K * red : 0;  // reduction per chunk and hop
      c[0] = {"binomial", h.logn * (flat.us(S) + (reduces ? S * red : 0)), small};
      c[1] = {"chain", (n - 2 + K) * (flat.us(S / K) + r), !small};
      c[2] = {"hier", (N - 2 + K) * (out.us(S / K) + r) + (L - 1) * (in.us(S / K) + r),
              !small && h.hier};
      break;
    }
    case CollKind::kAllToAll:
      c[0] = {"pairwise", h.hier ? (n - L) * out.us(S) + (L - 1) * in.us(S) : (n - 1) * flat.us(S),
              true};
      c[1] = {"rail", (L - 1) * N * in.us(S) + (N - 1) * out.us(L * S), h.hier};
      break;
    case CollKind::kAllToAllv:
      c[0] = {"pairwise", (n - 1) * flat.us(S), true};
      break;
    default:
      break;
  }
  return c;
}

const char* cheapest(const Candidates& c) {
  const Candidate* best = nullptr;
  for (const Candidate& x : c) {
    if (x.algo != nullptr && x.applies && (best == nullptr || x.us < best->us * 0.999)) best = &x;
  }
  return best != nullptr ? best->algo : nullptr;
}

std::string explainCandidate(CollKind kind, const Candidate& c, const Config& cfg,
                             const NodeMap& nm) {
  const std::string a = c.algo;
  const Shape h = shapeOf(nm);
  if (!c.applies) {
    if (a == "hier" || a == "rail")
      return "needs several nodes with the same number (> 1) of ranks";
    if (a == "bruck") {
      return fmt::format("only up to BRAID_SMALL_ALLGATHER_BYTES={} in total",
                         cfg.smallAllgatherBytes);
    }
    if (a == "binomial")
      return fmt::format("only below BRAID_CHAIN_MIN_BYTES={}", cfg.chainMinBytes);
    if (a == "chain") return fmt::format("only from BRAID_CHAIN_MIN_BYTES={}", cfg.chainMinBytes);
    return "does not apply";
  }
  if (a == "rd")
    return fmt::format("{} steps of the whole message{}", h.logp, h.n == h.p ? "" : " + fold");
  if (a == "rhd") return fmt::format("{} steps, 2(p-1)/p of the message on the wire", 2 * h.logp);
  if (a == "bruck") return fmt::format("{} steps, n-1 blocks on the wire", h.logn);
  if (a == "binomial") return fmt::format("{} steps of the whole message", h.logn);
  if (a == "chain") return "pipelined through every rank, one chunk per hop";
  if (a == "pairwise") return fmt::format("{} exchanges of one block", h.n - 1);
  if (a == "rail") return "blocks gathered in the node, one message per node over the rail";
  if (a == "ring") {
    return kind == CollKind::kAllReduce
               ? fmt::format("{} steps of 1/{} of the message", 2 * (h.n - 1), h.n)
               : fmt::format("{} steps of one block", h.n - 1);
  }
  if (a == "hier") {
    return fmt::format(
        "inside the {} node(s) over the node link, between them over rail(s) of {} node(s)",
        nm.ranks.size(), nm.ranks.size());
  }
  return "";
}

size_t chunkBytes(const Config& cfg, const NodeMap& nm) {
  if (cfg.chunkBytes > 0) return static_cast<size_t>(cfg.chunkBytes);
  const bool shm = cfg.transports.find("shm") != std::string::npos;
  return shm && nm.names.size() <= 1 ? size_t{1} << 20 : size_t{4} << 20;
}

}  // namespace braid
