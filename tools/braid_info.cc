// braid-info: the library version, this machine as braid sees it (hwloc: NUMA nodes, cores,
// NICs, GPUs; network interfaces; transports and why one is unusable), the nodes and rails a
// topology file declares, and every configuration variable with its type, default, the value
// this environment gives it, and what it does. `--json` prints the same as one JSON object.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "braid/braid.h"
#include "collectives/algorithms.h"
#include "collectives/allreduce_direct.h"
#include "collectives/cost_model.h"
#include "src/core/config.h"
#include "src/core/env_init.h"
#include "src/topology/machine.h"
#include "src/topology/netif.h"
#include "src/topology/nodes.h"
#include "transports/ib/ib_transport.h"
#include "transports/multipath/multipath.h"
#include "transports/transport.h"

namespace braid {
namespace {

using nlohmann::json;

// Empty strings are shown as "" so that the columns stay readable.
std::string shown(const std::string& v) { return v.empty() ? "\"\"" : v; }

// "10.0.0.1:0" -> "10.0.0.1", "[::1]:0" -> "::1" (interfaces have no port).
std::string withoutPort(std::string a) {
  if (a.size() > 2 && a.compare(a.size() - 2, 2, ":0") == 0) a.resize(a.size() - 2);
  if (a.size() > 2 && a.front() == '[' && a.back() == ']') a = a.substr(1, a.size() - 2);
  return a;
}

json deviceJson(const PciDevice& d) {
  return {{"name", d.name}, {"kind", d.kind}, {"pci", d.pciBus}, {"numa", d.numa}};
}

// Everything braid-info reports, as JSON (the text form is printed from it).
json collect(const Config& cfg, std::string* problems) {
  json out;
  int version = 0;
  braidGetVersion(&version);
  out["version"] = fmt::format("{}.{}.{}", version / 10000, version / 100 % 100, version % 100);
  out["host"] = hostIdentity();
  // What braidCommInitFromEnv would make of this environment (run under the launcher to see).
  const LaunchDescription l = describeLaunch();
  if (l.ok) {
    out["launch"] = {
        {"launcher", l.launcher}, {"rank", l.rank}, {"size", l.size}, {"rendezvous", l.rendezvous}};
  } else {
    out["launch"] = {{"error", l.error}};
    *problems += l.error + "\n";
  }
  MachineInfo m;
  if (Status s = discoverMachine(&m); s.isOk()) {
    out["machine"] = {{"numa_nodes", m.numaNodes}, {"packages", m.packages},
                      {"cores", m.cores},          {"threads", m.threads},
                      {"nics", json::array()},     {"gpus", json::array()}};
    for (const auto& d : m.nics) out["machine"]["nics"].push_back(deviceJson(d));
    for (const auto& d : m.gpus) out["machine"]["gpus"].push_back(deviceJson(d));
  } else {
    out["machine"] = {{"error", s.message()}};
  }
  out["interfaces"] = json::array();
  for (const NetIf& i : listInterfaces()) {
    out["interfaces"].push_back({{"name", i.name}, {"address", withoutPort(i.addr.toString())}});
  }
  out["rails"] = {
      {"setting", cfg.rails}, {"discovered", discoveredRails()}, {"in_use", configuredRails(cfg)}};
  {
    // The tcp transport's paths to each peer (transports/multipath): this rank's NICs x the
    // peer's x flows; chunks are sprayed over them or kept on the primary (failover).
    std::vector<NetIf> nics;
    int primary = 0;
    json mp = {{"mode", cfg.multirail},
               {"flows_per_nic_pair", cfg.tcpSocketsPerPeer},
               {"path_timeout_ms", cfg.pathTimeoutMs},
               {"chunk_bytes", cfg.pathChunkBytes},
               {"rehash", cfg.pathRehash != 0},
               {"fault", cfg.fault.empty() ? "off" : cfg.fault}};
    const int localRank = launcherLocalRank();
    Status s = chooseNics(cfg, localRank, &nics, &primary);
    if (!s.isOk()) {
      // Outside a launcher the local rank is unknown: the rails are still checked as local
      // rank 0's, so that a rail that does not exist is said here, not at the job's start.
      std::vector<NetIf> asFirst;
      int p0 = 0;
      Status s0 = localRank < 0 ? chooseNics(cfg, 0, &asFirst, &p0) : s;
      if (!s0.isOk()) *problems += s0.message() + "\n";
    }
    if (s.isOk()) {
      mp["nics"] = json::array();
      for (const NetIf& n : nics) {  // off too: connected; only the primary sends
        mp["nics"].push_back(n.name);
        if (n.down) mp["nics_without_link"].push_back(n.name);
      }
      mp["primary"] = nics[primary].name;
    } else {
      mp["error"] = s.message();
    }
    out["multipath"] = mp;
  }
  out["transports"] = json::array();
  for (const std::string& name : transportNames()) {
    TransportFactory* f = findTransport(name);
    bool usable = f != nullptr && f->usable(cfg);
    bool allowed = false;
    for (const auto& t : splitList(cfg.transports)) allowed = allowed || t == name;
    json t = {{"name", name}, {"usable", usable}, {"allowed", allowed}};
    if (f != nullptr && !usable) t["why"] = f->unusableReason(cfg);
    if (name == "ib" && usable) {
      // The ports ib would use, each with the GID it chose (by type, or BRAID_IB_GID_INDEX).
      std::vector<ib::PortInfo> ports;
      std::string why;
      if (ib::discoverPorts(cfg, &ports, &why).isOk()) {
        t["ports"] = json::array();
        for (const ib::PortInfo& pi : ports) {
          t["ports"].push_back(
              {{"port", pi.name()},
               {"link_layer", pi.linkLayer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand"},
               {"gid_index", pi.gidIndex},
               {"gid_kind", pi.gidKind},
               {"netdev", pi.netdev},
               {"mtu", 128 << pi.mtu}});
        }
      }
    }
    out["transports"].push_back(std::move(t));
  }
  if (!cfg.topoFile.empty()) {
    const char* ws = std::getenv("BRAID_WORLD_SIZE");
    NodeMap nm;
    if (Status s = loadTopologyFile(cfg.topoFile, ws ? std::atoi(ws) : 0, &nm); s.isOk()) {
      json nodes = json::array();
      for (size_t n = 0; n < nm.names.size(); ++n) {
        nodes.push_back({{"name", nm.names[n]}, {"ranks", nm.ranks[n]}});
      }
      out["topology"] = {{"file", cfg.topoFile}, {"nodes", nodes}, {"rails", nm.rails}};
    } else {
      out["topology"] = {{"file", cfg.topoFile}, {"error", s.message()}};
      *problems += s.message() + "\n";
    }
  }
  out["config"] = json::array();
  forEachConfigEntry([&](const ConfigEntry& e) {
    out["config"].push_back({{"variable", e.env},
                             {"type", e.type},
                             {"default", e.defaultValue},
                             {"current", e.currentValue},
                             {"help", e.help}});
  });
  return out;
}

std::string devices(const json& list) {
  std::string s;
  for (const auto& d : list) {
    s += fmt::format(
        "{}{} ({}{}{})", s.empty() ? "" : ", ", d["name"].get<std::string>(),
        d["kind"].get<std::string>(),
        d["pci"].get<std::string>().empty() ? "" : ", pci " + d["pci"].get<std::string>(),
        d["numa"].get<int>() >= 0 ? fmt::format(", numa {}", d["numa"].get<int>()) : "");
  }
  return s.empty() ? "none" : s;
}

void printText(const json& j) {
  std::printf("braid %s\n\nhost        %s\n", j["version"].get<std::string>().c_str(),
              j["host"].get<std::string>().c_str());
  const json& l = j["launch"];
  if (l.contains("error")) {
    std::printf("launch      braidCommInitFromEnv would fail: %s\n",
                l["error"].get<std::string>().c_str());
  } else {
    std::printf("launch      %s: rank %d of %d; rendezvous: %s\n",
                l["launcher"].get<std::string>().c_str(), l["rank"].get<int>(),
                l["size"].get<int>(), l["rendezvous"].get<std::string>().c_str());
  }
  const json& m = j["machine"];
  if (m.contains("error")) {
    std::printf("machine     unknown: %s\n", m["error"].get<std::string>().c_str());
  } else {
    std::printf("machine     %d NUMA node(s), %d package(s), %d cores, %d threads\n",
                m["numa_nodes"].get<int>(), m["packages"].get<int>(), m["cores"].get<int>(),
                m["threads"].get<int>());
    std::printf("PCI NICs    %s\nGPUs        %s\n", devices(m["nics"]).c_str(),
                devices(m["gpus"]).c_str());
  }
  std::string ifs;
  for (const auto& i : j["interfaces"]) {
    ifs += fmt::format("{}{} {}", ifs.empty() ? "" : ", ", i["name"].get<std::string>(),
                       i["address"].get<std::string>());
  }
  std::printf("interfaces  %s\n", ifs.empty() ? "none" : ifs.c_str());
  std::string found, used;
  for (const auto& r : j["rails"]["discovered"])
    found += (found.empty() ? "" : ", ") + r.get<std::string>();
  for (const auto& r : j["rails"]["in_use"])
    used += (used.empty() ? "" : ", ") + r.get<std::string>();
  std::printf("rails       %s (NICs by NUMA node: %s; BRAID_RAILS='%s')\n",
              used.empty() ? "none: every local rank uses one interface"
                           : ("local rank i uses rail i mod " +
                              std::to_string(j["rails"]["in_use"].size()) + ": " + used)
                                 .c_str(),
              found.empty() ? "none" : found.c_str(),
              j["rails"]["setting"].get<std::string>().c_str());
  std::string ts;
  for (const auto& t : j["transports"]) {
    ts += fmt::format("{}{} ({})", ts.empty() ? "" : ", ", t["name"].get<std::string>(),
                      !t["usable"].get<bool>()
                          ? "not usable on this machine" +
                                (t.contains("why") ? ": " + t["why"].get<std::string>() : "")
                      : !t["allowed"].get<bool>() ? "usable, not in BRAID_TRANSPORTS"
                                                  : "usable");
  }
  std::printf("transports  %s\n", ts.c_str());
  for (const auto& t : j["transports"]) {
    if (!t.contains("ports")) continue;
    for (const auto& pt : t["ports"]) {
      const std::string nd = pt["netdev"].get<std::string>();
      std::printf("rdma        %s: %s, GID %d (%s%s), MTU %d\n",
                  pt["port"].get<std::string>().c_str(),
                  pt["link_layer"].get<std::string>().c_str(), pt["gid_index"].get<int>(),
                  pt["gid_kind"].get<std::string>().c_str(),
                  nd.empty() ? "" : (" on " + nd).c_str(), pt["mtu"].get<int>());
    }
  }
  const json& mp = j["multipath"];
  if (mp.contains("error")) {
    std::printf("multipath   %s\n", mp["error"].get<std::string>().c_str());
  } else {
    std::string nics;
    for (const auto& n : mp["nics"]) {
      nics += (nics.empty() ? "" : ", ") + n.get<std::string>();
      if (mp.contains("nics_without_link") &&
          std::find(mp["nics_without_link"].begin(), mp["nics_without_link"].end(), n) !=
              mp["nics_without_link"].end()) {
        nics += " (no link)";
      }
    }
    std::printf(
        "multipath   tcp: BRAID_MULTIRAIL=%s over NIC(s) %s (primary %s), %lld flow(s) "
        "per NIC pair (lagging ones re-hashed: %s); path timeout %lld ms; chunks up to %lld "
        "bytes; faults %s\n",
        mp["mode"].get<std::string>().c_str(), nics.c_str(),
        mp["primary"].get<std::string>().c_str(), mp["flows_per_nic_pair"].get<long long>(),
        mp["rehash"].get<bool>() ? "on" : "off", mp["path_timeout_ms"].get<long long>(),
        mp["chunk_bytes"].get<long long>(), mp["fault"].get<std::string>().c_str());
  }
  if (j.contains("topology")) {
    const json& t = j["topology"];
    if (t.contains("error")) {
      std::printf("topology    %s\n", t["error"].get<std::string>().c_str());
    } else {
      std::printf("topology    %s: %zu node(s), %d rail(s)\n", t["file"].get<std::string>().c_str(),
                  t["nodes"].size(), t["rails"].get<int>());
      for (const auto& n : t["nodes"]) {
        std::printf("            %s: ranks %s\n", n["name"].get<std::string>().c_str(),
                    n["ranks"].dump().c_str());
      }
    }
  }
  std::printf("\n");
  std::vector<std::vector<std::string>> rows{{"variable", "type", "default", "current", "help"}};
  for (const auto& e : j["config"]) {
    std::string cur = e["current"], def = e["default"];
    rows.push_back(
        {e["variable"], e["type"], shown(def), shown(cur) + (cur != def ? " *" : ""), e["help"]});
  }
  size_t width[4] = {0, 0, 0, 0};
  for (const auto& row : rows) {
    for (size_t c = 0; c < 4; ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < 4; ++c) {
      line += row[c];
      line.append(width[c] + 2 - row[c].size(), ' ');
    }
    std::printf("%s%s\n", line.c_str(), row[4].c_str());
  }
  std::printf("\n* set in this environment to something other than the default\n");
}

// "64", "64K", "1M", "2G" -> bytes (binary multiples); false when malformed.
bool parseBytes(const std::string& text, size_t* out) {
  // Digits only (strtoull would take "-5" as 2^64-5) and no overflow.
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno == ERANGE) return false;
  std::string suffix(end);
  int shift = suffix.empty()                   ? 0
              : suffix == "K" || suffix == "k" ? 10
              : suffix == "M"                  ? 20
              : suffix == "G"                  ? 30
                                               : -1;
  if (shift < 0 || v > (std::numeric_limits<size_t>::max() >> shift)) return false;
  *out = static_cast<size_t>(v) << shift;
  return true;
}

// --explain COLL SIZE: the candidates the selector weighs for this job's shape.
int explain(const Config& cfg, const std::vector<std::string>& what, int ranks, int nodes,
            bool asJson) {
  size_t bytes = 0;
  CollKind kind = CollKind::kBarrier;
  for (CollKind k :
       {CollKind::kAllReduce, CollKind::kBroadcast, CollKind::kReduce, CollKind::kAllGather,
        CollKind::kReduceScatter, CollKind::kAllToAll, CollKind::kAllToAllv}) {
    if (what[0] == collName(k)) kind = k;
  }
  if (kind == CollKind::kBarrier || !parseBytes(what[1], &bytes)) {
    std::fprintf(stderr,
                 "braid-info --explain: want 'COLL SIZE', COLL one of allreduce, broadcast, "
                 "reduce, allgather, reducescatter, alltoall, alltoallv and SIZE like 1M (the "
                 "message; for allgather, reducescatter and alltoall one rank's block)\n");
    return 2;
  }
  if (Status s = checkAlgoSpec(cfg.algo); !s.isOk()) {
    std::fprintf(stderr, "braid-info: %s (no communicator can be created with it)\n",
                 s.message().c_str());
    return 1;
  }
  NodeMap nm;
  std::string shape;
  if (!cfg.topoFile.empty()) {
    if (Status s = loadTopologyFile(cfg.topoFile, ranks, &nm); !s.isOk()) {
      std::fprintf(stderr, "braid-info: %s\n", s.message().c_str());
      return 1;
    }
    shape = "BRAID_TOPO_FILE " + cfg.topoFile;
  } else {
    if (ranks <= 0) ranks = 2;
    if (nodes > ranks) {
      std::fprintf(stderr, "braid-info --explain: --nodes %d is more than the %d rank(s)\n", nodes,
                   ranks);
      return 2;
    }
    std::vector<std::string> ids;
    for (int r = 0; r < ranks; ++r) ids.push_back(std::to_string(r * nodes / ranks));
    nm = groupByHost(ids);
    shape = fmt::format("{} node(s), --ranks/--nodes", nodes);
  }
  CostModel m = costModel(cfg, nm);
  json j = {{"collective", what[0]},
            {"bytes", bytes},
            {"ranks", nm.nranks()},
            {"nodes", nm.names.size()},
            {"shape", shape},
            {"links",
             {{"intra", {{"latency_us", m.intra.alphaUs}, {"gbit_per_s", m.intra.gbitPerS}}},
              {"inter", {{"latency_us", m.inter.alphaUs}, {"gbit_per_s", m.inter.gbitPerS}}}}},
            {"candidates", json::array()}};
  const Candidates cands = predict(kind, cfg, m, nm, bytes);
  for (const Candidate& c : cands) {
    if (c.algo == nullptr) continue;
    j["candidates"].push_back({{"algorithm", c.algo},
                               {"applies", c.applies},
                               {"predicted_us", c.us},
                               {"why", explainCandidate(kind, c, cfg, nm)}});
  }
  j["chosen"] = cheapest(cands);
  // Small calls on one node do not reach the model: the fast boxes (collectives/fastbox.cc).
  if (kind != CollKind::kAllToAll && kind != CollKind::kAllToAllv) {
    const auto allowed = splitList(cfg.transports);
    std::string why;
    if (nm.names.size() != 1 || nm.nranks() < 2) {
      why = "needs every rank on one node, two at least";
    } else if (std::find(allowed.begin(), allowed.end(), "shm") == allowed.end()) {
      why = "needs shm in BRAID_TRANSPORTS";
    } else if ((fastboxKinds(cfg) & (1u << static_cast<unsigned>(kind))) == 0) {
      why = "BRAID_ALGO forces another algorithm";
    } else if (bytes > static_cast<size_t>(cfg.shmFastBytes)) {
      why = fmt::format("more than BRAID_SHM_FAST_BYTES ({}) per rank", cfg.shmFastBytes);
    }
    const bool applies = why.empty();
    if (applies) why = "one exchange through per-pair mailboxes in shared memory (not modeled)";
    j["candidates"].push_back(
        {{"algorithm", "fastbox"}, {"applies", applies}, {"predicted_us", nullptr}, {"why", why}});
    if (applies) j["chosen"] = "fastbox";
    // Larger allreduces of two ranks: the direct one (collectives/allreduce_direct.h).
    if (kind == CollKind::kAllReduce) {
      std::string whyNot;
      if (nm.names.size() != 1 || nm.nranks() != 2) {
        whyNot = "needs exactly two ranks, on one node";
      } else if (std::find(allowed.begin(), allowed.end(), "shm") == allowed.end()) {
        whyNot = "needs shm in BRAID_TRANSPORTS";
      } else if (cfg.shmCma == 0) {
        whyNot = "BRAID_SHM_CMA=0";
      } else if ((fastboxKinds(cfg) & (1u << static_cast<unsigned>(kind))) == 0) {
        whyNot = "BRAID_ALGO forces another algorithm";
      } else if (cfg.shmFastBytes < static_cast<int64_t>(sizeof(DirectBuffers))) {
        whyNot = "needs the fast boxes (BRAID_SHM_FAST_BYTES)";
      } else if (bytes < kDirectMinBytes || bytes <= static_cast<size_t>(cfg.shmFastBytes)) {
        whyNot =
            fmt::format("under {} bytes", std::max<size_t>(kDirectMinBytes, cfg.shmFastBytes + 1));
      }
      const bool direct = whyNot.empty();
      if (direct) {
        whyNot =
            "each rank reduces chunks it claims, reading and writing the peer's buffers "
            "(CMA, where the kernel lets the ranks: checked when they connect; not modeled)";
      }
      j["candidates"].push_back({{"algorithm", "direct"},
                                 {"applies", direct},
                                 {"predicted_us", nullptr},
                                 {"why", whyNot}});
      if (direct) j["chosen"] = "direct";
    }
  }
  j["chunk_bytes"] = chunkBytes(cfg, nm);
  if (asJson) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s of %zu bytes over %d ranks in %zu node(s) (%s)\n", what[0].c_str(), bytes,
              nm.nranks(), nm.names.size(), shape.c_str());
  std::printf("links: intra %.1f us + %.1f Gbit/s, inter %.1f us + %.1f Gbit/s\n\n",
              m.intra.alphaUs, m.intra.gbitPerS, m.inter.alphaUs, m.inter.gbitPerS);
  std::printf("  %-9s %14s  %s\n", "algo", "predicted us", "");
  for (const auto& c : j["candidates"]) {
    std::string algo = c["algorithm"];
    std::string t = !c["applies"].get<bool>() ? "-"
                    : c["predicted_us"].is_number()
                        ? fmt::format("{:.1f}", c["predicted_us"].get<double>())
                        : "n/a";
    std::printf("%s %-9s %14s  %s\n", algo == j["chosen"] ? "*" : " ", algo.c_str(), t.c_str(),
                c["why"].get<std::string>().c_str());
  }
  std::printf("\n* chosen (BRAID_ALGO overrides); pipeline chunk %zu bytes\n",
              j["chunk_bytes"].get<size_t>());
  return 0;
}

int infoMain(int argc, char** argv) {
  CLI::App app{
      "Prints the braid version, this machine as braid sees it (NUMA, cores, NICs, GPUs, "
      "interfaces, transports), the nodes of BRAID_TOPO_FILE, and every BRAID_* variable."};
  bool asJson = false;
  app.add_flag("--json", asJson, "one JSON object instead of text");
  std::vector<std::string> what;
  int ranks = 0, nodes = 1;
  app.add_option("--explain", what,
                 "COLL SIZE: the algorithms weighed for it and the predicted time of each")
      ->expected(2);
  CLI::Option* ranksOpt = app.add_option(
      "--ranks", ranks, "with --explain: job size (default: the topology file's, else 2)");
  CLI::Option* nodesOpt =
      app.add_option("--nodes", nodes, "with --explain and no topology file: nodes of equal size");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; a bad command line 2, as braidrun and braid-perf (not CLI11's codes).
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (auto [opt, v] : {std::pair{ranksOpt, ranks}, std::pair{nodesOpt, nodes}}) {
    if (opt->count() > 0 && v < 1) {
      std::fprintf(stderr, "braid-info: %s %d: must be at least 1\n", opt->get_name().c_str(), v);
      return 2;
    }
  }
  Config cfg;
  Status cs = Config::fromEnv(&cfg);
  warnUnknownVariables();
  if (!what.empty()) {
    if (!cs.isOk()) {
      std::fprintf(stderr, "braid-info: %s\n", cs.message().c_str());
      return 1;
    }
    return explain(cfg, what, ranks, nodes, asJson);
  }
  if (!cs.isOk()) cfg = Config{};  // show the machine and the table with the defaults
  std::string problems;
  json j = collect(cfg, &problems);
  // The settings a communicator's creation checks beyond their types (it would fail on them).
  for (const std::string& name : splitList(cfg.transports)) {
    if (findTransport(name) == nullptr) {
      problems += fmt::format("BRAID_TRANSPORTS: '{}' is not a known transport\n", name);
    }
  }
  if (Status a = checkAlgoSpec(cfg.algo); !a.isOk()) problems += a.message() + "\n";
  mp::FaultPlan plan;
  if (Status f = mp::FaultPlan::parse(cfg.fault, &plan); !f.isOk()) problems += f.message() + "\n";
  if (asJson) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    printText(j);
  }
  if (!cs.isOk()) {
    std::fprintf(stderr,
                 "\nbraid-info: the environment holds an invalid setting (shown with the "
                 "defaults): %s\n",
                 cs.message().c_str());
    return 1;
  }
  if (!problems.empty()) {
    std::fprintf(stderr, "\nbraid-info: %s", problems.c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace braid

int main(int argc, char** argv) { return braid::infoMain(argc, argv); }
