// qpeft command line: parse, dispatch to the registered subcommand, one-line errors.
#include <cstdio>
#include <new>
#include <map>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/tensor.h"

namespace qpeft::cli {

static std::map<std::string, CommandSetup>& registry() {
  static std::map<std::string, CommandSetup> r;
  return r;
}

CommandRegistrar::CommandRegistrar(const char* name, CommandSetup setup) { registry()[name] = setup; }

void setup_all_commands(CLI::App& app) {
  for (auto& [name, setup] : registry()) setup(app);
}

}  // namespace qpeft::cli

int main(int argc, char** argv) {
  qpeft::retain_freed_memory();
  CLI::App app{"qpeft: parameter-efficient fine-tuning (LoRA, QLoRA, LoftQ, IA3) of Llama-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qpeft 0.1.0");
  qpeft::cli::setup_all_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const qpeft::Error& e) {
    std::fprintf(stderr, "qpeft: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qpeft: error: out of memory: the model, --batch or --seq-len (or the input) need more "
                         "memory than this machine can give\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qpeft: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
