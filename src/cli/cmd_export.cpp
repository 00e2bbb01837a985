// qpeft export: a model (an adapter merged in) or a LoRA adapter as a llama.cpp GGUF file.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "io/json_reader.h"
#include "models/gguf_model.h"
#include "peft/adapter.h"
#include "peft/gguf_lora.h"
#include "peft/lora.h"

namespace {

struct ExportArgs {
  std::string model, adapter, out, dtype = "f16";
  bool lora_only = false;
  int threads = 0;
};

void setup(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand("export", "Write a model (an adapter merged in) or a LoRA adapter as a llama.cpp GGUF file");
  cmd->add_option("--model", a->model, "Model directory (Hugging Face layout, dense or quantized)")->required();
  cmd->add_option("--adapter", a->adapter, "PEFT adapter directory: merged into the model, or alone with --lora-only");
  cmd->add_option("--out", a->out, "Output .gguf file")->required();
  cmd->add_option("--dtype", a->dtype, "Matrices as f32, f16, bf16, q8_0, q4_0 or q4_k_m (llama.cpp's types)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"}));
  cmd->add_flag("--lora-only", a->lora_only, "Write the LoRA adapter alone, as llama.cpp's LoRA GGUF (llama-server --lora)");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->callback([a, cmd] {
    qpeft::set_num_threads(a->threads);
    QP_CHECK(!a->lora_only || !a->adapter.empty(), "--lora-only needs --adapter DIR");
    QP_CHECK(!a->lora_only || cmd->count("--dtype") == 0, "--lora-only writes the adapter in f32; drop --dtype");
    auto model = qpeft::cli::load_model_for_command(a->model, a->adapter, "none");
    if (a->lora_only) {
      const std::string cfg_path = a->adapter + "/adapter_config.json";
      const nlohmann::json cfg = qpeft::parse_json(qpeft::read_text_file(cfg_path), cfg_path);
      const double alpha = qpeft::JsonFields(cfg, cfg_path).number_or("lora_alpha", 8.0, 1e-30, 1e30);
      qpeft::export_gguf_lora(*model, alpha, a->out);
      std::fprintf(stderr, "wrote %s: llama.cpp LoRA adapter of %s (alpha %g)\n", a->out.c_str(), a->adapter.c_str(),
                   alpha);
      return;
    }
    bool ia3 = false;
    qpeft::GgufExportOptions opt;
    opt.dtype = a->dtype;
    if (!a->adapter.empty()) {
      opt.matrix = qpeft::merged_slot_matrix;
      opt.vector = qpeft::merged_slot_vector;
      model->visit_linears([&](qpeft::Linear& l) { ia3 = ia3 || (l.adapter && !dynamic_cast<const qpeft::LoraAdapter*>(l.adapter.get())); });
    }
    qpeft::export_gguf_model(*model, a->model, a->out, opt);
    std::fprintf(stderr, "wrote %s: %s as %s%s%s\n", a->out.c_str(), a->model.c_str(), a->dtype.c_str(),
                 a->adapter.empty() ? "" : (", with " + a->adapter + " merged in").c_str(),
                 ia3 ? " ((IA)³ has no llama.cpp adapter form, so it is merged)" : "");
  });
}

}  // namespace

QPEFT_COMMAND(export, setup);
