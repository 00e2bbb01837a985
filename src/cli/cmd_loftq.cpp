// qpeft loftq: LoftQ initialisation (SPEC §4). Quantizes the targeted linear weights of a dense
// model jointly with a LoRA init and writes OUT/ (the quantized base: bitsandbytes' layout for
// nf4, qpeft__<format> for the others; embeddings, head, norms and untargeted layers as stored)
// and OUT/loftq_init/ (a PEFT LoRA adapter with Q + s·B·A ≈ W), atomically together.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/loftq_args.h"
#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "peft/loftq.h"

namespace {

struct LoftqArgs {
  std::string model, out;
  qpeft::cli::LoftqFlags flags;
  int threads = 0;
};

void setup(CLI::App& app) {
  auto a = std::make_shared<LoftqArgs>();
  auto* cmd = app.add_subcommand(
      "loftq", "LoftQ: quantize a dense model's linear weights jointly with a LoRA init (Q + s·B·A ≈ W); writes the "
               "quantized base to OUT and the adapter to OUT/loftq_init");
  cmd->add_option("--model", a->model, "Dense model directory (bf16/f16/f32 safetensors)")->required();
  cmd->add_option("--out", a->out, "Output directory: the quantized model, with the adapter in loftq_init/")->required();
  qpeft::cli::add_loftq_options(cmd, &a->flags, /*for_train=*/false);
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->callback([a, cmd] {
    qpeft::set_num_threads(a->threads);
    qpeft::LoftqOptions lo = qpeft::cli::loftq_options(a->flags, cmd);
    auto model = qpeft::load_model(a->model);
    qpeft::LoraConfig cfg = lo.lora;
    cfg.base_model_name_or_path = a->out;
    const auto t0 = std::chrono::steady_clock::now();
    const qpeft::LoftqSummary sum = qpeft::cli::run_loftq(*model, lo, a->flags.quiet);
    qpeft::record_loftq(lo, &cfg);
    qpeft::DType dtype = qpeft::DType::BF16;
    if (auto* emb = dynamic_cast<const qpeft::DenseWeight*>(model->embed_tokens().get())) dtype = emb->tensor().dtype();
    qpeft::SaveOptions so;
    so.dtype = dtype;  // norms keep the model's dtype; quantized and dense weights are written as they are
    so.extra_files = [&](const std::string& tmp) {
      qpeft::copy_tokenizer_files(a->model, tmp);
      qpeft::make_dirs(tmp + "/loftq_init");
      qpeft::write_lora_adapter_files(*model, cfg, tmp + "/loftq_init");
    };
    qpeft::save_model(*model, a->out, so);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr,
                 "loftq: %lld layers, %.2fM parameters quantized at %.3f bits/param on average; relative error "
                 "|W-Q-sBA|/|W| %.4f (plain quantization %.4f) in %.1f s\n"
                 "wrote %s (quantized base) and %s/loftq_init (adapter); train with: qpeft train --model %s "
                 "--init-adapter %s/loftq_init ...\n",
                 (long long)sum.layers, double(sum.quantized_params) / 1e6, sum.bits_per_param(),
                 std::sqrt(sum.loftq_error2 / sum.weight_norm2), std::sqrt(sum.plain_error2 / sum.weight_norm2), secs,
                 a->out.c_str(), a->out.c_str(), a->out.c_str(), a->out.c_str());
  });
}

}  // namespace

QPEFT_COMMAND(loftq, setup);
