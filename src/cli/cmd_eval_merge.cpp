// qpeft eval (loss / perplexity, or multiple-choice accuracy) and qpeft merge (the adapter folded into
// the weights: W + s·B·A for LoRA, rows or columns scaled for (IA)³; a plain checkpoint).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "quant/quantized_weight.h"
#include "train/trainer.h"

namespace {

struct EvalArgs {
  std::string model, data, format = "auto", metric = "loss", choice_score = "mean", base_quant = "auto";
  std::vector<std::string> adapters;
  bool json = false, train_on_prompt = false;
  int64_t batch = 4, seq_len = 2048;
  int threads = 0;
  std::string compute_dtype = "f32";
  std::string ggml_activations = "q8";
};

// {"NAME": {...}} per adapter of the examples, in the order given (then __base__).
template <class Stats, class ToJson>
nlohmann::ordered_json per_adapter_json(const std::map<int32_t, Stats>& by, const std::vector<std::string>& names,
                                        ToJson to_json) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [a, st] : by)
    if (a != qpeft::kBaseAdapter) j[qpeft::cli::adapter_name(names, a)] = to_json(st);
  if (by.count(qpeft::kBaseAdapter)) j[qpeft::kBaseAdapterName] = to_json(by.at(qpeft::kBaseAdapter));
  return j;
}

void setup_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Loss and perplexity, or multiple-choice accuracy, of a model (and adapter) on a data file");
  cmd->add_option("--model", a->model, "Base model directory")->required();
  qpeft::cli::add_adapters_option(cmd, &a->adapters);
  qpeft::cli::add_base_quant_option(cmd, &a->base_quant);
  cmd->add_option("--data", a->data, "Data file (JSON lines; a line's \"adapter\" field names its adapter)")->required();
  cmd->add_option("--format", a->format, "Data format: auto, text, completion, alpaca, chat, tokenized")
      ->check(CLI::IsMember({"auto", "text", "completion", "alpaca", "chat", "tokenized"}));
  cmd->add_flag("--train-on-prompt", a->train_on_prompt, "Count prompt tokens in the loss too");
  cmd->add_option("--batch", a->batch, "Sequences per batch (--metric choice: examples, all their choices together)")
      ->check(qpeft::cli::count_at_least(1));
  cmd->add_option("--seq-len", a->seq_len, "Maximum tokens per sequence")->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  qpeft::cli::add_compute_dtype_option(cmd, &a->compute_dtype);
  qpeft::cli::add_ggml_activations_option(cmd, &a->ggml_activations);
  cmd->add_option("--metric", a->metric, "loss (loss and perplexity) or choice (accuracy by rank classification on "
                  "{\"prompt\", \"choices\", \"answer\"} lines)")
      ->check(CLI::IsMember({"loss", "choice"}));
  cmd->add_option("--choice-score", a->choice_score, "With --metric choice: mean (length-normalised) or sum log-likelihood")
      ->check(CLI::IsMember({"mean", "sum"}));
  cmd->add_flag("--json", a->json, "Print {\"loss\", \"perplexity\", \"tokens\"} (or {\"accuracy\", \"correct\", \"total\"}) "
                "as JSON, with the same per adapter under \"adapters\"");
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    qpeft::cli::apply_compute_dtype(a->compute_dtype);
    qpeft::cli::apply_ggml_activations(a->ggml_activations);
    std::vector<std::string> names;
    auto model = qpeft::cli::load_model_with_adapters_for_command(a->model, a->adapters, a->base_quant, &names);
    qpeft::DataOptions dopt;
    dopt.route_adapters = true;
    dopt.adapter_names = names;
    if (a->metric == "choice") {
      qpeft::ChoiceScore how;
      qpeft::parse_choice_score(a->choice_score, &how);
      auto data = qpeft::load_choice_examples(a->data, a->model, model->config().vocab_size, dopt);
      qpeft::ChoiceEvalResult r = qpeft::evaluate_choices(*model, data, how, a->seq_len, a->batch);
      auto stats = [](const qpeft::ChoiceStats& s) {
        return nlohmann::ordered_json{{"accuracy", s.accuracy}, {"correct", s.correct}, {"total", s.total}};
      };
      if (a->json) {
        nlohmann::ordered_json j = stats(r);
        j["adapters"] = per_adapter_json(r.adapters, names, stats);
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("accuracy %.4f  correct %lld  total %lld\n", r.accuracy, (long long)r.correct, (long long)r.total);
        const auto per = per_adapter_json(r.adapters, names, stats);
        if (r.adapters.size() > 1)
          for (const auto& [name, j] : per.items())
            std::printf("  adapter %s: accuracy %.4f  correct %lld  total %lld\n", name.c_str(),
                        j["accuracy"].get<double>(), (long long)j["correct"].get<int64_t>(),
                        (long long)j["total"].get<int64_t>());
      }
      return;
    }
    qpeft::parse_data_format(a->format, &dopt.format);
    dopt.train_on_prompt = a->train_on_prompt;
    auto data = qpeft::load_examples(a->data, a->model, model->config().vocab_size, dopt);
    qpeft::EvalResult r = qpeft::evaluate(*model, data, a->batch, a->seq_len);
    auto stats = [](const qpeft::LossStats& s) {
      return nlohmann::ordered_json{
          {"loss", s.loss}, {"perplexity", s.perplexity}, {"tokens", s.tokens}, {"examples", s.examples}};
    };
    if (a->json) {
      nlohmann::ordered_json j = {{"loss", r.loss}, {"perplexity", r.perplexity}, {"tokens", r.tokens}};
      j["adapters"] = per_adapter_json(r.adapters, names, stats);
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("loss %.6f  perplexity %.4f  tokens %lld\n", r.loss, r.perplexity, (long long)r.tokens);
      const auto per = per_adapter_json(r.adapters, names, stats);
      if (r.adapters.size() > 1)
        for (const auto& [name, j] : per.items())
          std::printf("  adapter %s: loss %.6f  perplexity %.4f  tokens %lld  examples %lld\n", name.c_str(),
                      j["loss"].get<double>(), j["perplexity"].get<double>(), (long long)j["tokens"].get<int64_t>(),
                      (long long)j["examples"].get<int64_t>());
    }
  });
}

