// qpeft command line: parse, dispatch to the registered subcommand, one-line errors.
#include <cstdio>
#include <new>
#include <map>
#include <string>

#include "cli/commands.h"
#include "core/distributed.h"
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

namespace {

// "qpeft: " alone, or "qpeft (rank 1 of 2): " in a data-parallel job, so a failing rank says so.
std::string prefix() {
  if (qpeft::dist::size() == 1) return "qpeft: ";
  return fmt::format("qpeft (rank {} of {}): ", qpeft::dist::rank(), qpeft::dist::size());
}

std::string version_text() {
  std::string v = "qpeft 0.1.0";
  v += qpeft::dist::built_with_mpi() ? "\ndata-parallel training: " + qpeft::dist::mpi_library_version()
                                     : std::string("\ndata-parallel training: not built (no Open MPI)");
  return v;
}

// The first word that is not an option: the subcommand.
std::string subcommand_of(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') return argv[i];
  return "";
}

// An error ends every rank of the job (MPI_Abort): the others may be waiting in a collective.
int finish(int code) {
  if (code != 0 && qpeft::dist::size() > 1) qpeft::dist::abort_job(code);
  qpeft::dist::finalize();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  qpeft::retain_freed_memory();
  try {
    qpeft::dist::init_from_launcher(&argc, &argv);
  } catch (const qpeft::Error& e) {
    std::fprintf(stderr, "qpeft: error: %s\n", e.what());
    return 1;
  }
  CLI::App app{"qpeft: parameter-efficient fine-tuning (LoRA, QLoRA, LoftQ, IA3) of Llama-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());
  qpeft::cli::setup_all_commands(app);
  try {
    const std::string sub = subcommand_of(argc, argv);
    QP_CHECK(qpeft::dist::size() == 1 || sub == "train" || sub.empty(),
             "`qpeft {}` runs in one process; under mpirun only `qpeft train` runs data-parallel (start `qpeft {}` "
             "without mpirun)",
             sub, sub);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return finish(app.exit(e));
  } catch (const qpeft::Error& e) {
    std::fprintf(stderr, "%serror: %s\n", prefix().c_str(), e.what());
    return finish(1);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%serror: out of memory: the model, --batch or --seq-len (or the input) need more "
                         "memory than this machine can give\n", prefix().c_str());
    return finish(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sinternal error: %s\n", prefix().c_str(), e.what());
    return finish(2);
  }
  return finish(0);
}
