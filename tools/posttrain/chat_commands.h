// Subcommands for chat templates: chat-template.
#pragma once

#include "CLI/CLI.hpp"

namespace posttrain::cli {

void AddChatCommands(CLI::App& app);
// If one of these subcommands was given, runs it and returns true (exit code in *rc).
bool RunChatCommand(const CLI::App& app, int* rc);

}  // namespace posttrain::cli
