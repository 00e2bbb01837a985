// Subcommands register themselves: each src/cli/cmd_<name>.cpp defines a setup function
// that adds its CLI11 subcommand (options + callback) and registers it with QPEFT_COMMAND.
// Callbacks report failures by throwing qpeft::Error; main prints one line and exits 1.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

namespace qpeft {
class LlamaModel;
}

namespace qpeft::cli {

using CommandSetup = void (*)(CLI::App& app);

struct CommandRegistrar {
  CommandRegistrar(const char* name, CommandSetup setup);
};

void setup_all_commands(CLI::App& app);

// --base-quant for commands that load a base with an adapter (eval, generate).
void add_base_quant_option(CLI::App* cmd, std::string* value);
// Loads --model with --adapter (if any) as --base-quant says; prints what it quantized to stderr.
std::unique_ptr<LlamaModel> load_model_for_command(const std::string& model, const std::string& adapter,
                                                   const std::string& base_quant);

// --adapter for eval and generate, repeatable: NAME=DIR, or a bare DIR (named "default").
void add_adapters_option(CLI::App* cmd, std::vector<std::string>* values);
// Loads --model once with every --adapter attached together (mixed-adapter batches), as
// --base-quant says; *names receives the adapters' names in order (the sequence adapters'
// indices). No adapters: the base alone.
std::unique_ptr<LlamaModel> load_model_with_adapters_for_command(const std::string& model,
                                                                 const std::vector<std::string>& adapter_args,
                                                                 const std::string& base_quant,
                                                                 std::vector<std::string>* names);
// --compute-dtype f32|bf16 for the commands that run the model (train, eval, generate).
void add_compute_dtype_option(CLI::App* cmd, std::string* value);
// Sets the linear compute dtype --compute-dtype names for the rest of the command; says on
// stderr when bf16 falls back to f32 here.
void apply_compute_dtype(const std::string& value);
// --ggml-activations q8|f32 for the commands that only run the model forward (eval, generate);
// train always multiplies llama.cpp's blocks in f32.
void add_ggml_activations_option(CLI::App* cmd, std::string* value);
void apply_ggml_activations(const std::string& value);

// An adapter index's name: names[i], or "__base__".
std::string adapter_name(const std::vector<std::string>& names, int32_t index);

}  // namespace qpeft::cli

#define QPEFT_COMMAND(name, setup_fn) static ::qpeft::cli::CommandRegistrar qpeft_registrar_##name(#name, setup_fn)
