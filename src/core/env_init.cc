// braidCommInitFromEnv: rank, size and rendezvous from whichever launcher started us.
#include "src/core/env_init.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "src/bootstrap/auth.h"
#include "src/bootstrap/rendezvous.h"
#include "src/bootstrap/socket_util.h"
#include "src/bootstrap/unique_id.h"
#include "src/core/api_guard.h"
#include "src/core/handles.h"
#include "src/core/log.h"

namespace braid {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

Status parseInt(const char* name, const char* text, int* out) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (*end != '\0' || v < 0 || v > (1 << 30)) {
    return invalidArgument(fmt::format("{}='{}' is not a valid non-negative integer", name, text));
  }
  *out = static_cast<int>(v);
  return Status::ok();
}

struct Launch {
  int rank = -1, size = -1;
  std::string source;  // which launcher's variables were used
};

Status findRankAndSize(Launch* l) {
  static const struct {
    const char* rank;
    const char* size;
    const char* source;
  } kVars[] = {{"BRAID_RANK", "BRAID_WORLD_SIZE", "braid"},
               {"RANK", "WORLD_SIZE", "torchrun"},
               {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
               {"PMI_RANK", "PMI_SIZE", "PMI"},
               {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"}};
  for (const auto& v : kVars) {
    const char* r = env(v.rank);
    const char* s = env(v.size);
    if (r == nullptr && s == nullptr) continue;
    if (r == nullptr || s == nullptr) {
      return invalidArgument(
          fmt::format("{} is set but {} is not", r ? v.rank : v.size, r ? v.size : v.rank));
    }
    BRAID_TRY(parseInt(v.rank, r, &l->rank));
    BRAID_TRY(parseInt(v.size, s, &l->size));
    if (l->size < 1 || l->rank >= l->size) {
      return invalidArgument(
          fmt::format("{}={} is out of range for {}={}", v.rank, l->rank, v.size, l->size));
    }
    l->source = v.source;
    // A launcher started this process with its own variables; the ones found first may be
    // left over in the environment (an exported RANK=0 WORLD_SIZE=1 of a one-process run,
    // under mpirun -np 4: four one-rank jobs, each "reducing" only its own data). A launcher
    // started by another (torchrun under mpirun or srun) starts at least as many processes,
    // so a smaller world than an MPI launcher's is such a leftover.
    // (BRAID_RANK/BRAID_WORLD_SIZE are braid's own, set on purpose: a job of some of an MPI
    // launch's processes is one of several.)
    for (const auto& outer : kVars) {
      const std::string mpi = outer.source;
      const char* os = env(outer.size);
      int osize = 0;
      if ((mpi != "Open MPI" && mpi != "PMI") || os == nullptr ||
          !parseInt(outer.size, os, &osize).isOk() || osize <= l->size) {
        continue;
      }
      if (std::string(v.source) == "braid") {
        // Taken, but said: a leftover export makes every process a job of its own.
        LOG_WARN(kBoot,
                 "{}={} {}={}: this process is rank {} of a job of {}, while {}={} (set by {}) "
                 "says the launch has {} processes (BRAID_RANK/BRAID_WORLD_SIZE left over in the "
                 "environment? unset them to use {}'s)",
                 v.rank, r, v.size, s, l->rank, l->size, outer.size, os, outer.source, osize,
                 outer.source);
        break;
      }
      return invalidArgument(fmt::format(
          "braidCommInitFromEnv: {}={} and {}={} say this is rank {} of {}, but {}={} (set by "
          "{}) says the job has {} processes: {} is left over in the environment? (unset it, or "
          "set {} and {} for every rank)",
          v.rank, r, v.size, s, l->rank, l->size, outer.size, os, outer.source, osize, v.size,
          v.rank, v.size));
    }
    return Status::ok();
  }
  // No launcher: a job of one rank, as MPI_Init makes a singleton without mpirun (and as
  // nccl-tests run on one process without MPI). Not when a rendezvous is given: then the rank
  // and size were forgotten (or come from a launcher braid does not know), and a job of one
  // rank per process would each "reduce" only its own data.
  for (const char* v : {"BRAID_ROOT_ADDR", "BRAID_UNIQUE_ID", "BRAID_UNIQUE_ID_FILE", "MASTER_ADDR",
                        "MASTER_PORT"}) {
    if (env(v) != nullptr) {
      return invalidArgument(fmt::format(
          "braidCommInitFromEnv: {} is set but no rank and size: set BRAID_RANK and "
          "BRAID_WORLD_SIZE, or start the program with braidrun, torchrun, mpirun or srun",
          v));
    }
  }
  l->rank = 0;
  l->size = 1;
  l->source = "no launcher";
  LOG_INFO(kBoot,
           "no launcher variables (BRAID_RANK/BRAID_WORLD_SIZE, torchrun, mpirun, srun): a job "
           "of one rank");
  return Status::ok();
}

// BRAID_UNIQUE_ID_FILE. Rank 0 creates a fresh id (its rendezvous root listens before the id
// exists) and puts it in place atomically, readable by this user only: it holds the job
// secret. The other ranks wait for a file whose root answers, so a file left at the same path
// by an earlier job (its root gone) is passed over until rank 0 replaces it. Rank 0 removes
// the file once every rank has joined (removeUniqueIdFile), so normally none is left.
Status writeUniqueIdFile(const std::string& path, std::string* hexOut, braidUniqueId* id) {
  if (braidGetUniqueId(id) != braidSuccess) {
    return systemError(fmt::format("creating a unique id: {}", braidGetLastError(nullptr)));
  }
  char hex[2 * BRAID_UNIQUE_ID_BYTES + 1];
  (void)braidUniqueIdToString(id, hex, sizeof hex);
  *hexOut = hex;
  // A fresh file of a random name beside the target (mkstemp: O_EXCL, mode 0600), never one
  // that someone else created or linked there first: it holds the job's secret.
  std::string tmp = path + ".tmp.XXXXXX";
  const std::string line = *hexOut + "\n";
  Fd f(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!f.valid() || ::write(f.get(), line.data(), line.size()) != ssize_t(line.size())) {
    const int err = errno;
    if (f.valid()) ::unlink(tmp.c_str());
    return systemError(
        fmt::format("cannot write the unique-id file {}: {}", tmp, std::strerror(err)));
  }
  f = Fd();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return systemError(
        fmt::format("cannot create the unique-id file {}: {}", path, std::strerror(err)));
  }
  return Status::ok();
}

// Whether something accepts connections at the root's address (the probe sends nothing: the
// root drops it quietly).
bool rootAnswers(const SockAddr& root, Deadline deadline) {
  Fd fd;
  int err = 0;
  Status s = connectAttempt(root, std::min(deadline, deadlineIn(1000)), nullptr,
                            "the rendezvous root", &fd, &err);
  return s.isOk() && err == 0;
}

// A file someone else could have written (another user, or readable by others) is not taken
// where the path is braid's own choice in a shared directory.
bool ownedPrivately(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_uid == ::getuid() && (st.st_mode & 077) == 0;
}

Status readUniqueIdFile(const std::string& path, const std::string& what, bool ownerOnly,
                        Deadline deadline, braidUniqueId* id, UniqueIdData* d) {
  std::string stale;  // the last id read whose root did not answer
  while (true) {
    std::ifstream f(path);
    std::string hex;
    if (f && (f >> hex) && hex.size() == 2 * BRAID_UNIQUE_ID_BYTES &&
        (!ownerOnly || ownedPrivately(path))) {
      if (braidUniqueIdFromString(hex.c_str(), id) != braidSuccess) {
        return invalidArgument(fmt::format("{} does not hold a unique id", what));
      }
      BRAID_TRY(decodeUniqueId(*id, d));
      if (rootAnswers(d->root, deadline)) return Status::ok();
      if (hex != stale) {
        LOG_INFO(kBoot,
                 "{} names a rendezvous root at {} that does not answer (left by an earlier "
                 "job?): waiting for rank 0 to replace it",
                 what, d->root.toString());
        stale = hex;
      }
    }
    if (Clock::now() >= deadline) {
      if (stale.empty()) {
        return timeoutError(fmt::format("{} did not appear in time (rank 0 writes it)", what));
      }
      return timeoutError(fmt::format(
          "{} names a rendezvous root at {} that does not answer, and rank 0 did not replace "
          "it in time (a file left by an earlier job, and rank 0 of this one not started?)",
          what, d->root.toString()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(stale.empty() ? 50 : 200));
  }
}

// Rank 0, once every rank joined (or init failed): the file goes, unless another job has
// replaced it since.
void removeUniqueIdFile(const std::string& path, const std::string& hex) {
  std::ifstream f(path);
  std::string now;
  if (f && (f >> now) && now == hex) ::unlink(path.c_str());
}

Status parseSecret(const char* text, Secret* secret) {
  if (!fromHex(text, secret->data(), secret->size())) {
    return invalidArgument(
        fmt::format("BRAID_JOB_SECRET must be {} hex digits (128 bits)", 2 * kSecretBytes));
  }
  return Status::ok();
}

Status secretFromEnv(const std::string& rootText, Secret* secret) {
  if (const char* s = env("BRAID_JOB_SECRET")) return parseSecret(s, secret);
  LOG_WARN(kBoot,
           "BRAID_JOB_SECRET is not set: connections prove only that they know the root "
           "address; set a random 32-hex-digit secret on every rank to keep strangers out");
  std::string label = "braid-no-secret:" + rootText;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(label.data()), label.size(), digest);
  std::memcpy(secret->data(), digest, secret->size());
  return Status::ok();
}

// A job whose launcher says that every rank runs on this node, and names the job (Open MPI's
// mpirun on one host, a one-node srun step): its ranks can meet through a file of this user's
// without a rendezvous address. Empty otherwise.
std::string localJobKey(const Launch& l) {
  std::string key;
  if (l.source == "Open MPI") {
    const char* local = env("OMPI_COMM_WORLD_LOCAL_SIZE");
    const char* job =
        env("PMIX_NAMESPACE") ? env("PMIX_NAMESPACE") : env("OMPI_MCA_ess_base_jobid");
    if (local != nullptr && job != nullptr && std::to_string(l.size) == local) {
      key = fmt::format("ompi-{}", job);
    }
  } else if (l.source == "Slurm" || (l.source == "PMI" && env("SLURM_JOB_ID") != nullptr)) {
    // (srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE too.)
    const char* nodes =
        env("SLURM_STEP_NUM_NODES") ? env("SLURM_STEP_NUM_NODES") : env("SLURM_NNODES");
    const char* job = env("SLURM_JOB_ID");
    const char* step = env("SLURM_STEP_ID");
    if (nodes != nullptr && std::string(nodes) == "1" && job != nullptr) {
      key = fmt::format("slurm-{}.{}", job, step ? step : "0");
    }
  }
  for (char& ch : key) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-') ch = '_';
  }
  return key;
}

// How this process would join its job, decided from the environment alone (no side effects):
// braid-info shows it, initFromEnv acts on it.
enum class Meet { kAlone, kUniqueId, kIdFile, kRootAddr };
struct Plan {
  Launch l;
  Meet meet = Meet::kAlone;
  std::string idFile, what;  // kIdFile: the path, and how messages name it
  bool ownerOnly = false;    // kIdFile: braid chose the path (a shared directory)
  std::string rootText;      // kRootAddr
};

// BRAID_UNIQUE_ID (braidrun's), decoded.
Status uniqueIdFromEnv(UniqueIdData* d) {
  braidUniqueId id;
  if (braidUniqueIdFromString(env("BRAID_UNIQUE_ID"), &id) != braidSuccess) {
    return invalidArgument(fmt::format("BRAID_UNIQUE_ID: {}", braidGetLastError(nullptr)));
  }
  if (Status s = decodeUniqueId(id, d); !s.isOk()) {
    return Status(s.code(), fmt::format("BRAID_UNIQUE_ID: {}", s.message()));
  }
  return Status::ok();
}

Status planLaunch(Plan* p) {
  Launch& l = p->l;
  BRAID_TRY(findRankAndSize(&l));
  const std::string jobKey = localJobKey(l);
  if (l.size == 1) {
    // One rank meets no one: its rendezvous is its own, on loopback, whatever address a
    // launcher gave (torchrun's MASTER_PORT+1 may be taken; a root on the network is not
    // needed). A malformed secret is still refused, as with more ranks: the same launch
    // script must not work with one rank and fail with two.
    Secret unused;
    if (const char* s = env("BRAID_JOB_SECRET")) BRAID_TRY(parseSecret(s, &unused));
    p->meet = Meet::kAlone;
  } else if (env("BRAID_UNIQUE_ID") != nullptr) {
    p->meet = Meet::kUniqueId;
  } else if (env("BRAID_UNIQUE_ID_FILE") != nullptr ||
             (env("BRAID_ROOT_ADDR") == nullptr &&
              (env("MASTER_ADDR") == nullptr || env("MASTER_PORT") == nullptr) &&
              !jobKey.empty())) {
    p->meet = Meet::kIdFile;
    if (const char* path = env("BRAID_UNIQUE_ID_FILE")) {
      p->idFile = path;
      p->what = fmt::format("BRAID_UNIQUE_ID_FILE {}", p->idFile);
    } else {
      const char* tmp = env("TMPDIR");
      p->idFile = fmt::format("{}/braid-{}-{}.id", tmp ? tmp : "/tmp", getuid(), jobKey);
      p->what = fmt::format("the job's id file {}", p->idFile);
      p->ownerOnly = true;
    }
  } else {
    p->meet = Meet::kRootAddr;
    if (const char* root = env("BRAID_ROOT_ADDR")) {
      p->rootText = root;
    } else if (env("MASTER_ADDR") && env("MASTER_PORT")) {
      // torchrun's MASTER_PORT belongs to its own store; braid's root listens on the next port.
      int port = 0;
      BRAID_TRY(parseInt("MASTER_PORT", env("MASTER_PORT"), &port));
      if (port < 1 || port > 65534) {
        return invalidArgument(
            fmt::format("MASTER_PORT={} leaves no port for braid's root: it listens on "
                        "MASTER_PORT+1 (torchrun's "
                        "store has MASTER_PORT), so MASTER_PORT must be in 1..65534",
                        env("MASTER_PORT")));
      }
      std::string host = env("MASTER_ADDR");
      if (host.find(':') != std::string::npos && host[0] != '[') host = "[" + host + "]";
      p->rootText = fmt::format("{}:{}", host, port + 1);
    } else {
      return invalidArgument(fmt::format(
          "braidCommInitFromEnv: rank {} of {} comes from {} variables, but no rendezvous is "
          "given: set BRAID_ROOT_ADDR=host:port (with BRAID_JOB_SECRET), BRAID_UNIQUE_ID, "
          "BRAID_UNIQUE_ID_FILE, or torchrun's MASTER_ADDR/MASTER_PORT (mpirun and srun "
          "need none when every rank runs on one node)",
          l.rank, l.size, l.source));
    }
  }
  return Status::ok();
}

Status initFromEnv(braidComm_t* out) {
  Plan p;
  BRAID_TRY(planLaunch(&p));
  const Launch& l = p.l;
  Config cfg;
  BRAID_TRY(Config::fromEnv(&cfg));
  Deadline deadline = deadlineIn(cfg.timeoutMs);
  UniqueIdData d;
  std::string idHex;  // on rank 0, the id it wrote to the id file
  if (p.meet == Meet::kAlone) {
    BRAID_TRY(SockAddr::parse("127.0.0.1:0", &d.root));
    BRAID_TRY(randomBytes(d.secret.data(), d.secret.size()));
    SockAddr bound;
    BRAID_TRY(startRootServer(d.root, d.secret, cfg.timeoutMs, &bound));
    d.root = bound;
  } else if (p.meet == Meet::kUniqueId) {
    BRAID_TRY(uniqueIdFromEnv(&d));
  } else if (p.meet == Meet::kIdFile) {
    if (p.ownerOnly) {
      LOG_INFO(kBoot,
               "no rendezvous address given; all {} ranks ({}) run on this node: they meet "
               "through {}",
               l.size, l.source, p.idFile);
    }
    braidUniqueId id;
    if (l.rank == 0) {
      BRAID_TRY(writeUniqueIdFile(p.idFile, &idHex, &id));
      BRAID_TRY(decodeUniqueId(id, &d));
    } else {
      BRAID_TRY(readUniqueIdFile(p.idFile, p.what, p.ownerOnly, deadline, &id, &d));
    }
  } else {
    const std::string& rootText = p.rootText;
    BRAID_TRY(SockAddr::parse(rootText, &d.root));
    if (d.root.port() == 0) {
      return invalidArgument(fmt::format(
          "the rendezvous root address {} has port 0: every rank must be given the port rank 0 "
          "listens on",
          rootText));
    }
    BRAID_TRY(secretFromEnv(rootText, &d.secret));
    // The n-th communicator this process makes from the same root address (an elastic restart
    // inside the process: destroy, then init from the same launcher variables) meets the
    // others' n-th under a secret of its own: the root of the first is over, and rank 0 serves
    // a new one on the same port. (The first keeps the plain secret.)
    static std::mutex generationMu;
    static std::map<std::string, uint64_t> generations;
    uint64_t generation = 0;
    {
      std::lock_guard<std::mutex> lock(generationMu);
      generation = generations[rootText]++;
    }
    if (generation > 0) {
      d.secret = deriveSecret(
          d.secret, fmt::format("braid init from the environment, number {}", generation));
      LOG_INFO(kBoot, "init number {} from the root address {} in this process", generation + 1,
               rootText);
    }
    if (l.rank == 0) {
      SockAddr bound, any;
      any.ss.ss_family = d.root.family();
      any.len = d.root.len;
      any.setPort(d.root.port());
      // A name that resolves to loopback here (localhost, or a host name that /etc/hosts maps
      // to 127.0.1.1, as Debian does) may name this host on the network for the other ranks:
      // listen on every address then, as torchrun's store does.
      Status s =
          startRootServer(d.root.isLoopback() ? any : d.root, d.secret, cfg.timeoutMs, &bound);
      if (!s.isOk() && !d.root.isLoopback()) {
        // The address may name this host in a way we cannot bind (NAT, alias): try any.
        if (startRootServer(any, d.secret, cfg.timeoutMs, &bound).isOk()) s = Status::ok();
      }
      BRAID_TRY(s);
    }
  }
  // A BRAID_UNIQUE_ID (braidrun's) makes one communicator: its root is gone once every rank
  // joined, so a second init from it would only retry a refused connection until the timeout.
  static std::mutex usedMu;
  static std::set<std::string> usedIds;
  const std::string envId =
      p.meet == Meet::kUniqueId && env("BRAID_UNIQUE_ID") ? env("BRAID_UNIQUE_ID") : "";
  if (!envId.empty()) {
    std::lock_guard<std::mutex> lock(usedMu);
    if (usedIds.count(envId) != 0) {
      return invalidUsage(
          "braidCommInitFromEnv: this process already made a communicator from its "
          "BRAID_UNIQUE_ID (set by braidrun), and a unique id makes one communicator, as in "
          "NCCL: for more, split the first (braidCommSplit) or pass a new id from "
          "braidGetUniqueId over it (braidBroadcast) to braidCommInitRank");
    }
  }
  std::shared_ptr<Comm> c;
  Status joined = Comm::initFromRoot(l.size, l.rank, d.root, d.secret, cfg, &c);
  if (!idHex.empty()) removeUniqueIdFile(p.idFile, idHex);
  BRAID_TRY(joined);
  if (!envId.empty()) {
    std::lock_guard<std::mutex> lock(usedMu);
    usedIds.insert(envId);
  }
  *out = makeCommHandle(std::move(c));
  return Status::ok();
}

}  // namespace

LaunchDescription describeLaunch() {
  LaunchDescription out;
  Plan p;
  Status s = planLaunch(&p);
  out.launcher = p.l.source;
  out.rank = p.l.rank;
  out.size = p.l.size;
  if (!s.isOk()) {
    out.error = s.message();
    return out;
  }
  switch (p.meet) {
    case Meet::kAlone:
      out.rendezvous = "none: a job of one rank";
      break;
    case Meet::kUniqueId: {
      UniqueIdData d;
      if (Status ds = uniqueIdFromEnv(&d); !ds.isOk()) {
        out.error = ds.message();
        return out;
      }
      out.rendezvous = fmt::format("BRAID_UNIQUE_ID: root at {}", d.root.toString());
      break;
    }
    case Meet::kIdFile:
      out.rendezvous = fmt::format("{}{}", p.what, p.ownerOnly ? " (every rank on this node)" : "");
      break;
    case Meet::kRootAddr:
      out.rendezvous =
          fmt::format("root at {}{}, {}", p.rootText, p.l.rank == 0 ? " (this rank hosts it)" : "",
                      env("BRAID_JOB_SECRET") ? "BRAID_JOB_SECRET set" : "no BRAID_JOB_SECRET");
      break;
  }
  out.ok = true;
  return out;
}

}  // namespace braid

extern "C" braidResult_t braidCommInitFromEnv(braidComm_t* comm) {
  return braid::guard(nullptr, [&]() -> braid::Status {
    if (comm == nullptr) return braid::invalidArgument("comm (the output pointer) is NULL");
    *comm = nullptr;
    return braid::initFromEnv(comm);
  });
}
