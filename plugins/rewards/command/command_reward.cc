// Reward function "command": a user's program, in any language, scores completions.
//
//   [[rewards]]
//   type = "command"
//   command = ["python3", "rewards/my_reward.py", "--strict"]   # argv, no shell
//   timeout = 30.0                                              # seconds per call
//
// Protocol, per call (a chunk of completions): the program is started (argv[0]
// looked up on PATH, no shell, the host's environment and working directory), gets
// one JSON object per completion on stdin, one per line,
//   {"prompt": "...", "completion": "...", <the example's other fields, e.g. "answer">}
// (for conversational data, as TRL passes them: "prompt" the list of messages and
// "completion" [{"role": "assistant", "content": "..."}])
// then end of input, and must print exactly one number per completion on stdout,
// one per line, in order ("nan" is a NaN, which stops the step like any NaN reward),
// and exit with status 0. stderr is kept for error messages.
// Errors (each names the command): not found or not executable (at recipe load);
// timeout (the process is killed: DeadlineExceeded); a non-zero exit or a signal
// (Internal, with the end of its stderr); a line that is not a number or the wrong
// number of lines (InvalidArgument, naming the line).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/plugin/plugin.h"

extern char** environ;

namespace posttrain {
namespace {

using Clock = std::chrono::steady_clock;

// Closes a file descriptor once.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

// PATH lookup as execvp does; "" if not found.
std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0 && !std::filesystem::is_directory(candidate)) return candidate;
  }
  return "";
}

struct ProcessResult {
  std::string out, err;
  int status = 0;
};

