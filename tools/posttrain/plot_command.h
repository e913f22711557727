// `posttrain plot RUN_DIR... [--metrics a,b,...] [--out FILE.png|.svg]`: the curves of
// runs' metrics.jsonl drawn with PLplot (its cairo PNG/SVG drivers), one panel per
// metric, several runs overlaid with a legend; each curve raw (faint) and smoothed
// (TensorBoard's debiased exponential moving average, --smoothing). Default metrics:
// loss, learning_rate and, where a run has them, rewards/accuracies, reward, kl,
// objective/kl, eval_loss.
#pragma once

#include "CLI/CLI.hpp"

namespace posttrain::cli {

void AddPlotCommand(CLI::App& app);
// If `plot` was given, runs it and returns true (exit code in *rc).
bool RunPlotCommand(const CLI::App& app, int* rc);

}  // namespace posttrain::cli
