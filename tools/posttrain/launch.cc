#include "launch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace posttrain::cli {
namespace {

struct LaunchArgs {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Seconds the other workers get to stop by themselves (they see the lost rank
  // in their next collective) before they are terminated.
  int grace = 30;
  std::vector<std::string> command;
} launch_args;

CLI::App* launch_cmd = nullptr;

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1, err_fd = -1;
  std::string out_buffer, err_buffer;
  bool running = false;
  int status = 0;
};

// Writes the complete lines of `buffer` to `stream`, each prefixed with the rank.
void FlushLines(std::string& buffer, int rank, std::FILE* stream, bool all) {
  size_t start = 0;
  for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::fprintf(stream, "[rank %d] %.*s\n", rank, static_cast<int>(nl - start), buffer.data() + start);
  }
  buffer.erase(0, start);
  if (all && !buffer.empty()) {
    std::fprintf(stream, "[rank %d] %s\n", rank, buffer.c_str());
    buffer.clear();
  }
  std::fflush(stream);
}

std::string DescribeStatus(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::StrCat("was killed by signal ", sig, " (", strsignal(sig), ")");
  }
  return absl::StrCat("exited with status ", WEXITSTATUS(status));
}

int ExitCode(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

volatile sig_atomic_t g_interrupted = 0;
void OnSignal(int sig) { g_interrupted = sig; }

int Launch(const char* self_path) {
  const LaunchArgs& a = launch_args;
  if (a.nproc_per_node < 1 || a.nnodes < 1 || a.node_rank < 0 || a.node_rank >= a.nnodes) {
    std::fprintf(stderr, "posttrain launch: need --nproc-per-node >= 1, --nnodes >= 1 and 0 <= --node-rank < --nnodes\n");
    return 1;
  }
  const int world = a.nproc_per_node * a.nnodes;
  // The workers run this very binary.
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string binary = ec ? std::string(self_path) : exe.string();
  // torchrun's habit: one compute thread per worker unless told otherwise; here
  // the node's cores are shared out among its workers.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::getenv("OMP_NUM_THREADS") != nullptr
                                  ? std::getenv("OMP_NUM_THREADS")
                                  : std::to_string(std::max(1u, cores / static_cast<unsigned>(a.nproc_per_node)));

  std::vector<Worker> workers(static_cast<size_t>(a.nproc_per_node));
  for (int local = 0; local < a.nproc_per_node; ++local) {
    Worker& w = workers[static_cast<size_t>(local)];
    w.rank = a.node_rank * a.nproc_per_node + local;
    int out_pipe[2], err_pipe[2];
    if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) {
      std::perror("posttrain launch: pipe");
      return 1;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("posttrain launch: fork");
      return 1;
    }
    if (pid == 0) {
      dup2(out_pipe[1], STDOUT_FILENO);
      dup2(err_pipe[1], STDERR_FILENO);
      close(out_pipe[0]);
      close(out_pipe[1]);
      close(err_pipe[0]);
      close(err_pipe[1]);
      setenv("RANK", std::to_string(w.rank).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(a.nproc_per_node).c_str(), 1);
      setenv("GROUP_RANK", std::to_string(a.node_rank).c_str(), 1);
      setenv("MASTER_ADDR", a.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(a.master_port).c_str(), 1);
      setenv("OMP_NUM_THREADS", threads.c_str(), 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(self_path));
      for (const std::string& arg : a.command) argv.push_back(const_cast<char*>(arg.c_str()));
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      std::fprintf(stderr, "posttrain launch: cannot start %s: %s\n", binary.c_str(), std::strerror(errno));
      _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    w.pid = pid;
    w.out_fd = out_pipe[0];
    w.err_fd = err_pipe[0];
    w.running = true;
  }
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  using Clock = std::chrono::steady_clock;
  int first_failed = -1;
  Clock::time_point failed_at, terminated_at;
  bool terminated = false, killed = false, forwarded = false;
  for (;;) {
    // Output first, so a worker's last words come before the verdict.
    std::vector<pollfd> fds;
    std::vector<std::pair<Worker*, bool>> owners;  // (worker, is stderr)
    for (Worker& w : workers) {
      if (w.out_fd >= 0) {
        fds.push_back({w.out_fd, POLLIN, 0});
        owners.push_back({&w, false});
      }
      if (w.err_fd >= 0) {
        fds.push_back({w.err_fd, POLLIN, 0});
        owners.push_back({&w, true});
      }
    }
    if (!fds.empty()) poll(fds.data(), fds.size(), 100);
    for (size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      auto [w, is_err] = owners[i];
      char chunk[65536];
      const ssize_t n = read(fds[i].fd, chunk, sizeof(chunk));
      std::string& buffer = is_err ? w->err_buffer : w->out_buffer;
      if (n > 0) {
        buffer.append(chunk, static_cast<size_t>(n));
        FlushLines(buffer, w->rank, is_err ? stderr : stdout, false);
      } else {
        FlushLines(buffer, w->rank, is_err ? stderr : stdout, true);
        close(fds[i].fd);
        (is_err ? w->err_fd : w->out_fd) = -1;
      }
    }
    // Exits.
    bool any_running = false;
    for (Worker& w : workers) {
      if (!w.running) continue;
      int status = 0;
      const pid_t done = waitpid(w.pid, &status, WNOHANG);
      if (done == w.pid) {
        w.running = false;
        w.status = status;
        const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (failed && first_failed < 0 && !terminated) {
          first_failed = w.rank;
          failed_at = Clock::now();
          std::fprintf(stderr, "posttrain launch: rank %d (pid %d) %s; stopping the other ranks\n", w.rank,
                       static_cast<int>(w.pid), DescribeStatus(status).c_str());
        }
      } else {
        any_running = true;
      }
    }
    bool pipes_open = false;
    for (const Worker& w : workers) pipes_open |= w.out_fd >= 0 || w.err_fd >= 0;
    if (!any_running && !pipes_open) break;
    if (!any_running) continue;  // drain the pipes
    if (g_interrupted != 0 && !forwarded) {
      for (Worker& w : workers) {
        if (w.running) kill(w.pid, g_interrupted);
      }
      forwarded = true;
      terminated_at = Clock::now();
      terminated = true;
    }
    // After a failure the others get `grace` seconds to stop by themselves, then
    // SIGTERM, then (10 s later) SIGKILL.
    if (first_failed >= 0 && !terminated && Clock::now() - failed_at > std::chrono::seconds(a.grace)) {
      for (Worker& w : workers) {
        if (w.running) kill(w.pid, SIGTERM);
      }
      terminated = true;
      terminated_at = Clock::now();
    }
    if (terminated && !killed && Clock::now() - terminated_at > std::chrono::seconds(10)) {
      for (Worker& w : workers) {
        if (w.running) kill(w.pid, SIGKILL);
      }
      killed = true;
    }
  }
  if (first_failed >= 0) {
    const Worker& failed = workers[static_cast<size_t>(first_failed - a.node_rank * a.nproc_per_node)];
    std::fprintf(stderr, "posttrain launch: failed: rank %d %s\n", failed.rank, DescribeStatus(failed.status).c_str());
    return std::max(1, ExitCode(failed.status));
  }
  if (g_interrupted != 0) return 128 + g_interrupted;
  return 0;
}

}  // namespace

