// Loading a base model with an adapter the way it was trained (--base-quant), shared by eval and generate.
#include <cstdio>

#include "cli/commands.h"
#include "models/llama.h"
#include "peft/adapter_io.h"

namespace qpeft::cli {

void add_base_quant_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--base-quant", *value,
                  "Base weights with an adapter: auto (quantized on load as the adapter was trained, e.g. by "
                  "--method qlora), none (as stored), or nf4, fp4, nf2, nf3, uniform2..4")
      ->check(CLI::IsMember({"auto", "none", "nf4", "fp4", "nf2", "nf3", "uniform2", "uniform3", "uniform4"}));
}

std::unique_ptr<LlamaModel> load_model_for_command(const std::string& model, const std::string& adapter,
                                                   const std::string& base_quant) {
  std::string note;
  auto m = load_model_with_adapter(model, adapter, base_quant, &note);
  if (!note.empty()) std::fprintf(stderr, "qpeft: %s\n", note.c_str());
  return m;
}

}  // namespace qpeft::cli
