// braidrun: starts N local ranks of a program with the environment braidCommInitFromEnv reads.
//
//   braidrun -np N [--env K=V]... [--timeout S] [--kill-grace S] [--no-prefix] prog args...
//
// The braidrun process creates the unique id, so it hosts the rendezvous root (a background thread
// of the library). Every rank runs in its own process group, so that signals reach the whole rank
// (including the processes it started) and a terminal's Ctrl-C reaches braidrun only, which
// forwards it once. Each rank's stdout/stderr go through pipes and come out line by line with a
// "[rank] " prefix. When a rank fails, the others get SIGTERM and, after --kill-grace seconds,
// SIGKILL; braidrun then exits with the failing rank's code (128+signal when it was killed).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "braid/braid.h"

extern char** environ;

namespace braid {
namespace {

// Whether process group pg still holds a process of this session: a rank's leftovers, not a
// group that took the number since the rank's processes went (a rank's group is in
// braidrun's session: setpgid keeps it).
bool groupInSession(pid_t pg) {
  const pid_t sid = ::getsid(0);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0, pgrp = 0, session = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %ld %ld %ld", &state, &ppid, &pgrp, &session) ==
            4 &&
        pgrp == pg && session == sid) {
      return true;
    }
  }
  return false;
}

using Clock = std::chrono::steady_clock;

// Exit codes of braidrun itself (a failing rank's own code is passed through).
constexpr int kExitLaunchError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTimeout = 124;
constexpr int kExitCannotExec = 127;

// A partial line longer than this is written out without waiting for its newline (a bound on
// the memory a rank's output may hold; lines of JSON or a table of a few MiB stay whole).
constexpr size_t kMaxLineBytes = 4 << 20;
// After the last rank exited, output still in flight (from processes the ranks left behind) is
// read for at most this long.
constexpr auto kDrainTime = std::chrono::seconds(2);

const char* const kManagedVars[] = {"BRAID_UNIQUE_ID", "BRAID_RANK", "BRAID_WORLD_SIZE",
                                    "BRAID_LOCAL_RANK", "BRAID_LOCAL_SIZE"};

struct Options {
  int np = 0;
  std::vector<std::string> env;
  double timeoutS = 0;
  double killGraceS = 5;
  bool noPrefix = false;
  std::vector<std::string> command;
};

void say(const std::string& msg) { std::fprintf(stderr, "braidrun: %s\n", msg.c_str()); }

// The open-file limit as braidrun found it: each rank gets it back (the library raises its own
// where it needs to), while braidrun keeps two pipes per rank and the rendezvous root one
// connection per rank, more than Debian's default soft limit of 1024 for a few hundred ranks.
rlimit gFileLimit{};
bool gFileLimitRaised = false;

void raiseFileLimit(size_t want) {
  if (::getrlimit(RLIMIT_NOFILE, &gFileLimit) != 0 || gFileLimit.rlim_cur == RLIM_INFINITY ||
      gFileLimit.rlim_cur >= want) {
    return;
  }
  rlimit raised = gFileLimit;
  raised.rlim_cur =
      raised.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, raised.rlim_max);
  gFileLimitRaised =
      raised.rlim_cur > gFileLimit.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &raised) == 0;
}

std::string fileLimitText(int err) {
  rlimit now{};
  if (err != EMFILE || ::getrlimit(RLIMIT_NOFILE, &now) != 0) return "";
  auto num = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
  };
  return " (open files allowed: " + num(now.rlim_cur) + ", hard limit " + num(now.rlim_max) +
         "; braidrun keeps two per rank and one connection per rank at the rendezvous: raise "
         "ulimit -n)";
}

std::string signalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? "SIG" + std::string(abbrev) : "signal " + std::to_string(sig);
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Writes everything, waiting when fd is non-blocking; output to a closed pipe is dropped.
void writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      (void)::poll(&p, 1, 100);
    } else {
      return;
    }
  }
}

// One of a rank's output streams: the read end of its pipe and the unfinished last line.
struct OutStream {
  int fd = -1;
  int dest = 1;  // braidrun's fd the lines go to
  std::string partial;
};

struct Rank {
  int index = 0;
  pid_t pid = -1;
  bool running = false;
  OutStream out[2];
};

class Launcher {
 public:
  explicit Launcher(const Options& opts) : opts_(opts) {}
  int run(const std::string& uniqueId, const sigset_t& childMask, int sigFd);

