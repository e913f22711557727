// A progress line on the terminal for long work.
//
//   ProgressLine progress("train", max_steps);
//   for (...) progress.Update(step, "loss=0.41");
//   progress.Finish();
//
// On a terminal the line is redrawn in place (stderr, '\r'); otherwise a plain line
// is printed at most every `min_interval_s` seconds, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace posttrain {

class ProgressLine {
 public:
  ProgressLine(std::string label, std::int64_t total, double min_interval_s = 5.0);
  void Update(std::int64_t done, const std::string& detail = "");
  void Finish();

 private:
  std::string label_;
  std::int64_t total_;
  double min_interval_s_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  std::int64_t done_ = 0;
  std::int64_t printed_done_ = -1;
  std::string detail_;
};

}  // namespace posttrain
