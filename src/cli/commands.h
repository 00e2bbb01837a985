// Subcommands register themselves: each src/cli/cmd_<name>.cpp defines a setup function
// that adds its CLI11 subcommand (options + callback) and registers it with QPEFT_COMMAND.
// Callbacks report failures by throwing qpeft::Error; main prints one line and exits 1.
#pragma once
#include <CLI/CLI.hpp>

namespace qpeft::cli {

using CommandSetup = void (*)(CLI::App& app);

struct CommandRegistrar {
  CommandRegistrar(const char* name, CommandSetup setup);
};

void setup_all_commands(CLI::App& app);

}  // namespace qpeft::cli

#define QPEFT_COMMAND(name, setup_fn) static ::qpeft::cli::CommandRegistrar qpeft_registrar_##name(#name, setup_fn)