 private:
  bool spawn(Rank& r, const std::string& uniqueId, const sigset_t& childMask, int devNull);
  void emit(Rank& r, OutStream& s, bool final);
  void readStream(Rank& r, OutStream& s);
  void drainRank(Rank& r);
  void reapChildren();
  void onRankExit(Rank& r, int status);
  void signalRanks(int sig);
  void beginShutdown(int exitCode, int sig);
  void handleSignals(int sigFd);
  bool anyRunning() const;
  bool anyOpenStream() const;

  const Options& opts_;
  std::vector<Rank> ranks_;
  Clock::time_point start_;
  std::optional<int> exitCode_;                // set when the job is being shut down
  std::optional<Clock::time_point> killTime_;  // when surviving ranks get SIGKILL
  bool killed_ = false;
};

bool Launcher::anyRunning() const {
  return std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
}

bool Launcher::anyOpenStream() const {
  return std::any_of(ranks_.begin(), ranks_.end(),
                     [](const Rank& r) { return r.out[0].fd >= 0 || r.out[1].fd >= 0; });
}

// Writes the complete lines buffered in s (and, when final or overlong, the partial one).
void Launcher::emit(Rank& r, OutStream& s, bool final) {
  const std::string prefix = opts_.noPrefix ? "" : "[" + std::to_string(r.index) + "] ";
  std::string text;
  size_t begin = 0;
  while (begin < s.partial.size()) {
    // A line ends at '\n', or at '\r' (progress bars redraw their line: each state goes out
    // at once), "\r\n" being one end.
    size_t nl = s.partial.find_first_of("\n\r", begin);
    if (nl != std::string::npos && s.partial[nl] == '\r') {
      if (nl + 1 < s.partial.size()) {
        if (s.partial[nl + 1] == '\n') ++nl;
      } else if (!final) {
        nl = std::string::npos;  // its '\n' may come with the next read
      }
    }
    if (nl == std::string::npos) {
      if (!final && s.partial.size() - begin < kMaxLineBytes) break;
      text += prefix;
      text.append(s.partial, begin, std::string::npos);
      // With prefixes the piece ends as a line of its own; without, the bytes go unchanged.
      if (!opts_.noPrefix) text += '\n';
      begin = s.partial.size();
      break;
    }
    text += prefix;
    text.append(s.partial, begin, nl + 1 - begin);
    begin = nl + 1;
  }
  s.partial.erase(0, begin);
  writeAll(s.dest, text);
}

void Launcher::readStream(Rank& r, OutStream& s) {
  char buf[65536];
  while (s.fd >= 0) {
    ssize_t n = ::read(s.fd, buf, sizeof buf);
    if (n > 0) {
      s.partial.append(buf, static_cast<size_t>(n));
      emit(r, s, false);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    // EOF (or an error): flush the unfinished line and stop reading.
    emit(r, s, true);
    ::close(s.fd);
    s.fd = -1;
  }
}

// Prints what a rank wrote before it exited, so that it comes before braidrun's message about it.
void Launcher::drainRank(Rank& r) {
  for (OutStream& s : r.out) readStream(r, s);
}

void Launcher::signalRanks(int sig) {
  for (Rank& r : ranks_) {
    if (r.running) (void)::kill(-r.pid, sig);  // the rank's process group
  }
}

// The first reason to stop wins: it decides braidrun's exit code.
void Launcher::beginShutdown(int exitCode, int sig) {
  if (!exitCode_) exitCode_ = exitCode;
  signalRanks(sig);
  if (!killTime_) killTime_ = Clock::now() + seconds(opts_.killGraceS);
}

void Launcher::onRankExit(Rank& r, int status) {
  r.running = false;
  drainRank(r);
  bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  // The rank's own children share its process group: take them down with a failed rank or job.
  if (!ok || exitCode_) (void)::kill(-r.pid, SIGKILL);
  if (ok || exitCode_) return;  // after the first failure, the rest die of our signals
  int code;
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
    say("rank " + std::to_string(r.index) + " exited with code " + std::to_string(code));
  } else {
    int sig = WTERMSIG(status);
    code = 128 + sig;
    say("rank " + std::to_string(r.index) + " killed by signal " + std::to_string(sig) + " (" +
        signalName(sig) + ")");
  }
  if (anyRunning()) say("terminating the other ranks");
  beginShutdown(code, SIGTERM);
}

void Launcher::reapChildren() {
  while (true) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;
    for (Rank& r : ranks_) {
      if (r.running && r.pid == pid) onRankExit(r, status);
    }
  }
}

