// Subcommands that work on models and tokenizers: convert, generate, tokenize.
#pragma once

#include "CLI/CLI.hpp"

namespace posttrain::cli {

// Registers the subcommands on `app`; Run* return the process exit code.
void AddModelCommands(CLI::App& app);
// If one of these subcommands was given, runs it and returns true (exit code in *rc).
bool RunModelCommand(const CLI::App& app, int* rc);

}  // namespace posttrain::cli
