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

namespace {

// The predictions without their explanations: the selector runs this on every call.
struct Costs {
  double us[4] = {0, 0, 0, 0};  // rd, ring, rhd, hier
  bool hierApplies = false;
  int logp = 0, n = 1, p = 1;
};
constexpr const char* kAlgoNames[4] = {"rd", "ring", "rhd", "hier"};

Costs allReduceCosts(const CostModel& m, const NodeMap& nm, size_t bytes) {
  Costs c;
  const int n = c.n = std::max(1, nm.nranks());
  const double S = static_cast<double>(bytes);
  const double red = 1.0 / (m.reduceGBps * 1e3);  // us per byte
  // A flat algorithm is as slow as its slowest link.
  const LinkCost& flat = nm.names.size() > 1 ? m.inter : m.intra;
  int p = 1, logp = 0;
  while (p * 2 <= n) {
    p *= 2;
    ++logp;
  }
  c.p = p;
  c.logp = logp;
  const double fold = n == p ? 0 : 2 * flat.us(S);  // non-powers of two: in and out of the fold
  c.us[0] = logp * (flat.us(S) + S * red) + fold;
  c.us[1] = 2.0 * (n - 1) * flat.us(S / n) + (n - 1.0) / n * S * red;
  c.us[2] = 2 * logp * flat.alphaUs + 2.0 * (p - 1) / p * (flat.us(S) - flat.alphaUs) +
            (p - 1.0) / p * S * red + fold;
  c.hierApplies = hierarchicalShape(nm);
  if (c.hierApplies) {
    const double L = static_cast<double>(nm.ranks[0].size());
    const double N = static_cast<double>(nm.ranks.size());
    const double part = S / L;
    double intra = m.intra.alphaUs * (L - 1) + (m.intra.us((L - 1) * part) - m.intra.alphaUs);
    double rail = 2 * (N - 1) * m.inter.us(part / N) + (N - 1) / N * part * red;
    c.us[3] = 2 * intra + (L - 1) * part * red + rail;
  }
  return c;
}

}  // namespace

std::vector<Prediction> predictAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  const Costs c = allReduceCosts(m, nm, bytes);
  std::vector<Prediction> out;
  out.push_back(
      {"rd", c.us[0],
       fmt::format("{} steps of the whole message{}", c.logp, c.n == c.p ? "" : " + fold")});
  out.push_back(
      {"ring", c.us[1], fmt::format("{} steps of 1/{} of the message", 2 * (c.n - 1), c.n)});
  out.push_back(
      {"rhd", c.us[2], fmt::format("{} steps, 2(p-1)/p of the message on the wire", 2 * c.logp)});
  out.push_back(
      {"hier", c.us[3],
       c.hierApplies
           ? fmt::format("node reduce-scatter and gather + a {}-node ring per rail on 1/{}",
                         nm.ranks.size(), nm.ranks[0].size())
           : "needs several nodes with the same number (> 1) of ranks",
       c.hierApplies});
  return out;
}

size_t chunkBytes(const Config& cfg, const NodeMap& nm) {
  if (cfg.chunkBytes > 0) return static_cast<size_t>(cfg.chunkBytes);
  const bool shm = cfg.transports.find("shm") != std::string::npos;
  return shm && nm.names.size() <= 1 ? size_t{1} << 20 : size_t{4} << 20;
}

const char* cheapestAllReduce(const CostModel& m, const NodeMap& nm, size_t bytes) {
  const Costs c = allReduceCosts(m, nm, bytes);
  int best = 0;
  for (int i = 1; i < 4; ++i) {
    // Ties go to the earlier (simpler) one.
    if ((i < 3 || c.hierApplies) && c.us[i] < c.us[best] * 0.999) best = i;
  }
  return kAlgoNames[best];
}

}  // namespace braid