// Runs argv with `input` on stdin; kills it at the deadline.
absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv, const std::string& input,
                                         double timeout_seconds, const std::string& name) {
  // stdin is a socket so that writing to a program that exited early gives EPIPE
  // (MSG_NOSIGNAL) instead of a process-killing SIGPIPE.
  int in_pair[2], out_pipe[2], err_pipe[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) return absl::InternalError(Errno("socketpair"));
  Fd in_child(in_pair[0]), in_parent(in_pair[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return absl::InternalError(Errno("pipe"));
  Fd out_parent(out_pipe[0]), out_child(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return absl::InternalError(Errno("pipe"));
  Fd err_parent(err_pipe[0]), err_child(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_child.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_child.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_child.get(), 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Its own process group, so that a timeout kills whatever it started too (a
  // shell's children, a server it forked), not only the program itself.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  pid_t pid = 0;
  const int spawn_error = ::posix_spawnp(&pid, args[0], &actions, &attributes, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot run ", name, ": ", std::strerror(spawn_error)));
  }
  in_child.reset();
  out_child.reset();
  err_child.reset();
  for (int fd : {in_parent.get(), out_parent.get(), err_parent.get()}) ::fcntl(fd, F_SETFL, O_NONBLOCK);

  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));
  auto kill_and_reap = [&] {
    ::kill(-pid, SIGKILL);  // the whole group
    int ignored = 0;
    while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
  };
  ProcessResult result;
  size_t written = 0;
  if (input.empty()) ::shutdown(in_parent.get(), SHUT_WR);
  char buffer[65536];
  while (out_parent.get() >= 0 || err_parent.get() >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      kill_and_reap();
      return absl::DeadlineExceededError(
          absl::StrCat(name, " did not finish within timeout = ", timeout_seconds, " s; it was killed"));
    }
    std::vector<pollfd> fds;
    if (in_parent.get() >= 0 && written < input.size()) fds.push_back({in_parent.get(), POLLOUT, 0});
    if (out_parent.get() >= 0) fds.push_back({out_parent.get(), POLLIN, 0});
    if (err_parent.get() >= 0) fds.push_back({err_parent.get(), POLLIN, 0});
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) {
      kill_and_reap();
      return absl::InternalError(Errno("poll"));
    }
    for (const pollfd& p : fds) {
      if (p.revents == 0) continue;
      if (p.fd == in_parent.get()) {
        const ssize_t n = ::send(p.fd, input.data() + written, input.size() - written, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) written += static_cast<size_t>(n);
        if (n < 0 && errno != EAGAIN && errno != EINTR) in_parent.reset();  // EPIPE: it stopped reading
        if (in_parent.get() >= 0 && written == input.size()) ::shutdown(in_parent.get(), SHUT_WR);
        continue;
      }
      Fd& fd = p.fd == out_parent.get() ? out_parent : err_parent;
      std::string& sink = p.fd == out_parent.get() ? result.out : result.err;
      const ssize_t n = ::read(p.fd, buffer, sizeof(buffer));
      if (n > 0) {
        sink.append(buffer, static_cast<size_t>(n));
        if (sink.size() > (64u << 20)) {
          kill_and_reap();
          return absl::ResourceExhaustedError(absl::StrCat(name, " wrote more than 64 MiB"));
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        fd.reset();
      }
    }
  }
  // Output closed: wait for the exit, still under the deadline.
  while (true) {
    const pid_t done = ::waitpid(pid, &result.status, WNOHANG);
    if (done == pid) {
      ::kill(-pid, SIGKILL);  // anything it left running in its group
      break;
    }
    if (done < 0 && errno != EINTR) return absl::InternalError(Errno("waitpid"));
    if (Clock::now() >= deadline) {
      kill_and_reap();
      return absl::DeadlineExceededError(
          absl::StrCat(name, " closed its output but did not exit within timeout = ", timeout_seconds, " s"));
    }
    ::usleep(1000);
  }
  return result;
}

std::string Tail(const std::string& text, size_t max_chars = 400) {
  std::string tail = text.size() > max_chars ? "..." + text.substr(text.size() - max_chars) : text;
  absl::StripTrailingAsciiWhitespace(&tail);
  return tail;
}

class CommandReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "A program scores completions: one JSON line per completion on stdin, one number per line "
               "on stdout; run without a shell, killed after `timeout` seconds.")
        .Required("command", OptionType::kStringList, "argv: the program (looked up on PATH) and its arguments.")
        .Float("timeout", 60.0, "Seconds one call (a chunk of completions) may take.").GreaterThan(0);
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<CommandReward>();
    reward->argv_ = config.GetStringList("command");
    reward->timeout_ = config.GetFloat("timeout");
    if (reward->argv_.empty() || reward->argv_[0].empty()) return config.Error("command", "must name a program");
    if (!(reward->timeout_ > 0)) return config.Error("timeout", "must be > 0 seconds");
    if (FindExecutable(reward->argv_[0]).empty()) {
      return config.Error("command", absl::StrCat("'", reward->argv_[0], "' is not an executable file",
                                                  reward->argv_[0].find('/') == std::string::npos ? " on PATH" : ""));
    }
    reward->name_ = absl::StrCat("command [", absl::StrJoin(reward->argv_, " "), "]");
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::string input;
    for (const RewardInput& in : batch) {
      nlohmann::ordered_json line = in.metadata != nullptr && in.metadata->is_object() ? nlohmann::ordered_json(*in.metadata)
                                                                                      : nlohmann::ordered_json::object();
      if (in.conversational()) {  // as TRL passes them: messages in, one assistant message out
        line["prompt"] = *in.prompt_messages;
        line["completion"] = ConversationalCompletion(in.completion);
      } else {
        line["prompt"] = std::string(in.prompt);
        line["completion"] = std::string(in.completion);
      }
      input += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      input += '\n';
    }
    POSTTRAIN_ASSIGN_OR_RETURN(ProcessResult run, RunProcess(argv_, input, timeout_, name_));
    if (WIFSIGNALED(run.status)) {
      return absl::InternalError(absl::StrCat(name_, " was killed by signal ", WTERMSIG(run.status), " (",
                                              strsignal(WTERMSIG(run.status)), "); stderr: ", Tail(run.err)));
    }
    if (WEXITSTATUS(run.status) != 0) {
      return absl::InternalError(
          absl::StrCat(name_, " exited with status ", WEXITSTATUS(run.status), "; stderr: ", Tail(run.err)));
    }
    std::vector<float> scores;
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(run.out, '\n')) {
      ++line_number;
      line = absl::StripAsciiWhitespace(line);
      if (line.empty()) continue;
      double value = 0;
      if (!absl::SimpleAtod(line, &value)) {
        return absl::InvalidArgumentError(absl::StrCat(name_, ": output line ", line_number,
                                                       ": expected a number, got '", line.substr(0, 80), "'"));
      }
      scores.push_back(static_cast<float>(value));
    }
    if (scores.size() != batch.size()) {
      return absl::InvalidArgumentError(absl::StrCat(name_, " printed ", scores.size(), " numbers for ", batch.size(),
                                                     " completions (one per line expected)",
                                                     run.err.empty() ? "" : "; stderr: " + Tail(run.err)));
    }
    return scores;
  }

 private:
  std::vector<std::string> argv_;
  double timeout_ = 60.0;
  std::string name_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("command", posttrain::CommandReward);
POSTTRAIN_PLUGIN("posttrain_reward_command");
