// qpeft eval (loss / perplexity, or multiple-choice accuracy) and qpeft merge (W + s·B·A into a plain checkpoint).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "peft/adapter_io.h"
#include "train/trainer.h"

namespace {

struct EvalArgs {
  std::string model, adapter, data, format = "auto", metric = "loss", choice_score = "mean";
  bool json = false, train_on_prompt = false;
  int64_t batch = 4, seq_len = 2048;
  int threads = 0;
};

void setup_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Loss and perplexity, or multiple-choice accuracy, of a model (and adapter) on a data file");
  cmd->add_option("--model", a->model, "Base model directory")->required();
  cmd->add_option("--adapter", a->adapter, "PEFT LoRA adapter directory");
  cmd->add_option("--data", a->data, "Data file (JSON lines)")->required();
  cmd->add_option("--format", a->format, "Data format: auto, text, completion, alpaca, chat, tokenized")
      ->check(CLI::IsMember({"auto", "text", "completion", "alpaca", "chat", "tokenized"}));
  cmd->add_flag("--train-on-prompt", a->train_on_prompt, "Count prompt tokens in the loss too");
  cmd->add_option("--batch", a->batch, "Sequences per batch")->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", a->seq_len, "Maximum tokens per sequence")->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)");
  cmd->add_option("--metric", a->metric, "loss (loss and perplexity) or choice (accuracy by rank classification on "
                  "{\"prompt\", \"choices\", \"answer\"} lines)")
      ->check(CLI::IsMember({"loss", "choice"}));
  cmd->add_option("--choice-score", a->choice_score, "With --metric choice: mean (length-normalised) or sum log-likelihood")
      ->check(CLI::IsMember({"mean", "sum"}));
  cmd->add_flag("--json", a->json, "Print {\"loss\", \"perplexity\", \"tokens\"} (or {\"accuracy\", \"correct\", \"total\"}) as JSON");
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    auto model = qpeft::load_model(a->model);
    if (!a->adapter.empty()) qpeft::load_lora_adapter(*model, a->adapter);
    if (a->metric == "choice") {
      qpeft::ChoiceScore how;
      qpeft::parse_choice_score(a->choice_score, &how);
      auto data = qpeft::load_choice_examples(a->data, a->model, model->config().vocab_size);
      qpeft::ChoiceEvalResult r = qpeft::evaluate_choices(*model, data, how, a->seq_len);
      if (a->json) {
        nlohmann::json j = {{"accuracy", r.accuracy}, {"correct", r.correct}, {"total", r.total}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("accuracy %.4f  correct %lld  total %lld\n", r.accuracy, (long long)r.correct, (long long)r.total);
      }
      return;
    }
    qpeft::DataOptions dopt;
    qpeft::parse_data_format(a->format, &dopt.format);
    dopt.train_on_prompt = a->train_on_prompt;
    auto data = qpeft::load_examples(a->data, a->model, model->config().vocab_size, dopt);
    qpeft::EvalResult r = qpeft::evaluate(*model, data, a->batch, a->seq_len);
    if (a->json) {
      nlohmann::json j = {{"loss", r.loss}, {"perplexity", r.perplexity}, {"tokens", r.tokens}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("loss %.6f  perplexity %.4f  tokens %lld\n", r.loss, r.perplexity, (long long)r.tokens);
    }
  });
}

struct MergeArgs {
  std::string model, adapter, out, dtype;
  int threads = 0;
};

void setup_merge(CLI::App& app) {
  auto a = std::make_shared<MergeArgs>();
  auto* cmd = app.add_subcommand("merge", "Merge a LoRA adapter into the base: W + s·B·A, written as a plain checkpoint");
  cmd->add_option("--model", a->model, "Base model directory")->required();
  cmd->add_option("--adapter", a->adapter, "PEFT LoRA adapter directory")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "Output dtype (default: the base's)")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)");
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    auto model = qpeft::load_model(a->model);
    qpeft::load_lora_adapter(*model, a->adapter);
    qpeft::DType base = qpeft::DType::F32;
    auto* emb = dynamic_cast<const qpeft::DenseWeight*>(model->embed_tokens().get());
    if (emb) base = emb->tensor().dtype();
    qpeft::SaveOptions opt;
    opt.dtype = a->dtype.empty() ? base : (a->dtype == "bf16" ? qpeft::DType::BF16 : a->dtype == "f16" ? qpeft::DType::F16 : qpeft::DType::F32);
    opt.matrix = [](const qpeft::WeightSlot& s) -> qpeft::Tensor {
      if (s.linear) return qpeft::merged_weight(*s.linear);
      return qpeft::decode_to_f32(**s.frozen);
    };
    qpeft::save_model(*model, a->out, opt);
    qpeft::copy_tokenizer_files(a->model, a->out);
    std::fprintf(stderr, "merged %s into %s -> %s\n", a->adapter.c_str(), a->model.c_str(), a->out.c_str());
  });
}

}  // namespace

QPEFT_COMMAND(eval, setup_eval);
QPEFT_COMMAND(merge, setup_merge);