void Launcher::handleSignals(int sigFd) {
  signalfd_siginfo info;
  while (::read(sigFd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) {
      reapChildren();
    } else if (sig == SIGUSR1 || sig == SIGUSR2) {
      signalRanks(sig);
    } else {
      if (!exitCode_) say("got " + signalName(sig) + ", forwarding it to the ranks");
      beginShutdown(128 + sig, sig);
    }
  }
}

bool Launcher::spawn(Rank& r, const std::string& uniqueId, const sigset_t& childMask, int devNull) {
  // Everything the child needs is prepared here: after fork() in this multithreaded process the
  // child may only make async-signal-safe calls.
  std::vector<std::string> envStore;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    std::string_view key = kv.substr(0, kv.find('='));
    bool managed = std::any_of(std::begin(kManagedVars), std::end(kManagedVars),
                               [&](const char* m) { return key == m; });
    if (!managed) envStore.emplace_back(kv);
  }
  const std::string n = std::to_string(opts_.np);
  const std::string i = std::to_string(r.index);
  envStore.push_back("BRAID_UNIQUE_ID=" + uniqueId);
  envStore.push_back("BRAID_RANK=" + i);
  envStore.push_back("BRAID_WORLD_SIZE=" + n);
  envStore.push_back("BRAID_LOCAL_RANK=" + i);
  envStore.push_back("BRAID_LOCAL_SIZE=" + n);
  std::vector<char*> envp;
  for (std::string& s : envStore) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argStore(opts_.command);
  std::vector<char*> argv;
  for (std::string& s : argStore) argv.push_back(s.data());
  argv.push_back(nullptr);

  int outPipe[2] = {-1, -1}, errPipe[2] = {-1, -1}, execPipe[2] = {-1, -1};
  if (::pipe2(outPipe, O_CLOEXEC) != 0 || ::pipe2(errPipe, O_CLOEXEC) != 0 ||
      ::pipe2(execPipe, O_CLOEXEC) != 0) {
    const int err = errno;
    for (int fd : {outPipe[0], outPipe[1], errPipe[0], errPipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    say("cannot create the pipes of rank " + std::to_string(r.index) + ": " + std::strerror(err) +
        fileLimitText(err));
    return false;
  }
  // Only rank 0 reads braidrun's stdin, and only when it is not a terminal (a rank is not in the
  // terminal's foreground process group, so reading it would stop the rank).
  bool keepStdin = r.index == 0 && !::isatty(0);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(kExitLaunchError);  // braidrun died already
    if (!keepStdin) ::dup2(devNull, 0);
    ::dup2(outPipe[1], 1);
    ::dup2(errPipe[1], 2);
    ::signal(SIGPIPE, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &childMask, nullptr);
    if (gFileLimitRaised) ::setrlimit(RLIMIT_NOFILE, &gFileLimit);
    environ = envp.data();
    ::execvp(argv[0], argv.data());
    int err = errno;
    (void)!::write(execPipe[1], &err, sizeof err);
    ::_exit(kExitCannotExec);
  }
  int forkErr = errno;
  for (int fd : {outPipe[1], errPipe[1], execPipe[1]}) ::close(fd);
  if (pid < 0) {
    for (int fd : {outPipe[0], errPipe[0], execPipe[0]}) ::close(fd);
    say("fork failed: " + std::string(std::strerror(forkErr)));
    return false;
  }
  ::setpgid(pid, pid);  // also here, so that no signal sent right away can miss the group
  r.pid = pid;
  r.running = true;
  r.out[0] = OutStream{outPipe[0], 1, {}};
  r.out[1] = OutStream{errPipe[0], 2, {}};
  for (OutStream& s : r.out) ::fcntl(s.fd, F_SETFL, ::fcntl(s.fd, F_GETFL) | O_NONBLOCK);
  // The exec pipe closes on a successful exec; otherwise it carries the exec errno.
  int err = 0;
  ssize_t got;
  do {
    got = ::read(execPipe[0], &err, sizeof err);
  } while (got < 0 && errno == EINTR);
  ::close(execPipe[0]);
  if (got == static_cast<ssize_t>(sizeof err)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.running = false;
    drainRank(r);
    say("cannot execute '" + opts_.command[0] + "': " + std::strerror(err));
    return false;
  }
  return true;
}

