#include "collectives/cost_model.h"

#include <fmt/format.h>

#include <cmath>

#include "collectives/algorithms.h"

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

}  // namespace

CostModel costModel(const Config& cfg, const NodeMap& nm) {
  const bool shm = cfg.transports.find("shm") != std::string::npos;  // no allocation per call
  CostModel m;
  m.intra = fromRate(nm.intra, shm ? kShm : kTcp);
  m.inter = fromRate(nm.inter, kTcp);
  return m;
}

std::vector<Prediction> predictAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  const int n = std::max(1, nm.nranks());
  const double S = static_cast<double>(bytes);
  const double red = 1.0 / (m.reduceGBps * 1e3);  // us per byte
  // A flat algorithm is as slow as its slowest link.
  const LinkCost& flat = nm.names.size() > 1 ? m.inter : m.intra;
  int p = 1, logp = 0;
  while (p * 2 <= n) {
    p *= 2;
    ++logp;
  }
  const double fold = n == p ? 0 : 2 * flat.us(S);  // non-powers of two: in and out of the fold
  std::vector<Prediction> out;
  out.push_back({"rd", logp * (flat.us(S) + S * red) + fold,
                 fmt::format("{} steps of the whole message{}", logp, n == p ? "" : " + fold")});
  double ring = 2.0 * (n - 1) * flat.us(S / n) + (n - 1.0) / n * S * red;
  out.push_back({"ring", ring, fmt::format("{} steps of 1/{} of the message", 2 * (n - 1), n)});
  double rhd = 2 * logp * flat.alphaUs + 2.0 * (p - 1) / p * (flat.us(S) - flat.alphaUs) +
               (p - 1.0) / p * S * red + fold;
  out.push_back(
      {"rhd", rhd, fmt::format("{} steps, 2(p-1)/p of the message on the wire", 2 * logp)});
  Prediction hier{"hier", 0, "", hierarchicalShape(nm)};
  if (hier.applies) {
    const double L = static_cast<double>(nm.ranks[0].size());
    const double N = static_cast<double>(nm.ranks.size());
    const double part = S / L;
    double intra = m.intra.alphaUs * (L - 1) + (m.intra.us((L - 1) * part) - m.intra.alphaUs);
    double rail = 2 * (N - 1) * m.inter.us(part / N) + (N - 1) / N * part * red;
    hier.us = 2 * intra + (L - 1) * part * red + rail;
    hier.why = fmt::format("node reduce-scatter and gather + a {}-node ring per rail on 1/{}",
                           nm.ranks.size(), nm.ranks[0].size());
  } else {
    hier.why = "needs several nodes with the same number (> 1) of ranks";
  }
  out.push_back(hier);
  return out;
}

size_t chunkBytes(const Config& cfg, const NodeMap& nm) {
  if (cfg.chunkBytes > 0) return static_cast<size_t>(cfg.chunkBytes);
  const bool shm = cfg.transports.find("shm") != std::string::npos;
  return shm && nm.names.size() <= 1 ? size_t{1} << 20 : size_t{4} << 20;
}

std::string cheapestAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  std::string best;
  double bestUs = 0;
  for (const Prediction& p : predictAllReduce(m, nm, bytes)) {
    // Ties go to the earlier (simpler) one.
    if (p.applies && (best.empty() || p.us < bestUs * 0.999)) {
      best = p.algo;
      bestUs = p.us;
    }
  }
  return best;
}

}  // namespace braid
