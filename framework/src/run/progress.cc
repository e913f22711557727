#include "posttrain/run/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace posttrain {

ProgressLine::ProgressLine(std::string label, std::int64_t total, double min_interval_s)
    : label_(std::move(label)),
      total_(total),
      min_interval_s_(min_interval_s),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

void ProgressLine::Update(std::int64_t done, const std::string& detail) {
  done_ = done;
  detail_ = detail;
  const auto now = std::chrono::steady_clock::now();
  const double since_print = std::chrono::duration<double>(now - last_print_).count();
  if (!tty_ && since_print < min_interval_s_ && done < total_) return;
  if (tty_ && since_print < 0.1 && done < total_) return;
  last_print_ = now;
  printed_done_ = done;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  std::string line = absl::StrFormat("%s %d/%d [%.0fs, %.2f/s] %s", label_, done, total_,
                                     elapsed, rate, detail);
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
    Update(done_, detail_);
  }
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace posttrain
