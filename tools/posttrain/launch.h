// `posttrain launch`: starts a run's worker processes on this node with the
// torchrun contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK,
// MASTER_ADDR, MASTER_PORT), prefixes each worker's output lines with its rank,
// and when one worker fails, stops the others and exits non-zero naming it.
//
//   posttrain launch --nproc-per-node 2 run recipes/sft/stories260K_tinystories.toml
//   posttrain launch --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --nproc-per-node 8 run r.toml
#pragma once

#include "CLI/CLI.hpp"

namespace posttrain::cli {

// Adds the `launch` subcommand to `app`.
void AddLaunchCommand(CLI::App& app);

// If `launch` was given, runs it and stores its exit status in *rc: 0 when every
// worker exits 0; otherwise the first failed worker's status (128 + signal for a
// signal), 1 for a launcher error.
bool RunLaunchCommand(const CLI::App& app, const char* self_path, int* rc);

}  // namespace posttrain::cli
