#include "src/topology/nodes.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace braid {

int NodeMap::localRank(int rank) const {
  const auto& rs = ranks[nodeOf[rank]];
  return static_cast<int>(std::find(rs.begin(), rs.end(), rank) - rs.begin());
}

int NodeMap::localSize(int rank) const { return static_cast<int>(ranks[nodeOf[rank]].size()); }

NodeMap groupByHost(const std::vector<std::string>& hostIds) {
  NodeMap m;
  std::map<std::string, int> index;
  for (size_t r = 0; r < hostIds.size(); ++r) {
    auto [it, fresh] = index.emplace(hostIds[r], static_cast<int>(m.names.size()));
    if (fresh) {
      m.names.push_back(hostIds[r]);
      m.ranks.emplace_back();
    }
    m.nodeOf.push_back(it->second);
    m.ranks[it->second].push_back(static_cast<int>(r));
  }
  return m;
}

namespace {

using nlohmann::json;

Status bad(const std::string& origin, const std::string& what) {
  return invalidArgument(fmt::format("topology {}: {}", origin, what));
}

Status readLink(const json& j, const char* key, const std::string& origin, LinkRate* out) {
  if (!j.contains(key)) return Status::ok();
  const json& l = j.at(key);
  if (!l.is_object()) return bad(origin, fmt::format("links.{} must be an object", key));
  for (const auto& [name, v] : l.items()) {
    if (name != "latency_us" && name != "gbps") {
      return bad(origin, fmt::format("links.{}: unknown key '{}' (latency_us, gbps)", key, name));
    }
    if (!v.is_number()) return bad(origin, fmt::format("links.{}.{} must be a number", key, name));
  }
  out->latencyUs = l.value("latency_us", 0.0);
  out->gbps = l.value("gbps", 0.0);
  if (out->latencyUs < 0 || (l.contains("gbps") && !(out->gbps > 0))) {
    return bad(origin, fmt::format("links.{}: latency_us must be >= 0 and gbps > 0", key));
  }
  return Status::ok();
}

Status parseTopologyJson(const std::string& text, const std::string& origin, int nranks,
                         NodeMap* out);

}  // namespace

Status parseTopology(const std::string& text, const std::string& origin, int nranks, NodeMap* out) {
  // A value of the wrong type ("ranks_per_node": "x", a node "name" that is a number) throws
  // from the JSON library where a check did not foresee it: said as the file's error too.
  try {
    return parseTopologyJson(text, origin, nranks, out);
  } catch (const nlohmann::json::exception& e) {
    return bad(origin, fmt::format("a value of the wrong type ({})", e.what()));
  }
}

