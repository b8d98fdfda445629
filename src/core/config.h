// The one typed configuration table. Each row: member, type, default, environment variable, help.
// Precedence: value set in code > BRAID_* environment variable > default. The environment is read
// once, when a communicator is created (Config::fromEnv), never from background threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "src/core/status.h"

namespace braid {

#define BRAID_CONFIG_TABLE(X)                                                                     \
  X(timeoutMs, int64_t, 300000, "BRAID_TIMEOUT_MS",                                               \
    "bound on every operation and connection wait, in milliseconds")                              \
  X(transports, std::string, "shm,ib,tcp", "BRAID_TRANSPORTS",                                    \
    "transports allowed between ranks (shm, ib, tcp); each peer gets the most local one that "    \
    "reaches it: shm within a node, else the first usable of the others (ib needs an active "     \
    "RDMA port on both ranks)")                                                                   \
  X(socketIfname, std::string, "", "BRAID_SOCKET_IFNAME",                                         \
    "NIC prefixes to use (comma list, '^' excludes, '=' exact), like NCCL_SOCKET_IFNAME")         \
  X(socketFamily, std::string, "", "BRAID_SOCKET_FAMILY", "force AF_INET or AF_INET6")            \
  X(rails, std::string, "auto", "BRAID_RAILS",                                                    \
    "the node's rail interfaces in order (e.g. eth1,eth2): local rank i sends on rail i mod R; "  \
    "auto: hwloc's NICs by NUMA node when there are 2 or more; none: one interface for all "      \
    "(BRAID_SOCKET_IFNAME, if set, wins for its rank); a rail without link at the start "         \
    "starts dead and joins when it comes up")                                                     \
  X(tcpSocketsPerPeer, int64_t, 1, "BRAID_TCP_SOCKETS_PER_PEER",                                  \
    "TCP connections (flows, distinct source ports for ECMP) per pair of NICs to each peer; "     \
    "more spreads over ECMP fabrics, 1 loses least to TCP's own dynamics on rails")               \
  X(multirail, std::string, "auto", "BRAID_MULTIRAIL",                                            \
    "spray: chunks go over every NIC's paths; failover: the rank's own rail carries them, the "   \
    "other NICs stand by; off: the own rail only, even when it fails (the other NICs stay "       \
    "connected for peers that send on theirs); auto: spray with one rank per node, else "         \
    "failover")                                                                                   \
  X(pathTimeoutMs, int64_t, 500, "BRAID_PATH_TIMEOUT_MS",                                         \
    "a path with unacknowledged data and no progress for this long is declared dead and its "     \
    "chunks are re-sent on the other paths")                                                      \
  X(peerGoneMs, int64_t, 3000, "BRAID_PEER_GONE_MS",                                              \
    "a peer whose every path is down and that refuses connections on them for this long is "      \
    "taken for gone (its process died): calls with it fail at once, naming it; shorter "          \
    "refusals (a firewall rejecting for a while) are waited out like a cut, up to "               \
    "BRAID_TIMEOUT_MS")                                                                           \
  X(pathRehash, int64_t, 1, "BRAID_PATH_REHASH",                                                  \
    "1: a flow that carries clearly less than its siblings (same NIC pair) while data waits for " \
    "it is moved to a new source port, which ECMP hashes afresh (as PLB); 0: flows stay put")     \
  X(pathChunkBytes, int64_t, 1 << 20, "BRAID_PATH_CHUNK_BYTES",                                   \
    "largest chunk the multipath layer puts on one path (messages are cut into chunks)")          \
  X(fault, std::string, "", "BRAID_FAULT",                                                        \
    "fault injection: kill a path (keys rank, peer, path: number or rand; after_bytes or "        \
    "after_ms; mode=close|blackhole; seed; times), e.g. 'rank=0,path=0,after_bytes=64M' "         \
    "(off by default)")                                                                           \
  X(tcpBufferBytes, int64_t, 4 << 20, "BRAID_TCP_BUFFER_BYTES", "SO_SNDBUF/SO_RCVBUF size")       \
  X(tcpCongestion, std::string, "auto", "BRAID_TCP_CONGESTION",                                   \
    "TCP congestion control of the data connections: a name (e.g. cubic, dctcp), system (the "    \
    "kernel's default) or auto (the kernel's default, but cubic instead of bbr, whose "           \
    "periodic ProbeRTT and loss-blind pacing cost long bulk flows on shallow-buffered fabrics)")  \
  X(tcpRtoMinUs, int64_t, 10000, "BRAID_TCP_RTO_MIN_US",                                          \
    "minimum TCP retransmission timeout of the data connections, microseconds (TCP_RTO_MIN_US, "  \
    "Linux 6.15+; the kernel's is 200 ms, which a lost tail segment costs a whole message); 0: "  \
    "the kernel's")                                                                               \
  X(ibHca, std::string, "", "BRAID_IB_HCA",                                                       \
    "RDMA devices/ports to use, e.g. 'mlx5_0:1,mlx5_1' ('^' excludes, '=' exact names; empty: "   \
    "every active port)")                                                                         \
  X(ibGidIndex, int64_t, -1, "BRAID_IB_GID_INDEX",                                                \
    "GID table index to use (-1: chosen by type, RoCEv2 first, and address family)")              \
  X(ibQpsPerPeer, int64_t, 1, "BRAID_IB_QPS_PER_PEER",                                            \
    "RC queue pairs (paths, distinct RoCEv2 source ports for ECMP) per pair of ports to each "    \
    "peer")                                                                                       \
  X(ibTimeout, int64_t, 18, "BRAID_IB_TIMEOUT",                                                   \
    "RC ack timeout exponent: 4.096 us x 2^value (18: ~1 s; emulated RoCE needs >= 18)")          \
  X(ibRetryCnt, int64_t, 7, "BRAID_IB_RETRY_CNT", "RC transport retries before a QP fails")       \
  X(ibRnrRetry, int64_t, 7, "BRAID_IB_RNR_RETRY",                                                 \
    "RC retries when the receiver has no receive posted (7: without limit)")                      \
  X(ibTc, int64_t, 0, "BRAID_IB_TC", "traffic class (RoCE: DSCP << 2 | ECN) of every QP")         \
  X(ibSl, int64_t, 0, "BRAID_IB_SL", "service level of every QP")                                 \
  X(ibSlots, int64_t, 8, "BRAID_IB_SLOTS", "receive slots per path (chunks in flight on one QP)") \
  X(ibSlotBytes, int64_t, 256 << 10, "BRAID_IB_SLOT_BYTES",                                       \
    "bytes of one slot: the largest chunk one RDMA write carries (40 of them are its header)")    \
  X(spinUs, int64_t, 200, "BRAID_SPIN_US",                                                        \
    "microseconds a waiting call polls the network itself without progress before it sleeps "     \
    "and leaves progress to the communicator's thread (0: sleep at once)")                        \
  X(eagerBytes, int64_t, 65536, "BRAID_EAGER_BYTES",                                              \
    "messages up to this size are sent at once; larger ones wait for the receiver")               \
  X(shmRingBytes, int64_t, 1 << 20, "BRAID_SHM_RING_BYTES",                                       \
    "bytes of each direction's ring between two ranks of a node (a power of two)")                \
  X(shmCma, int64_t, 1, "BRAID_SHM_CMA",                                                          \
    "1: messages above BRAID_EAGER_BYTES go in one copy (process_vm_readv) where the kernel "     \
    "permits; 0: always through the ring")                                                        \
  X(shmFastBytes, int64_t, 4096, "BRAID_SHM_FAST_BYTES",                                          \
    "collectives whose per-rank message is at most this size, on a communicator whose ranks "     \
    "all share memory, go through per-pair mailboxes in one exchange (0: never; at most 65536; "  \
    "the same on every rank)")                                                                    \
  X(chunkBytes, int64_t, 0, "BRAID_CHUNK_BYTES",                                                  \
    "pipeline chunk size of algorithms (0: the cost model's, 1 MiB when shared memory carries "   \
    "every step, else 4 MiB)")                                                                    \
  X(topoFile, std::string, "", "BRAID_TOPO_FILE",                                                 \
    "JSON file declaring the nodes (virtual ones too), rails and link rates of the job")          \
  X(algo, std::string, "", "BRAID_ALGO",                                                          \
    "force algorithms, e.g. 'allreduce=ring,broadcast=chain' or 'ring' for all that have it")     \
  X(smallAllgatherBytes, int64_t, 16384, "BRAID_SMALL_ALLGATHER_BYTES",                           \
    "allgather of at most this many bytes in total uses Bruck (log2 n steps), larger the ring")   \
  X(chainMinBytes, int64_t, 262144, "BRAID_CHAIN_MIN_BYTES",                                      \
    "broadcast/reduce at least this size use the pipelined chain, smaller the binomial tree")     \
  X(alltoallWindow, int64_t, 4, "BRAID_ALLTOALL_WINDOW",                                          \
    "pairwise all-to-all steps in flight at once")                                                \
  X(logLevel, std::string, "WARN", "BRAID_LOG_LEVEL",                                             \
    "NONE, ERROR, WARN, INFO, DEBUG or TRACE (any case)")                                         \
  X(logSubsys, std::string, "ALL", "BRAID_LOG_SUBSYS",                                            \
    "subsystems to log: INIT,BOOT,NET,SHM,IB,CUDA,COLL,PATH,ALL; '^' excludes")                   \
  X(logFile, std::string, "", "BRAID_LOG_FILE",                                                   \
    "log file (%h host, %p pid, %r rank: before the communicator knows it, the launcher's, "      \
    "else p and the pid)")

struct Config {
#define BRAID_CONFIG_MEMBER(name, type, def, env, help) type name = def;
  BRAID_CONFIG_TABLE(BRAID_CONFIG_MEMBER)
#undef BRAID_CONFIG_MEMBER

  // Defaults overridden by the BRAID_* environment; a malformed value is an error naming it.
  static Status fromEnv(Config* out);
};

// "a,b,,c" -> {"a", "b", "c"}: the comma lists of BRAID_* values (empty items dropped).
std::vector<std::string> splitList(std::string_view text, char sep = ',');
// Logs (once per process) each BRAID_* variable that is neither a setting nor a launch
// variable, naming the closest setting: a misspelt one would be ignored without a word.
void warnUnknownVariables();

struct ConfigEntry {
  const char* env;
  const char* type;
  std::string defaultValue;
  std::string currentValue;  // as read from the environment now (or the default)
  const char* help;
};
// Lists every row of the table (for braid-info and docs).
void forEachConfigEntry(const std::function<void(const ConfigEntry&)>& fn);

}  // namespace braid