int Launcher::run(const std::string& uniqueId, const sigset_t& childMask, int sigFd) {
  start_ = Clock::now();
  int devNull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devNull < 0) {
    say("cannot open /dev/null: " + std::string(std::strerror(errno)));
    return kExitLaunchError;
  }
  ranks_.resize(static_cast<size_t>(opts_.np));
  for (int i = 0; i < opts_.np; ++i) {
    ranks_[static_cast<size_t>(i)].index = i;
    if (!spawn(ranks_[static_cast<size_t>(i)], uniqueId, childMask, devNull)) {
      ranks_.resize(static_cast<size_t>(i) + 1);
      if (anyRunning()) say("terminating the ranks already started");
      beginShutdown(ranks_.back().pid > 0 ? kExitCannotExec : kExitLaunchError, SIGTERM);
      break;
    }
  }
  ::close(devNull);

  std::optional<Clock::time_point> deadline;
  if (opts_.timeoutS > 0) deadline = start_ + seconds(opts_.timeoutS);
  std::optional<Clock::time_point> drainUntil;
  while (true) {
    Clock::time_point now = Clock::now();
    if (!anyRunning()) {
      if (!drainUntil) drainUntil = now + kDrainTime;
      if (!anyOpenStream() || now >= *drainUntil) break;
    }
    if (deadline && now >= *deadline && !exitCode_ && anyRunning()) {
      char text[64];
      std::snprintf(text, sizeof text, "%g", opts_.timeoutS);
      say(std::string("timeout: the job ran for more than ") + text + " s; terminating the ranks");
      beginShutdown(kExitTimeout, SIGTERM);
    }
    if (killTime_ && now >= *killTime_ && !killed_ && anyRunning()) {
      killed_ = true;
      for (const Rank& r : ranks_) {
        if (!r.running) continue;
        char text[64];
        std::snprintf(text, sizeof text, "%g", opts_.killGraceS);
        say("rank " + std::to_string(r.index) + " still runs " + text +
            " s after it was told to stop; sending SIGKILL");
      }
      signalRanks(SIGKILL);
    }

    // Sleep until output, a signal, or the next deadline.
    std::optional<Clock::time_point> wake = drainUntil;
    auto consider = [&](const std::optional<Clock::time_point>& t, bool active) {
      if (t && active && (!wake || *t < *wake)) wake = t;
    };
    consider(deadline, !exitCode_);
    consider(killTime_, !killed_);
    int timeoutMs = -1;
    if (wake) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*wake - Clock::now()).count();
      timeoutMs = static_cast<int>(std::clamp<int64_t>(left, 0, 1000000));
    }
    std::vector<pollfd> fds{{sigFd, POLLIN, 0}};
    std::vector<std::pair<Rank*, OutStream*>> owners{{nullptr, nullptr}};
    for (Rank& r : ranks_) {
      for (OutStream& s : r.out) {
        if (s.fd < 0) continue;
        fds.push_back({s.fd, POLLIN, 0});
        owners.emplace_back(&r, &s);
      }
    }
    int n = ::poll(fds.data(), fds.size(), timeoutMs);
    if (n < 0 && errno != EINTR) {
      say("poll failed: " + std::string(std::strerror(errno)));
      beginShutdown(kExitLaunchError, SIGKILL);
      continue;
    }
    if (n <= 0) continue;
    for (size_t k = 1; k < fds.size(); ++k) {
      if (fds[k].revents != 0) readStream(*owners[k].first, *owners[k].second);
    }
    if (fds[0].revents != 0) handleSignals(sigFd);
  }
  // Every rank has exited: what its process group still holds (a program it started in the
  // background) is left over from the job, and goes with it, as at the end of an srun step.
  for (const Rank& r : ranks_) {
    if (r.pid > 0 && groupInSession(r.pid) && ::kill(-r.pid, SIGKILL) == 0) {
      say("rank " + std::to_string(r.index) + " left processes running; killed them");
    }
  }
  for (Rank& r : ranks_) {
    for (OutStream& s : r.out) {
      if (s.fd < 0) continue;
      emit(r, s, true);
      ::close(s.fd);
      s.fd = -1;
    }
  }
  return exitCode_.value_or(0);
}

// CLI11 takes only one-letter names after a single dash: "-np" becomes "--np" (before the
// program name only; whatever follows it belongs to the program).
std::vector<std::string> normalizeArgs(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--" || a.empty() || a[0] != '-') break;
    if (a == "-np" || a.rfind("-np=", 0) == 0) a.insert(0, "-");
    if (a == "--np" || a == "-n" || a == "--env" || a == "--timeout" || a == "--kill-grace") {
      ++i;  // skip the value
    }
  }
  return args;
}

