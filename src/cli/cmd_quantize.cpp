// qpeft quantize: a dense Hugging Face checkpoint -> a bitsandbytes 4-bit checkpoint (NF4/FP4,
// or qpeft's NF2/NF3/uniform in the same layout). Linear weights are quantized one at a time
// while written, straight from the memory-mapped input; embeddings, lm_head and norms are copied.
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"

namespace {

struct QuantizeArgs {
  std::string model, out, quant = "nf4";
  int64_t block_size = 64;
  bool double_quant = false;
  int threads = 0;
};

void setup(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand("quantize", "Quantize a model's linear weights into a bitsandbytes 4-bit checkpoint");
  cmd->add_option("--model", a->model, "Dense model directory (config.json + safetensors)")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--quant", a->quant, "Format: nf4, fp4 (bitsandbytes) or nf2, nf3, uniform2..4 (qpeft)")
      ->check(CLI::IsMember(qpeft::cli::stored_quant_formats()));
  cmd->add_option("--block-size", a->block_size, "Values per scale: a power of two in 32..4096");
  cmd->add_flag("--double-quant", a->double_quant, "Quantize the block scales too (QLoRA double quantization)");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    qpeft::check_block_size(a->block_size, "--block-size");
    auto model = qpeft::load_model(a->model);
    qpeft::DType dtype = qpeft::DType::F32;
    bool any_quantized = false;
    model->visit_linears([&](qpeft::Linear& l) {
      any_quantized = any_quantized || dynamic_cast<const qpeft::QuantizedWeight*>(l.weight.get());
    });
    QP_CHECK(!any_quantized,
             "{}: the model is already quantized; `qpeft quantize` needs a dense model (start from the original "
             "bf16/f32 weights to change the format)",
             a->model);
    if (auto* emb = dynamic_cast<const qpeft::DenseWeight*>(model->embed_tokens().get())) dtype = emb->tensor().dtype();
    qpeft::SaveOptions opt;
    opt.dtype = dtype;  // norms and the dense tensors keep the model's dtype
    opt.quant = {a->quant, a->block_size, a->double_quant};
    size_t quantized_bytes = 0;
    int64_t params = 0;
    opt.on_quantized = [&](const qpeft::WeightSlot&, const qpeft::QuantizedWeight& q, const qpeft::Tensor&) {
      quantized_bytes += q.storage_bytes();
      params += q.numel();
    };
    qpeft::save_model(*model, a->out, opt);
    qpeft::copy_tokenizer_files(a->model, a->out);
    std::fprintf(stderr, "quantized %s -> %s: %.1fM linear parameters in %s%s, block %lld, %.3f bits/param\n",
                 a->model.c_str(), a->out.c_str(), double(params) / 1e6, a->quant.c_str(),
                 a->double_quant ? " + double quant" : "", (long long)a->block_size,
                 params ? 8.0 * double(quantized_bytes) / double(params) : 0.0);
  });
}

struct DequantizeArgs {
  std::string model, out, dtype = "bf16";
  int threads = 0;
};

// qpeft dequantize: a plain dense checkpoint of a quantized base (what the LoftQ repository
// publishes for 2-bit models), so a qpeft LoftQ base + adapter can go to transformers and PEFT.
void setup_dequantize(CLI::App& app) {
  auto a = std::make_shared<DequantizeArgs>();
  auto* cmd = app.add_subcommand("dequantize",
                                 "Write a dense checkpoint of a quantized model (bitsandbytes or qpeft formats)");
  cmd->add_option("--model", a->model, "Quantized model directory")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "Output dtype of every tensor")->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  cmd->callback([a] {
    qpeft::set_num_threads(a->threads);
    auto model = qpeft::load_model(a->model);
    int64_t quantized = 0;
    model->visit_linears([&](qpeft::Linear& l) {
      quantized += dynamic_cast<const qpeft::QuantizedWeight*>(l.weight.get()) != nullptr;
    });
    QP_CHECK(quantized > 0, "{}: no weight is quantized; there is nothing to dequantize", a->model);
    qpeft::SaveOptions opt;
    opt.dtype = a->dtype == "f32" ? qpeft::DType::F32 : a->dtype == "f16" ? qpeft::DType::F16 : qpeft::DType::BF16;
    opt.matrix = [](const qpeft::WeightSlot& s) { return qpeft::decode_to_f32(**s.frozen); };
    opt.extra_files = [&](const std::string& tmp) { qpeft::copy_tokenizer_files(a->model, tmp); };
    qpeft::save_model(*model, a->out, opt);
    std::fprintf(stderr, "dequantized %lld quantized weights of %s -> %s (%s)\n", (long long)quantized,
                 a->model.c_str(), a->out.c_str(), a->dtype.c_str());
  });
}

}  // namespace

QPEFT_COMMAND(quantize, setup);
QPEFT_COMMAND(dequantize, setup_dequantize);
