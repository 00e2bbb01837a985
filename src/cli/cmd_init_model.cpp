// qpeft init-model: a random-initialised Hugging Face checkpoint of a preset shape.
#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "text/tokenizer.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"

namespace {

struct InitArgs {
  std::string preset, dtype = "bf16", out, quant;
  int64_t block_size = 64;
  bool double_quant = false;
  uint64_t seed = 0;
  double init_std = 0.02;
  int64_t layers = 0, hidden = 0, intermediate = 0, heads = 0, kv_heads = 0;
  bool tie_embeddings = false;
  std::string tokenizer;
  int threads = 0;
};

void setup(CLI::App& app) {
  auto args = std::make_shared<InitArgs>();
  auto* cmd = app.add_subcommand("init-model", "Write a seeded random-initialised checkpoint (config.json + safetensors)");
  cmd->add_option("--preset", args->preset, "Model shape: tiny, small, 1b (Llama-3.2-1B) or 7b (Llama-2-7B)")
      ->required()
      ->check(CLI::IsMember({"tiny", "small", "1b", "7b"}));
  cmd->add_option("--layers", args->layers, "Number of decoder layers (default: the preset's)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--hidden-size", args->hidden, "Hidden size (default: the preset's; head_dim = hidden / heads)")
      ->check(CLI::Range(8, 65536));
  cmd->add_option("--intermediate-size", args->intermediate, "MLP width (default: the preset's)")
      ->check(CLI::Range(8, 262144));
  cmd->add_option("--heads", args->heads, "Attention heads (default: the preset's)")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-heads", args->kv_heads, "Key/value heads, grouped-query attention when fewer than --heads")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--tie-embeddings", args->tie_embeddings, "Share the token embedding with the output head");
  cmd->add_option("--dtype", args->dtype, "Storage dtype of the weights")->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--seed", args->seed, "Random seed");
  cmd->add_option("--out", args->out, "Output directory")->required();
  cmd->add_option("--init-std", args->init_std, "Standard deviation of the random weights (initializer_range)")
      ->check(qpeft::cli::finite_in(1e-6, 10.0));
  cmd->add_option("--quant", args->quant,
                  "Quantize linear weights while writing: nf4, fp4 (bitsandbytes) or nf2, nf3, uniform2..4 (qpeft)")
      ->check(CLI::IsMember(qpeft::cli::stored_quant_formats()));
  cmd->add_option("--block-size", args->block_size, "Quantization block size (power of two in 32..4096)");
  cmd->add_flag("--double-quant", args->double_quant, "Quantize the block scales too (QLoRA double quantization)");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "A tokenizer.json (with tokenizer_config.json beside it) or a model directory: copied into --out; "
                  "vocab_size, bos and eos ids follow it");
  cmd->add_option("--threads", args->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->callback([args] {
    qpeft::set_num_threads(args->threads);
    qpeft::ModelConfig cfg = qpeft::ModelConfig::preset(args->preset);
    if (args->layers > 0) cfg.num_layers = args->layers;
    if (args->hidden > 0) cfg.hidden_size = args->hidden;
    if (args->intermediate > 0) cfg.intermediate_size = args->intermediate;
    if (args->heads > 0) cfg.num_heads = cfg.num_kv_heads = args->heads;  // plain multi-head unless --kv-heads
    if (args->kv_heads > 0) cfg.num_kv_heads = args->kv_heads;
    if (args->tie_embeddings) cfg.tie_word_embeddings = true;
    QP_CHECK(cfg.hidden_size % cfg.num_heads == 0, "--hidden-size {} is not a multiple of --heads {}", cfg.hidden_size,
             cfg.num_heads);
    QP_CHECK(cfg.num_heads % cfg.num_kv_heads == 0, "--heads {} is not a multiple of --kv-heads {}", cfg.num_heads,
             cfg.num_kv_heads);
    cfg.head_dim = cfg.hidden_size / cfg.num_heads;
    QP_CHECK(cfg.head_dim % 2 == 0, "head_dim {} (--hidden-size / --heads) must be even for RoPE", cfg.head_dim);
    cfg.rope.head_dim = cfg.head_dim;
    std::string tok_dir;
    if (!args->tokenizer.empty()) {
      tok_dir = qpeft::dir_exists(args->tokenizer) ? args->tokenizer
                                                   : std::filesystem::path(args->tokenizer).parent_path().string();
      if (tok_dir.empty()) tok_dir = ".";
      qpeft::Tokenizer tok = qpeft::Tokenizer::load(args->tokenizer);
      cfg.vocab_size = tok.vocab_size();
      cfg.bos_token_id = tok.bos_id();
      cfg.eos_token_ids.clear();
      if (tok.eos_id() >= 0) cfg.eos_token_ids.push_back(tok.eos_id());
      cfg.pad_token_id = tok.pad_id();
    }
    qpeft::DType dt = args->dtype == "f32" ? qpeft::DType::F32 : qpeft::DType::BF16;
    qpeft::QuantizeOptions q{args->quant, args->block_size, args->double_quant};
    if (q.enabled()) qpeft::check_block_size(args->block_size, "--block-size");
    qpeft::write_random_model(cfg, dt, args->seed, args->out, q, args->init_std);
    if (!tok_dir.empty()) qpeft::copy_tokenizer_files(tok_dir, args->out);
    std::fprintf(stderr, "wrote %s: preset %s, %.1fM parameters, %s%s%s\n", args->out.c_str(), args->preset.c_str(),
                 double(cfg.num_parameters()) / 1e6, args->dtype.c_str(), q.enabled() ? ", linear weights " : "",
                 q.enabled() ? (args->quant + (args->double_quant ? " + double quant" : "")).c_str() : "");
  });
}

}  // namespace

QPEFT_COMMAND(init_model, setup);
