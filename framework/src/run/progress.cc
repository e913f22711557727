#include "posttrain/run/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace posttrain {

ProgressLine::ProgressLine(std::string label, std::int64_t total, double min_interval_s, std::int64_t first)
    : label_(std::move(label)),
      total_(total),
      min_interval_s_(min_interval_s),
      first_(first),
      done_(first),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

std::string ProgressLine::Duration(double seconds) {
  const auto s = static_cast<std::int64_t>(std::max(0.0, seconds) + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

void ProgressLine::Update(std::int64_t done, const std::string& detail, std::int64_t tokens) {
  done_ = done;
  detail_ = detail;
  tokens_ = tokens;
  const auto now = std::chrono::steady_clock::now();
  const double since_print = std::chrono::duration<double>(now - last_print_).count();
  if (!tty_ && since_print < min_interval_s_ && done < total_) return;
  if (tty_ && since_print < 0.1 && done < total_) return;
  last_print_ = now;
  printed_done_ = done;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done - first_) / elapsed : 0.0;
  const double remaining = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
  std::string line = absl::StrFormat("%s %d/%d [%s<%s, %.2f it/s", label_, done, total_, Duration(elapsed),
                                     Duration(remaining), rate);
  if (tokens > 0 && elapsed > 0) absl::StrAppendFormat(&line, ", %.0f tok/s", static_cast<double>(tokens) / elapsed);
  absl::StrAppend(&line, "] ", detail);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::Finish() {
  if (printed_done_ != done_) {
    last_print_ = std::chrono::steady_clock::time_point{};
    Update(done_, detail_, tokens_);
  }
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace posttrain