namespace {

Status parseTopologyJson(const std::string& text, const std::string& origin, int nranks,
                         NodeMap* out) {
  json j;
  try {
    j = json::parse(text, nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    // Where the parser stopped (a truncated or hand-edited file), not just that it did.
    return bad(origin, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) return bad(origin, "not a JSON object");
  for (const auto& [key, v] : j.items()) {
    if (key != "nodes" && key != "ranks_per_node" && key != "rails" && key != "links") {
      return bad(origin,
                 fmt::format("unknown key '{}' (nodes, ranks_per_node, rails, links)", key));
    }
  }
  if (j.contains("links") && !j.at("links").is_object()) {
    return bad(origin, "\"links\" must be an object");
  }
  // Counts and ranks are whole numbers in a range a job can have (no 2.7, no 2^32 read as 0,
  // no product that overflows).
  constexpr int64_t kMaxRanks = 1 << 24;
  auto whole = [](const json& v, int64_t lo, int64_t hi) {
    return v.is_number_integer() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  };
  if (j.contains("ranks_per_node") && !whole(j.at("ranks_per_node"), 1, kMaxRanks)) {
    return bad(origin, "\"ranks_per_node\" must be a whole number >= 1");
  }
  NodeMap m;
  const json nodes = j.value("nodes", json());
  if (nodes.is_number() && !whole(nodes, 1, kMaxRanks)) {
    return bad(origin, "\"nodes\" must be a whole number >= 1 (or a list)");
  }
  if (nranks <= 0) {  // infer the job size from the file
    nranks = 0;
    if (nodes.is_number_integer()) {
      const int64_t total = nodes.get<int64_t>() * j.value("ranks_per_node", int64_t{0});
      if (total > kMaxRanks) return bad(origin, fmt::format("declares {} ranks", total));
      nranks = static_cast<int>(total);
    }
    if (nodes.is_array()) {
      for (const json& e : nodes) {
        if (e.is_object() && e.contains("ranks") && e.at("ranks").is_array()) {
          nranks += static_cast<int>(e.at("ranks").size());
        }
      }
    }
    if (nranks <= 0) return bad(origin, "declares no ranks");
  }
  m.nodeOf.assign(static_cast<size_t>(nranks), -1);
  if (nodes.is_number_integer()) {
    const int64_t count = nodes.get<int64_t>();
    const int64_t per = j.value("ranks_per_node", int64_t{0});
    if (count < 1 || per < 1) return bad(origin, "\"nodes\" and \"ranks_per_node\" must be >= 1");
    if (count * per != nranks) {
      return bad(origin,
                 fmt::format("{} nodes x {} ranks is not the job's {} ranks", count, per, nranks));
    }
    for (int64_t n = 0; n < count; ++n) {
      m.names.push_back(fmt::format("node{}", n));
      m.ranks.emplace_back();
      for (int64_t i = 0; i < per; ++i) m.ranks.back().push_back(static_cast<int>(n * per + i));
    }
  } else if (nodes.is_array() && !nodes.empty()) {
    std::set<std::string> names;
    for (size_t n = 0; n < nodes.size(); ++n) {
      const json& e = nodes[n];
      if (!e.is_object() || !e.contains("ranks") || !e.at("ranks").is_array()) {
        return bad(origin, fmt::format("nodes[{}] needs a \"ranks\" array", n));
      }
      std::string name = e.value("name", fmt::format("node{}", n));
      if (!names.insert(name).second) return bad(origin, fmt::format("node '{}' twice", name));
      m.names.push_back(name);
      m.ranks.emplace_back();
      for (const json& r : e.at("ranks")) {
        if (!whole(r, 0, kMaxRanks)) return bad(origin, fmt::format("node '{}': bad rank", name));
        m.ranks.back().push_back(r.get<int>());
      }
      std::sort(m.ranks.back().begin(), m.ranks.back().end());
    }
  } else {
    return bad(origin, "\"nodes\" must be a count or a non-empty array");
  }
  for (size_t n = 0; n < m.ranks.size(); ++n) {
    for (int r : m.ranks[n]) {
      if (r < 0 || r >= nranks) {
        return bad(origin, fmt::format("rank {} is outside the job's {} ranks", r, nranks));
      }
      if (m.nodeOf[r] != -1) return bad(origin, fmt::format("rank {} is in two nodes", r));
      m.nodeOf[r] = static_cast<int>(n);
    }
  }
  for (int r = 0; r < nranks; ++r) {
    if (m.nodeOf[r] == -1) return bad(origin, fmt::format("rank {} is in no node", r));
  }
  const json rails = j.value("rails", json(1));
  if (!whole(rails, 1, 1024)) {
    return bad(origin, "\"rails\" must be an integer >= 1");
  }
  m.rails = rails.get<int>();
  if (j.contains("links")) {
    BRAID_TRY(readLink(j.at("links"), "intra", origin, &m.intra));
    BRAID_TRY(readLink(j.at("links"), "inter", origin, &m.inter));
  }
  *out = std::move(m);
  return Status::ok();
}

}  // namespace

Status loadTopologyFile(const std::string& path, int nranks, NodeMap* out) {
  std::ifstream f(path);
  if (!f) return invalidArgument(fmt::format("BRAID_TOPO_FILE {}: cannot be read", path));
  std::stringstream text;
  text << f.rdbuf();
  return parseTopology(text.str(), path, nranks, out);
}

}  // namespace braid
