// A progress line on the terminal for long work.
//
//   ProgressLine progress("train", max_steps);
//   for (...) progress.Update(step, "loss=0.41", tokens_so_far);
//   progress.Finish();
//
//   train 14/60 [24s<1m19s, 0.58 it/s, 2310 tok/s] loss=0.41 reward=0.12
//
// step/total, elapsed < remaining (from the rate since `first`, the step a resumed
// run starts from), steps and tokens per second, then `detail`. On a terminal the
// line is redrawn in place (stderr, '\r'); otherwise a plain line is printed at
// most every `min_interval_s` seconds, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace posttrain {

class ProgressLine {
 public:
  ProgressLine(std::string label, std::int64_t total, double min_interval_s = 5.0, std::int64_t first = 0);
  // `tokens`: tokens processed since `first` (0: no tok/s shown).
  void Update(std::int64_t done, const std::string& detail = "", std::int64_t tokens = 0);

  // "1h02m", "3m05s", "42s".
  static std::string Duration(double seconds);
  void Finish();

 private:
  std::string label_;
  std::int64_t total_;
  double min_interval_s_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  std::int64_t first_ = 0;
  std::int64_t done_ = 0;
  std::int64_t tokens_ = 0;
  std::int64_t printed_done_ = -1;
  std::string detail_;
};

}  // namespace posttrain