struct MergeArgs {
  std::string model, adapter, out, dtype, base_quant = "none";
  bool requantize = false;
  int threads = 0;
};

// Rounding error of requantizing merged weights: per weight ‖Q(W) − W‖_F / ‖W‖_F and, against
// the adapter's own update ΔW = W − W0, ‖Q(W) − W‖_F / ‖ΔW‖_F (above ~1 the merge is mostly noise).
struct RequantStats {
  double max_rel = 0, sum_rel = 0, max_vs_delta = 0;
  std::string worst, worst_delta;
  int64_t count = 0;

  void add(const std::string& name, const qpeft::FrozenWeight& base, const qpeft::QuantizedWeight& q,
           const qpeft::Tensor& exact) {
    const int64_t rows = q.rows(), cols = q.cols(), tile = std::max<int64_t>(1, q.row_tile());
    std::vector<float> qbuf(size_t(tile * cols)), bbuf(size_t(tile * cols));
    const float* w = exact.f32();
    double err2 = 0, w2 = 0, d2 = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
      const int64_t r1 = std::min(rows, r0 + tile);
      const float* qr = q.decode_rows(r0, r1, qbuf.data());
      const float* br = base.decode_rows(r0, r1, bbuf.data());
      for (int64_t i = 0; i < (r1 - r0) * cols; ++i) {
        const double x = w[r0 * cols + i];
        err2 += (qr[i] - x) * (qr[i] - x);
        w2 += x * x;
        d2 += (x - br[i]) * (x - br[i]);
      }
    }
    const double rel = w2 > 0 ? std::sqrt(err2 / w2) : 0, vs = d2 > 0 ? std::sqrt(err2 / d2) : 0;
    if (rel >= max_rel) max_rel = rel, worst = name;
    if (vs >= max_vs_delta) max_vs_delta = vs, worst_delta = name;
    sum_rel += rel;
    ++count;
  }
};

