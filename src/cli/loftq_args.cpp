#include "cli/loftq_args.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli/args.h"
#include "core/error.h"

namespace qpeft::cli {

namespace {

const std::vector<std::string> kFormats = {"nf2", "nf3", "nf4", "fp4", "uniform2", "uniform3", "uniform4"};

}  // namespace

void add_loftq_options(CLI::App* cmd, LoftqFlags* f, bool for_train) {
  if (!for_train) {
    cmd->add_option("--quant", f->quant, "Format of the targeted weights: nf2, nf3, nf4, uniform2, uniform3, uniform4 (fp4 too)")
        ->check(CLI::IsMember(kFormats));
    cmd->add_option("--block-size", f->block_size, "Values per block scale: a power of two in 32..4096 dividing each row");
    cmd->add_flag("--double-quant", f->double_quant, "Quantize the block scales too (QLoRA double quantization)");
    cmd->add_option("--rank", f->rank, "LoRA rank r")->check(count_at_least(1));
    cmd->add_option("--alpha", f->alpha, "LoRA alpha (default: = rank, scaling 1)")->check(finite_in(-1e6, 1e6));
    cmd->add_flag("--rslora", f->rslora, "Rank-stabilised scaling alpha / sqrt(r)");
    cmd->add_option("--targets", f->targets, "Linear layers to quantize and adapt: all-linear or a list like q_proj,v_proj");
    cmd->add_option("--rank-pattern", f->rank_pattern, "Per-module ranks, e.g. 'q_proj=16,layers.0.mlp.down_proj=4'");
    cmd->add_option("--alpha-pattern", f->alpha_pattern, "Per-module alphas, same form as --rank-pattern");
    cmd->add_option("--iters", f->iters, "Alternating steps T (1 as PEFT; the paper's GLUE runs use 5)")
        ->check(CLI::Range(1, 100));
    cmd->add_flag("--quiet", f->quiet, "No progress output");
  } else {
    cmd->add_option("--loftq-iters", f->iters, "loftq: alternating steps T (default 1)")->check(CLI::Range(1, 100));
  }
  cmd->add_option("--layer-quant", f->layer_quant,
                  "Format per layer or module, first match wins, the --quant format elsewhere: e.g. "
                  "'layers.0-3=nf4,*=nf2' (the paper's 2.5 bits on 8 layers); selectors *, q_proj..down_proj, "
                  "self_attn, mlp, layers.N, layers.A-B[.MODULE]");
  cmd->add_option("--svd", f->svd,
                  "Truncated SVD: exact (LAPACK dgesdd), randomized (sketch + power iterations), or auto (randomized "
                  "when min(out, in) > 1024)")
      ->check(CLI::IsMember({"auto", "exact", "randomized"}));
  cmd->add_option("--svd-power-iters", f->power_iters, "Randomized SVD: power iterations")->check(CLI::Range(0, 50));
}

LoftqOptions loftq_options(const LoftqFlags& f, CLI::App* cmd) {
  LoftqOptions o;
  QuantFormat fallback;
  QP_CHECK(parse_quant_format(f.quant, &fallback), "--quant '{}': unknown format", f.quant);
  o.quant = LayerQuantPlan::parse(f.layer_quant, fallback);
  check_block_size(f.block_size, "--block-size");
  o.block_size = f.block_size;
  o.double_quant = f.double_quant;
  o.iters = f.iters;
  QP_CHECK(parse_svd_method(f.svd, &o.svd.method), "--svd '{}': choose auto, exact or randomized", f.svd);
  o.svd.power_iters = f.power_iters;
  o.svd.seed = f.seed;
  o.lora.r = f.rank;
  o.lora.alpha = f.alpha > 0 ? f.alpha : double(f.rank);
  QP_CHECK(std::isfinite(o.lora.alpha), "--alpha must be a positive number");
  o.lora.use_rslora = f.rslora;
  o.lora.target_modules = split_csv(f.targets);
  o.lora.rank_pattern = parse_module_pattern<int64_t>(f.rank_pattern, "--rank-pattern");
  o.lora.alpha_pattern = parse_module_pattern<double>(f.alpha_pattern, "--alpha-pattern");
  (void)cmd;
  return o;
}

void add_loftq_progress(LoftqOptions* o) {
  const auto t0 = std::chrono::steady_clock::now();
  // The plan is printed with the first layer: after apply_loftq has checked every layer.
  const std::string plan = fmt::format(
      "loftq: {}{}{}, block {}{}, T = {}, LoRA r {} alpha {}{}, SVD {}", quant_format_name(o->quant.fallback()),
      o->quant.spec().empty() ? "" : " with --layer-quant ", o->quant.spec(), o->block_size,
      o->double_quant ? " + double quant" : "", o->iters, o->lora.r, o->lora.alpha,
      o->lora.use_rslora ? " (rsLoRA)" : "", svd_method_name(o->svd.method));
  o->on_layer = [t0, plan](int64_t done, int64_t total, const Linear& l, const LoftqMatrixResult& r) {
      if (done == 1) std::fprintf(stderr, "%s\n", plan.c_str());
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double eta = el / double(done) * double(total - done);
      std::fprintf(stderr,
                   "[%lld/%lld] %s %s [%lld, %lld] svd %s: relative error %.4f -> %.4f | %.0f s elapsed, ETA %.0f s\n",
                   (long long)done, (long long)total, l.name.c_str(), quant_format_name(r.q->format()),
                   (long long)l.out_features, (long long)l.in_features, svd_method_name(r.svd_method),
                   r.plain_error / r.weight_norm, r.loftq_error / r.weight_norm, el, eta);
    };
}

LoftqSummary run_loftq(LlamaModel& model, const LoftqOptions& opt_in, bool quiet) {
  LoftqOptions opt = opt_in;
  if (!quiet) add_loftq_progress(&opt);
  LoftqSummary sum = apply_loftq(model, opt);
  if (!quiet) {
    std::string mix;
    for (const auto& [name, n] : sum.params_by_format)
      mix += fmt::format("{}{} {:.1f}%", mix.empty() ? "" : ", ", name,
                         100.0 * double(n) / double(std::max<int64_t>(1, sum.quantized_params)));
    std::fprintf(stderr, "loftq: average %.3f bits/param over the quantized weights (%s)\n", sum.bits_per_param(),
                 mix.c_str());
  }
  return sum;
}

}  // namespace qpeft::cli