// Parses the command line; returns an exit code when braidrun should exit right away.
std::optional<int> parseArgs(int argc, char** argv, Options* opts) {
  CLI::App app{
      "braidrun: starts N local ranks of a program with the environment braidCommInitFromEnv "
      "reads (BRAID_UNIQUE_ID, BRAID_RANK, BRAID_WORLD_SIZE, BRAID_LOCAL_RANK, BRAID_LOCAL_SIZE)",
      "braidrun"};
  app.footer(
      "Usage: braidrun -np N [options] [--] program [args...]\n"
      "Everything after the program name belongs to the program. Each output line of a rank is "
      "prefixed with '[rank] '. When a rank fails, the others are stopped and braidrun exits with "
      "the failing rank's code (128+signal if it was killed); 124 on --timeout.\n");
  app.prefix_command();
  app.add_option("-n,--np", opts->np, "number of ranks (also -np)")
      ->required()
      ->check(CLI::Range(1, 4096));
  app.add_option("--env", opts->env, "set K=V in every rank's environment (repeatable)")
      ->allow_extra_args(false);  // one K=V per --env: the program name must not be taken
  app.add_option("--timeout", opts->timeoutS, "kill the job after this many seconds (0: never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kill-grace", opts->killGraceS,
                 "seconds between SIGTERM and SIGKILL when stopping ranks")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-prefix", opts->noPrefix, "print rank output without the '[rank] ' prefix");
  std::vector<std::string> args = normalizeArgs(argc, argv);
  std::reverse(args.begin(), args.end());  // CLI11 wants them in reverse
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  std::vector<std::string> rest = app.remaining();
  if (!rest.empty() && rest[0] == "--") rest.erase(rest.begin());
  if (rest.empty()) {
    say("no program given; usage: braidrun -np N [options] [--] program [args...]");
    return kExitUsage;
  }
  if (rest[0].size() > 1 && rest[0][0] == '-' && app.remaining()[0] != "--") {
    say("unknown option " + rest[0] + " (see braidrun --help)");
    return kExitUsage;
  }
  opts->command = std::move(rest);
  for (const std::string& kv : opts->env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      say("--env wants KEY=VALUE, got '" + kv + "'");
      return kExitUsage;
    }
    std::string key = kv.substr(0, eq);
    for (const char* m : kManagedVars) {
      if (key == m) {
        say("--env cannot set " + key + ": braidrun sets it for every rank");
        return kExitUsage;
      }
    }
  }
  if (!std::isfinite(opts->timeoutS) || !std::isfinite(opts->killGraceS)) {
    say("--timeout and --kill-grace must be finite");
    return kExitUsage;
  }
  return std::nullopt;
}

// Makes sure fds 0-2 are open, so that no pipe of ours can land on them.
void ensureStdFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      int nul = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
      if (nul >= 0 && nul != fd) {
        ::dup2(nul, fd);
        ::close(nul);
      }
    }
  }
}

int braidrunMain(int argc, char** argv) {
  ensureStdFds();
  Options opts;
  if (std::optional<int> rc = parseArgs(argc, argv, &opts)) return *rc;

  // --env applies to braidrun too: the rendezvous root it hosts reads the same BRAID_* settings.
  for (const std::string& kv : opts.env) {
    size_t eq = kv.find('=');
    ::setenv(kv.substr(0, eq).c_str(), kv.c_str() + eq + 1, 1);
  }

  // The signals are taken through a signalfd, so they must be blocked in every thread: block them
  // before the library starts its rendezvous thread (which inherits the mask).
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGCHLD, SIG_DFL);
  sigset_t handled, childMask;
  sigemptyset(&handled);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&handled, sig);
  if (::sigprocmask(SIG_BLOCK, &handled, &childMask) != 0) {
    say("sigprocmask failed: " + std::string(std::strerror(errno)));
    return kExitLaunchError;
  }
  int sigFd = ::signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigFd < 0) {
    say("signalfd failed: " + std::string(std::strerror(errno)));
    return kExitLaunchError;
  }

  raiseFileLimit(3 * static_cast<size_t>(opts.np) + 64);
  braidUniqueId id;
  char text[2 * BRAID_UNIQUE_ID_BYTES + 1];
  if (braidGetUniqueId(&id) != braidSuccess ||
      braidUniqueIdToString(&id, text, sizeof text) != braidSuccess) {
    say(std::string("cannot create the unique id: ") + braidGetLastError(nullptr));
    return kExitLaunchError;
  }

  Launcher launcher(opts);
  return launcher.run(text, childMask, sigFd);
}

}  // namespace
}  // namespace braid

int main(int argc, char** argv) {
  int rc = braid::braidrunMain(argc, argv);
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  // The library's rendezvous thread may still wait for ranks that never joined (programs that do
  // not use braid): leave without running static destructors under its feet.
  ::_exit(rc);
}
