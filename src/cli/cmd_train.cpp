// qpeft train: LoRA or (IA)³ fine-tuning of a frozen base (or full fine-tuning).
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/loftq_args.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace {

using qpeft::cli::parse_module_pattern;
using qpeft::cli::split_csv;

struct TrainArgs {
  qpeft::TrainOptions o;
  std::string targets = "q_proj,v_proj", feedforward, rank_pattern, alpha_pattern, format = "auto",
              choice_loss = "lm,ul,ln";
  bool no_packing = false;
  std::string save_dtype = "bf16";
  std::string compute_dtype = "f32";
  int threads = 0;
  qpeft::cli::LoftqFlags loftq;
};

void setup(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto& o = a->o;
  auto* cmd = app.add_subcommand("train", "Fine-tune a LoRA or (IA)³ adapter on a frozen base model");
  cmd->add_option("--model", o.model_dir, "Base model directory (Hugging Face layout)")->required();
  cmd->add_option("--data", o.data_path, "Training data, JSON lines: text, prompt/completion, alpaca, chat messages, pre-tokenized input_ids, or "
                  "multiple choice (prompt/choices/answer, trained with T-Few's losses)")
      ->required();
  cmd->add_option("--out", o.out_dir, "Output directory: adapter files and checkpoint-N/ directories")->required();
  cmd->add_option("--format", a->format, "Data format: auto (from the keys), text, completion, alpaca, chat, choice, tokenized")
      ->check(CLI::IsMember({"auto", "text", "completion", "alpaca", "chat", "choice", "tokenized"}));
  cmd->add_option("--choice-loss", a->choice_loss,
                  "Multiple-choice data: T-Few loss terms to sum, any of lm (cross-entropy of the answer), ul "
                  "(unlikelihood of the wrong choices), ln (length-normalised softmax over the choices)");
  cmd->add_flag("--train-on-prompt", o.data.train_on_prompt, "Also compute the loss on prompt tokens");
  cmd->add_flag("--no-packing", a->no_packing, "One example per row instead of packing short examples into --seq-len");
  cmd->add_option("--eval-data", o.eval_data_path,
                  "Held-out data evaluated every --eval-every steps and at the end (perplexity; accuracy by rank "
                  "classification for multiple-choice data)");
  cmd->add_option("--method", o.method,
                  "lora; qlora: NF4 + double-quantized frozen base with the QLoRA paper's defaults (r 64, alpha 16, "
                  "dropout 0.1, all-linear, lr 2e-4 constant, warmup 3%, max grad norm 0.3) for flags not given; "
                  "loftq: LoftQ init in memory on the dense base (--quant, --layer-quant, --loftq-iters), then LoRA on "
                  "the quantized base it gives, written to OUT/base (defaults: all-linear, r 16, alpha = r, no double "
                  "quant); ia3: (IA)³ vectors scaling the outputs of --targets (default k_proj,v_proj,down_proj) and "
                  "the inputs of --feedforward-modules (default down_proj), with T-Few's recipe for flags not given "
                  "(Adafactor, lr 3e-3, linear schedule, warmup 6%, batch 8, 1000 steps); with --quant the base is quantized "
                  "on load as for qlora; full: every weight trains (the model is written to OUT/model)")
      ->check(CLI::IsMember({"lora", "qlora", "loftq", "ia3", "full"}));
  cmd->add_option("--init-adapter", o.init_adapter,
                  "Start from this PEFT LoRA adapter (e.g. OUT/loftq_init from qpeft loftq, with --model OUT); its "
                  "rank, alpha and targets are used");
  qpeft::cli::add_loftq_options(cmd, &a->loftq, /*for_train=*/true);
  cmd->add_option("--save-dtype", a->save_dtype, "full: dtype of the trained model written to OUT/model")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--quant", o.quant, "qlora, loftq: base weight format; ia3: quantize the base on load to it")
      ->check(CLI::IsMember(qpeft::cli::frozen_quant_formats()));
  cmd->add_option("--quant-block", o.quant_block, "qlora, loftq: quantization block size (32..4096)");
  cmd->add_option("--double-quant", o.double_quant, "qlora, loftq: double-quantize the block scales (true/false)");
  cmd->add_option("--rank", o.lora.r, "LoRA rank r")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--alpha", o.lora.alpha, "LoRA alpha (scaling = alpha / r)")->check(qpeft::cli::finite_in(-1e6, 1e6));
  cmd->add_option("--dropout", o.lora.dropout, "LoRA dropout on the adapter input")->check(qpeft::cli::finite_in(0.0, 0.99));
  cmd->add_flag("--rslora", o.lora.use_rslora, "Rank-stabilised scaling alpha / sqrt(r)");
  cmd->add_option("--lora-init", o.lora.init, "Initialisation of A")->check(CLI::IsMember({"kaiming", "gaussian"}));
  cmd->add_option("--targets", a->targets, "Linear layers to adapt: all-linear or a list like q_proj,v_proj");
  cmd->add_option("--feedforward-modules", a->feedforward,
                  "ia3: the targets whose input (not output) is scaled, a subset of --targets (default: down_proj "
                  "if targeted)");
  cmd->add_option("--rank-pattern", a->rank_pattern, "Per-module ranks, e.g. 'q_proj=16,layers.0.mlp.down_proj=4'");
  cmd->add_option("--alpha-pattern", a->alpha_pattern, "Per-module alphas, same form as --rank-pattern");
  cmd->add_option("--steps", o.steps, "Optimizer steps")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per optimizer step")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--seq-len", o.seq_len, "Maximum tokens per sequence (longer examples are truncated)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--lr", o.lr, "Peak learning rate")->check(qpeft::cli::finite_in(0.0, 10.0));
  cmd->add_option("--schedule", o.schedule, "Learning-rate schedule after warmup")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}));
  cmd->add_option("--warmup-ratio", o.warmup_ratio, "Warmup as a fraction of --steps")->check(qpeft::cli::finite_in(0.0, 1.0));
  cmd->add_option("--warmup-steps", o.warmup_steps, "Warmup steps (overrides --warmup-ratio)")->check(qpeft::cli::count_at_least(0));
  cmd->add_option("--optim", o.optimizer,
                  "Optimizer: adamw (torch), adamw8bit (bitsandbytes 8-bit state), paged_adamw, paged_adamw8bit "
                  "(large states in a file-backed mapping in $QPEFT_PAGED_DIR or the temp dir), adafactor "
                  "(transformers' Adafactor as T-Few uses it: factored second moments, no momentum, --lr as given)")
      ->check(CLI::IsMember(qpeft::optimizer_names()));
  cmd->add_option("--weight-decay", o.weight_decay, "Decoupled weight decay (AdamW; Adafactor: its weight_decay)")
      ->check(qpeft::cli::finite_in(0.0, 1e6));
  cmd->add_option("--max-grad-norm", o.max_grad_norm, "Clip gradients to this global norm (0 = off)")
      ->check(qpeft::cli::finite_in(0.0, 1e12));
  cmd->add_option("--seed", o.seed, "Seed for adapter init, shuffling and dropout");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  qpeft::cli::add_compute_dtype_option(cmd, &a->compute_dtype);
  cmd->add_option("--save-every", o.save_every, "Write out/checkpoint-N every N steps (0 = at the end only)")
      ->check(qpeft::cli::count_at_least(0));
  cmd->add_option("--keep-checkpoints", o.keep_checkpoints, "How many checkpoint-N directories to keep")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--eval-every", o.eval_every, "Evaluate --eval-data every N steps (0 = at the end only)")
      ->check(qpeft::cli::count_at_least(0));
  cmd->add_option("--log-every", o.log_every, "Print a progress line every N steps")->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--metrics", o.metrics_path, "JSON lines file: one object per optimizer step");
  cmd->add_flag("--resume", o.resume, "Continue from the newest checkpoint in --out (bit-identical)");
  cmd->add_flag("--grad-checkpoint", o.grad_checkpoint, "Recompute block activations in backward to save memory");
  cmd->add_flag("--mmap", o.mmap,
                "Train from the model file's memory mapping instead of copying its weights into memory (less "
                "resident memory; pages the kernel drops are read back from disk)");
  cmd->add_flag("--quiet", o.quiet, "No progress output");
  cmd->callback([a, cmd] {
    qpeft::set_num_threads(a->threads);
    if (a->o.method == "qlora") {
      // QLoRA paper (Guanaco) defaults for whatever the user did not set.
      auto unset = [&](const char* flag) { return cmd->count(flag) == 0; };
      if (unset("--rank")) a->o.lora.r = 64;
      if (unset("--alpha")) a->o.lora.alpha = 16;
      if (unset("--dropout")) a->o.lora.dropout = 0.1;
      if (unset("--targets")) a->targets = "all-linear";
      if (unset("--lr")) a->o.lr = 2e-4;
      if (unset("--schedule")) a->o.schedule = "constant";
      if (unset("--warmup-ratio") && unset("--warmup-steps")) a->o.warmup_ratio = 0.03;
      if (unset("--max-grad-norm")) a->o.max_grad_norm = 0.3;
    }
    if (a->o.method == "loftq") {
      auto unset = [&](const char* flag) { return cmd->count(flag) == 0; };
      if (unset("--rank")) a->o.lora.r = 16;
      if (unset("--alpha")) a->o.lora.alpha = double(a->o.lora.r);
      if (unset("--targets")) a->targets = "all-linear";
      if (unset("--double-quant")) a->o.double_quant = false;
      if (unset("--quant")) a->o.quant = "nf2";
      a->loftq.quant = a->o.quant;
      a->o.loftq = qpeft::cli::loftq_options(a->loftq, cmd);
      if (!a->o.quiet) qpeft::cli::add_loftq_progress(&a->o.loftq);
    } else {
      QP_CHECK(cmd->count("--layer-quant") + cmd->count("--loftq-iters") + cmd->count("--svd") == 0,
               "--layer-quant, --loftq-iters and --svd belong to --method loftq (or to `qpeft loftq`)");
    }
    auto unset = [&](const char* flag) { return cmd->count(flag) == 0; };
    if (a->o.method == "ia3") {
      for (const char* flag : {"--rank", "--alpha", "--dropout", "--rslora", "--lora-init", "--rank-pattern",
                               "--alpha-pattern", "--init-adapter"})
        QP_CHECK(unset(flag), "{} is a LoRA flag; --method ia3 trains (IA)³ vectors (--targets, --feedforward-modules)",
                 flag);
      // T-Few's recipe (Liu et al., 2022; SPEC §5) for whatever the user did not set.
      if (unset("--optim")) a->o.optimizer = "adafactor";
      if (unset("--targets")) a->targets = "k_proj,v_proj,down_proj";
      if (unset("--lr")) a->o.lr = 3e-3;
      if (unset("--schedule")) a->o.schedule = "linear";
      if (unset("--warmup-ratio") && unset("--warmup-steps")) a->o.warmup_ratio = 0.06;
      if (unset("--batch")) a->o.batch = 8;
      if (unset("--steps")) a->o.steps = 1000;
      a->o.quantize_base = !unset("--quant");
      a->o.ia3.target_modules = split_csv(a->targets);
      if (unset("--feedforward-modules")) {
        // PEFT's default (down_proj) where it is targeted.
        a->o.ia3.feedforward_modules.clear();
        for (const auto& t : a->o.ia3.resolved_targets())
          if (t == "down_proj") a->o.ia3.feedforward_modules.push_back(t);
      } else {
        a->o.ia3.feedforward_modules = split_csv(a->feedforward);
      }
      a->o.ia3.resolved_feedforward();  // a subset of the targets, as PEFT checks
    } else {
      QP_CHECK(unset("--feedforward-modules"), "--feedforward-modules belongs to --method ia3");
    }
    a->o.lora.target_modules = split_csv(a->targets);
    qpeft::parse_data_format(a->format, &a->o.data.format);
    if (!qpeft::parse_choice_loss_terms(a->choice_loss, &a->o.choice_loss))
      qpeft::fail("--choice-loss '{}': expected a comma-separated list of lm, ul, ln", a->choice_loss);
    a->o.packing = !a->no_packing;
    a->o.save_dtype = a->save_dtype == "f32" ? qpeft::DType::F32 : qpeft::DType::BF16;
    a->o.compute_dtype = a->compute_dtype == "bf16" ? qpeft::DType::BF16 : qpeft::DType::F32;
    a->o.lora.rank_pattern = parse_module_pattern<int64_t>(a->rank_pattern, "--rank-pattern");
    a->o.lora.alpha_pattern = parse_module_pattern<double>(a->alpha_pattern, "--alpha-pattern");
    qpeft::train(a->o);
  });
}

}  // namespace

QPEFT_COMMAND(train, setup);