void setup_merge(CLI::App& app) {
  auto a = std::make_shared<MergeArgs>();
  auto* cmd = app.add_subcommand("merge", "Merge an adapter into the base (LoRA: W + s·B·A; (IA)³: W's rows or columns "
                                 "scaled), written as a plain checkpoint");
  cmd->add_option("--model", a->model, "Base model directory (dense or bitsandbytes 4-bit)")->required();
  cmd->add_option("--adapter", a->adapter, "PEFT adapter directory (LoRA or IA3)")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "Output dtype (default: the base's; bf16 when the base is quantized)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_flag("--requantize", a->requantize,
                "Quantize the merged weights again in the base's format (prints the rounding error)");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->add_option("--base-quant", a->base_quant,
                  "none (default, as PEFT: merge into the stored weights), auto (into the base quantized as the "
                  "adapter was trained, dequantized: the merged model computes what eval measured), or nf4, fp4, "
                  "nf2, nf3, uniform2..4, int8 (blockwise absmax)")
      ->check(CLI::IsMember(qpeft::cli::frozen_quant_formats({"auto", "none"})));
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    auto model = qpeft::cli::load_model_for_command(a->model, a->adapter, a->base_quant);
    bool quantized_base = false;
    model->visit_linears([&](qpeft::Linear& l) {
      quantized_base = quantized_base || dynamic_cast<const qpeft::QuantizedWeight*>(l.weight.get());
    });
    QP_CHECK(!a->requantize || quantized_base,
             "--requantize: the base {} is not quantized; merge into it without --requantize, or quantize the "
             "merged model with `qpeft quantize`",
             a->model);
    qpeft::DType base = quantized_base ? qpeft::DType::BF16 : qpeft::DType::F32;
    auto* emb = dynamic_cast<const qpeft::DenseWeight*>(model->embed_tokens().get());
    if (emb && !quantized_base) base = emb->tensor().dtype();
    qpeft::SaveOptions opt;
    opt.dtype = a->dtype.empty() ? base : (a->dtype == "bf16" ? qpeft::DType::BF16 : a->dtype == "f16" ? qpeft::DType::F16 : qpeft::DType::F32);
    opt.matrix = qpeft::merged_slot_matrix;
    opt.vector = qpeft::merged_slot_vector;
    opt.requantize = a->requantize;
    RequantStats stats;
    opt.on_quantized = [&stats](const qpeft::WeightSlot& s, const qpeft::QuantizedWeight& q, const qpeft::Tensor& exact) {
      stats.add(s.name, **s.frozen, q, exact);
    };
    qpeft::save_model(*model, a->out, opt);
    qpeft::copy_tokenizer_files(a->model, a->out);
    std::fprintf(stderr, "merged %s into %s -> %s (%s)\n", a->adapter.c_str(), a->model.c_str(), a->out.c_str(),
                 a->requantize ? "requantized in the base's format" : qpeft::dtype_name(opt.dtype));
    if (a->requantize && stats.count)
      std::fprintf(stderr,
                   "warning: requantizing the merged weights rounds them again: relative Frobenius error "
                   "|Q(W)-W|/|W| max %.4g (%s), mean %.4g over %lld weights; against the adapter's update "
                   "|Q(W)-W|/|W-W0| max %.4g (%s). Merge to bf16 (no --requantize) to keep the adapter exactly.\n",
                   stats.max_rel, stats.worst.c_str(), stats.sum_rel / double(stats.count), (long long)stats.count,
                   stats.max_vs_delta, stats.worst_delta.c_str());
  });
}

}  // namespace

QPEFT_COMMAND(eval, setup_eval);
QPEFT_COMMAND(merge, setup_merge);