void AddLaunchCommand(CLI::App& app) {
  LaunchArgs& a = launch_args;
  launch_cmd = app.add_subcommand(
      "launch", "Start a multi-process run on this node (torchrun's environment): posttrain launch --nproc-per-node N run RECIPE");
  launch_cmd->add_option("--nproc-per-node", a.nproc_per_node, "Worker processes on this node (one per device)");
  launch_cmd->add_option("--nnodes", a.nnodes, "Nodes in the run");
  launch_cmd->add_option("--node-rank", a.node_rank, "This node's rank (0 .. nnodes-1)");
  launch_cmd->add_option("--master-addr", a.master_addr, "Address of node 0 (rank 0 hosts the rendezvous store)");
  launch_cmd->add_option("--master-port", a.master_port, "Port of the rendezvous store");
  launch_cmd->add_option("--grace", a.grace, "Seconds the other workers get to stop after one fails, before SIGTERM");
  launch_cmd->add_option("command", a.command, "The posttrain command each worker runs (e.g. run recipe.toml k=v)")->required();
  launch_cmd->prefix_command();
}

bool RunLaunchCommand(const CLI::App& app, const char* self_path, int* rc) {
  if (launch_cmd == nullptr || !app.got_subcommand(launch_cmd)) return false;
  // Everything after the first positional belongs to the workers' command.
  for (const std::string& extra : launch_cmd->remaining()) launch_args.command.push_back(extra);
  *rc = Launch(self_path);
  return true;
}

}  // namespace posttrain::cli
