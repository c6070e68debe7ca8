// Test helpers that run a writer in a forked child: under a file size limit
// (a full disk, for real: write() fails with EFBIG), and killed with SIGKILL
// at random moments while it writes (every file must then be whole); and
// spawn()/wait_for() for a program that a test signals while it runs.
//
// The child only does file I/O on tensors its parent made: no LibTorch
// thread pool is entered after fork().
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace finetune_test {

/// Starts `program` with `args`, its stdout and stderr appended to `log`.
/// Returns its pid; throws std::runtime_error when it cannot start.
inline pid_t spawn(const std::string& program, std::vector<std::string> args,
                   const std::string& log) {
  args.insert(args.begin(), program);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + program);
  return pid;
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice),
/// for a c10d store the test's processes will open.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t size = sizeof(address);
  const bool ok = fd >= 0 &&
                  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw std::runtime_error("cannot find a free port on 127.0.0.1");
  return ntohs(address.sin_port);
}

/// Waits up to `limit` for `pid`; returns its exit status (128 + the signal
/// when a signal ended it), or -1 if it still runs.
inline int wait_for(pid_t pid, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::steady_clock::now() >= until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

/// fork() with a pipe from the child to the parent: returns the child's pid
/// (0 in the child); *fd is the parent's read end, or the child's write end.
inline pid_t fork_with_pipe(int* fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  ::close(fds[pid == 0 ? 0 : 1]);
  *fd = fds[pid == 0 ? 1 : 0];
  return pid;
}

/// Reads one 8-byte acknowledgement from `fd`; false at EOF or after
/// timeout_ms.
inline bool read_ack(int fd, int64_t* value, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  size_t got = 0;
  char* out = reinterpret_cast<char*>(value);
  while (got < sizeof(int64_t)) {
    const ssize_t n = ::read(fd, out + got, sizeof(int64_t) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

/// Runs f() in a forked child whose files may not grow beyond `limit` bytes
/// (RLIMIT_FSIZE, SIGXFSZ ignored: a write past the limit fails with EFBIG,
/// as one fails with ENOSPC on a full disk). Returns the what() of the
/// exception f() threw, or "<no exception>".
inline std::string what_under_file_size_limit(rlim_t limit, const std::function<void()>& f) {
  int fd = -1;
  const pid_t pid = fork_with_pipe(&fd);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit rl{limit, limit};
    if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) ::_exit(3);
    std::string what = "<no exception>";
    try {
      f();
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "<an exception not derived from std::exception>";
    }
    const char* data = what.data();
    size_t left = what.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, data, left);
      if (n <= 0) ::_exit(4);
      data += n;
      left -= static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  std::string what;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    what.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("the child under a file size limit did not finish cleanly (status " +
                             std::to_string(status) + ")");
  }
  return what;
}

/// What kill_while_writing saw.
struct KillReport {
  int kills = 0;                      ///< children killed
  int mid_write = 0;                  ///< kills that left a temporary file: inside a write
  int64_t acknowledged = 0;           ///< complete writes reported by the children
  std::vector<std::string> failures;  ///< one line per file found torn or stale
};

/// For `seconds` (and at least `min_kills` times): forks a child that calls
/// write(k) for k = first, first + 1, ..., telling the parent after each
/// complete call; after its first one, waits a random 0 to `max_delay_us`
/// microseconds and kills it with SIGKILL. Then each of `files` must hold a
/// whole version: version_of(file) returns the k whose contents the file
/// holds exactly, or -1 (torn, short, mixed, unreadable); it must be the last
/// acknowledged k, or the next (renamed into place, not yet acknowledged).
/// Temporary files `<file name>.tmp-*` left by kills are counted and removed.
inline KillReport kill_while_writing(const std::string& folder,
                                     const std::vector<std::string>& files,
                                     const std::function<void(int64_t)>& write,
                                     const std::function<int64_t(const std::string&)>& version_of,
                                     double seconds, int min_kills, int max_delay_us,
                                     unsigned seed) {
  KillReport report;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_us(0, max_delay_us);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
  while (report.kills < min_kills || std::chrono::steady_clock::now() < deadline) {
    const int64_t first = static_cast<int64_t>(report.kills + 1) * 1000000;
    int fd = -1;
    const pid_t pid = fork_with_pipe(&fd);
    if (pid == 0) {
      for (int64_t k = first;; ++k) {
        try {
          write(k);
        } catch (...) {
          ::_exit(2);
        }
        if (::write(fd, &k, sizeof(k)) != static_cast<ssize_t>(sizeof(k))) ::_exit(3);
      }
    }
    int64_t last = -1, value = 0;
    const bool started = read_ack(fd, &value, 60000);
    if (started) last = value;
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    while (read_ack(fd, &value, 5000)) last = value;  // to EOF: the child is gone
    ::close(fd);
    ++report.kills;
    if (!started || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      report.failures.push_back("kill " + std::to_string(report.kills) +
                                ": the child did not write, or ended by itself (status " +
                                std::to_string(status) + ")");
      break;
    }
    report.acknowledged += last - first + 1;
    for (const auto& file : files) {
      const int64_t v = version_of(file);
      if (v != last && v != last + 1) {
        report.failures.push_back("kill " + std::to_string(report.kills) + ": " + file +
                                  " holds version " + std::to_string(v) +
                                  " (-1: torn), last acknowledged " + std::to_string(last));
      }
    }
    std::vector<std::filesystem::path> temporaries;
    for (const auto& entry : std::filesystem::directory_iterator(folder)) {
      const std::string name = entry.path().filename().string();
      for (const auto& file : files) {
        const std::string prefix = std::filesystem::path(file).filename().string() + ".tmp-";
        if (name.rfind(prefix, 0) == 0) temporaries.push_back(entry.path());
      }
    }
    for (const auto& t : temporaries) std::filesystem::remove(t);
    if (!temporaries.empty()) ++report.mid_write;
  }
  return report;
}

}  // namespace finetune_test
