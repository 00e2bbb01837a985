#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "gen_fixtures.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "peft/adapter_io.h"
#include "test_util.h"
#include "train/choice_forward.h"
#include "train/schedule.h"
#include "train/trainer.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

TrainOptions small_run(const TempDir& tmp, const std::string& out) {
  TrainOptions o;
  o.model_dir = golden_dir("llama");
  o.data_path = tmp / "data.jsonl";
  o.out_dir = tmp / out;
  o.lora.target_modules = {"all-linear"};
  o.lora.r = 4;
  o.lora.alpha = 8;
  o.lora.dropout = 0.1;
  o.steps = 6;
  o.batch = 2;
  o.seq_len = 16;
  o.lr = 5e-3;
  o.weight_decay = 0.01;
  o.schedule = "cosine";
  o.warmup_steps = 2;
  o.quiet = true;
  o.packing = false;
  return o;
}

// Repetitive data and a model whose head can express confident predictions: the golden
// models' 0.02-scale head keeps logits within ~±1, so tests that must see learning use a
// wider (0.15) initialisation of the same shape.
TrainOptions learnable_run(const TempDir& tmp, const char* variant, DType dtype) {
  write_file(tmp / "data.jsonl", repetitive_jsonl(16, 16, 96, 3));
  write_random_model(ModelConfig::load(golden_dir(variant)), dtype, 5, tmp / "model", {}, 0.15);
  TrainOptions o = small_run(tmp, "out");
  o.model_dir = tmp / "model";
  o.schedule = "constant";
  o.warmup_steps = 0;
  return o;
}

// The file a finished run writes last: the adapter, or OUT/model's weights for full training.
std::string final_output(const TrainOptions& o) {
  return o.out_dir + (o.method == "full" ? "/model/model.safetensors" : "/adapter_model.safetensors");
}

// Emulates an interrupted run: trains `o` to the end, deletes its last checkpoint and final
// output, and resumes from the checkpoint before; returns the final output's bytes.
std::string train_interrupted_then_resumed(TrainOptions o) {
  train(o);
  std::filesystem::remove_all(o.out_dir + "/checkpoint-" + std::to_string(o.steps));
  std::filesystem::remove_all(o.method == "full" ? o.out_dir + "/model" : final_output(o));
  o.resume = true;
  train(o);
  return read_file(final_output(o));
}

// A model with a tokenizer (tmp/model, returned) and a multiple-choice task whose answer is the
// prompt's last letter (p: " yes", q: " no"), 24 examples in tmp/mc.jsonl.
std::string write_choice_task(const TempDir& tmp) {
  const std::string model_dir = tmp / "model";
  write_random_model(ModelConfig::load(golden_dir("llama")), DType::F32, 5, model_dir, {}, 0.15);
  write_file(model_dir + "/tokenizer.json", gen_fixtures::tokenizer_json().dump());
  write_file(model_dir + "/tokenizer_config.json", gen_fixtures::tokenizer_config_json());
  std::string lines;
  Rng rng(3);
  for (int i = 0; i < 24; ++i) {
    std::string word;
    for (int k = 0; k < 5; ++k) word += char('a' + rng.below(8));
    const bool yes = i % 2 == 0;
    lines += nlohmann::json{{"prompt", word + (yes ? " p" : " q")}, {"choices", {" yes", " no"}}, {"answer", yes ? 0 : 1}}
                 .dump() +
             "\n";
  }
  write_file(tmp / "mc.jsonl", lines);
  return model_dir;
}

// o for 4 steps saved every 2: uninterrupted (in tmp/a) and interrupted then resumed (tmp/b)
// it writes the same bytes. Returns the uninterrupted run's options.
TrainOptions expect_short_resume_bit_identical(const TrainOptions& o, const TempDir& tmp) {
  TrainOptions a = o, b = o;
  a.out_dir = tmp / "a";
  b.out_dir = tmp / "b";
  a.steps = b.steps = 4;
  a.save_every = b.save_every = 2;
  train(a);
  EXPECT_EQ(read_file(final_output(a)), train_interrupted_then_resumed(b));
  return a;
}

}  // namespace

TEST(Schedule, MatchesHuggingFaceFactors) {
  LrSchedule s{"linear", 1.0, 2, 10};
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.at(2), 1.0);
  EXPECT_DOUBLE_EQ(s.at(6), 0.5);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
  LrSchedule c{"cosine", 2.0, 0, 4};
  EXPECT_DOUBLE_EQ(c.at(0), 2.0);
  EXPECT_NEAR(c.at(2), 1.0, 1e-12);
  LrSchedule k{"constant", 3.0, 4, 100};
  EXPECT_DOUBLE_EQ(k.at(1), 0.75);
  EXPECT_DOUBLE_EQ(k.at(50), 3.0);
}

TEST(TrainLoop, ResumeIsBitIdentical) {
  TempDir tmp("resume");
  write_file(tmp / "data.jsonl", repetitive_jsonl(10, 14, 96, 1));
  TrainOptions full = small_run(tmp, "full");
  full.save_every = 3;
  full.metrics_path = tmp / "full_metrics.jsonl";
  train(full);

  TrainOptions first = small_run(tmp, "split");
  first.steps = 6;
  first.save_every = 3;
  first.metrics_path = tmp / "split_metrics.jsonl";
  // Stop after 3 steps by training a 6-step schedule... interrupted: emulate by removing the
  // final checkpoint and the final adapter of a completed run, then resuming.
  train(first);
  std::filesystem::remove_all(first.out_dir + "/checkpoint-6");
  std::filesystem::remove(first.out_dir + "/adapter_model.safetensors");
  TrainOptions resumed = first;
  resumed.resume = true;
  resumed.metrics_path = tmp / "resumed_metrics.jsonl";
  train(resumed);
  EXPECT_EQ(read_file(full.out_dir + "/adapter_model.safetensors"),
            read_file(resumed.out_dir + "/adapter_model.safetensors"));
  EXPECT_EQ(read_file(full.out_dir + "/checkpoint-6/optimizer.safetensors"),
            read_file(resumed.out_dir + "/checkpoint-6/optimizer.safetensors"));
  // The resumed run logged steps 4..6 with the same losses as the full run.
  const std::string fm = read_file(full.metrics_path), rm = read_file(resumed.metrics_path);
  EXPECT_NE(rm.find("\"step\":4"), std::string::npos);
  EXPECT_EQ(rm.find("\"step\":3"), std::string::npos);
}

TEST(TrainLoop, SameSeedSameBitsAcrossRuns) {
  TempDir tmp("determinism");
  write_file(tmp / "data.jsonl", repetitive_jsonl(6, 12, 96, 2));
  TrainOptions a = small_run(tmp, "a"), b = small_run(tmp, "b");
  a.steps = b.steps = 3;
  train(a);
  train(b);
  EXPECT_EQ(read_file(a.out_dir + "/adapter_model.safetensors"), read_file(b.out_dir + "/adapter_model.safetensors"));
}

TEST(TrainLoop, RepetitiveDataDrivesTheLossDown) {
  TempDir tmp("learns");
  TrainOptions o = learnable_run(tmp, "llama", DType::F32);
  o.steps = 80;
  o.lr = 2e-2;
  o.lora.r = 8;
  o.lora.dropout = 0;
  o.eval_data_path = tmp / "data.jsonl";
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  auto model = load_model(o.model_dir);
  EvalResult before = evaluate(*model, load_examples(o.data_path, o.model_dir, 96), 4, 16);
  EXPECT_GT(before.loss, 4.0);  // ~ln(96) for a random model
}

// Multiple-choice data trains with T-Few's losses: a task whose answer is the prompt's last
// letter (p: " yes", q: " no") goes from chance to solved, and the in-training evaluation
// reports the same accuracy as eval --metric choice on the trained adapter.
TEST(TrainLoop, MultipleChoiceDataTrainsWithTFewLosses) {
  TempDir tmp("choice_train");
  const std::string model_dir = write_choice_task(tmp);
  const auto data = load_choice_examples(tmp / "mc.jsonl", model_dir, 96);
  const double before = evaluate_choices(*load_model(model_dir), data).accuracy;

  TrainOptions o = small_run(tmp, "out");
  o.model_dir = model_dir;
  o.data_path = o.eval_data_path = tmp / "mc.jsonl";
  o.metrics_path = tmp / "metrics.jsonl";
  o.steps = 40;
  o.batch = 4;
  o.lr = 2e-2;
  o.lora.r = 8;
  o.lora.dropout = 0;
  o.schedule = "constant";
  o.warmup_steps = 0;
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, r.first_loss);
  auto trained = load_model_with_adapter(model_dir, o.out_dir, "none", nullptr);
  const ChoiceEvalResult after = evaluate_choices(*trained, data, ChoiceScore::kMean, o.seq_len);
  EXPECT_LE(before, 0.75);
  EXPECT_GE(after.accuracy, 0.95) << "before " << before;
  const std::string metrics = read_file(o.metrics_path);
  const auto last = nlohmann::json::parse(metrics.substr(metrics.rfind('{')));
  EXPECT_DOUBLE_EQ(last.at("eval_accuracy").get<double>(), after.accuracy);
  for (const char* key : {"lm_loss", "ul_loss", "ln_loss", "batch_accuracy"}) EXPECT_TRUE(last.contains(key)) << key;

  // Interrupted after step 20 and resumed: the same adapter, bit for bit.
  TrainOptions b = o;
  b.out_dir = tmp / "b";
  b.metrics_path = b.eval_data_path = "";
  b.save_every = 20;
  EXPECT_EQ(read_file(final_output(o)), train_interrupted_then_resumed(b));

  ChoiceLossWeights w;
  EXPECT_TRUE(parse_choice_loss_terms("ln,lm", &w));
  EXPECT_EQ(w.lm, 1);
  EXPECT_EQ(w.ul, 0);
  EXPECT_EQ(w.ln, 1);
  EXPECT_FALSE(parse_choice_loss_terms("lm,xx", &w));
  EXPECT_FALSE(parse_choice_loss_terms("", &w));
  // Plain-sequence readers still refuse choice data, naming what to do instead.
  EXPECT_NE(error_of([&] { load_examples(tmp / "mc.jsonl", model_dir, 96); }).find("T-Few"), std::string::npos);
}

// (IA)³ the T-Few way: multiple-choice data, L_LM + L_UL + L_LN, only the vectors train (their
// optimizer state is theirs alone), resume is bit-identical on the dense and on an NF4 base (QIA3).
TEST(TrainLoop, Ia3LearnsMultipleChoiceAndResumesOnDenseAndQuantizedBases) {
  TempDir tmp("ia3_train");
  const std::string model_dir = write_choice_task(tmp);
  const auto data = load_choice_examples(tmp / "mc.jsonl", model_dir, 96);
  const double before = evaluate_choices(*load_model(model_dir), data).accuracy;

  TrainOptions o = small_run(tmp, "out");
  o.method = "ia3";
  o.model_dir = model_dir;
  o.data_path = tmp / "mc.jsonl";
  o.steps = 40;
  o.batch = 4;
  o.lr = 5e-2;
  o.schedule = "linear";
  o.warmup_steps = -1;
  o.warmup_ratio = 0.06;
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, r.first_loss);
  auto trained = load_model_with_adapter(model_dir, o.out_dir, "auto", nullptr);
  const ChoiceEvalResult after = evaluate_choices(*trained, data, ChoiceScore::kMean, o.seq_len);
  EXPECT_GT(after.accuracy, before);
  std::printf("(IA)3, 40 steps: accuracy %.3f -> %.3f, loss %.4f -> %.4f\n", before, after.accuracy, r.first_loss,
              r.last_loss);
  // The checkpoint's optimizer state covers exactly the vectors.
  auto st = SafetensorsFile::open(o.out_dir + "/checkpoint-40/optimizer.safetensors");
  int64_t state = 0;
  for (const auto& n : st->names()) state += st->get(n).numel();
  const ModelConfig mc = ModelConfig::load(model_dir);
  const int64_t vectors = mc.num_layers * (2 * mc.num_kv_heads * mc.head_dim + mc.intermediate_size);
  EXPECT_EQ(state, 2 * vectors) << "AdamW: two moments per vector entry";
  EXPECT_EQ(read_adapter_config(o.out_dir).index(), size_t(AdapterMethodKind::kIa3));

  o.steps = 10;
  o.save_every = 5;
  for (bool quantized : {false, true}) {
    SCOPED_TRACE(quantized ? "QIA3" : "dense");
    TrainOptions a = o, b = o;
    a.quantize_base = b.quantize_base = quantized;  // NF4 + double quantization on load
    a.out_dir = tmp / (quantized ? "qa" : "a");
    b.out_dir = tmp / (quantized ? "qb" : "b");
    train(a);
    EXPECT_EQ(read_file(final_output(a)), train_interrupted_then_resumed(b));
    EXPECT_EQ(adapter_base_quantization(a.out_dir).format, quantized ? "nf4" : "");
  }
}

TEST(TrainLoop, QloraWithPaged8bitAdamAndCheckpointingLearns) {
  TempDir tmp("qlora");
  TrainOptions o = learnable_run(tmp, "llama", DType::BF16);
  o.method = "qlora";  // NF4 + double quant on load
  o.optimizer = "paged_adamw8bit";
  o.grad_checkpoint = true;
  o.steps = 80;
  o.lr = 2e-2;
  o.lora.r = 8;
  o.lora.dropout = 0;
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  // Resuming a QLoRA run with 8-bit paged state is bit-identical too.
  expect_short_resume_bit_identical(o, tmp);
}

TEST(TrainLoop, FullFineTuningUpdatesEveryWeightAndResumes) {
  TempDir tmp("full");
  TrainOptions o = learnable_run(tmp, "qwen2", DType::F32);
  o.method = "full";
  o.save_dtype = DType::F32;
  o.steps = 30;
  o.lr = 3e-3;
  o.save_every = 15;
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  auto before = load_model(o.model_dir);
  auto after = load_model(o.out_dir + "/model");
  int tensors = 0;
  before->visit_weights([&](WeightSlot& s) {
    ++tensors;
    Tensor a = s.frozen ? decode_to_f32(**s.frozen) : s.vector->value();
    Tensor b;
    after->visit_weights([&](WeightSlot& t) {
      if (t.name == s.name) b = t.frozen ? decode_to_f32(**t.frozen) : t.vector->value();
    });
    ASSERT_TRUE(b.defined()) << s.name;
    double diff = 0;
    for (int64_t i = 0; i < a.numel(); ++i) diff = std::max(diff, double(std::fabs(a.f32()[i] - b.f32()[i])));
    EXPECT_GT(diff, 1e-5) << s.name << " did not change";
  });
  EXPECT_GT(tensors, 10);
  // Resume from checkpoint-15 reproduces the final model bit for bit.
  TrainOptions res = o;
  res.out_dir = tmp / "res";
  res.steps = 30;
  EXPECT_EQ(read_file(final_output(o)), train_interrupted_then_resumed(res));
}

TEST(TrainLoop, NonFiniteLossStopsWithTheLastGoodCheckpoint) {
  TempDir tmp("nan");
  write_file(tmp / "data.jsonl", repetitive_jsonl(8, 12, 96, 4));
  TrainOptions o = small_run(tmp, "out");
  o.steps = 30;
  o.save_every = 1;
  o.lr = 1e30;  // diverges
  o.max_grad_norm = 0;
  o.weight_decay = 0;
  o.warmup_steps = 0;
  try {
    train(o);
    FAIL() << "expected divergence to stop training";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("became") != std::string::npos) << msg;
    EXPECT_NE(msg.find("checkpoint-"), std::string::npos) << msg;
  }
  EXPECT_TRUE(file_exists(o.out_dir + "/checkpoint-1/trainer_state.json"));
}

TEST(TrainData, PackingAndBatches) {
  std::vector<Example> ex = {{{1, 2, 3}, {1, 2, 3}}, {{4, 5}, {-100, 5}}, {{6, 7, 8, 9}, {6, 7, 8, 9}}};
  auto packed = pack_examples(ex, 5);
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_EQ(packed[0].input_ids, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(packed[0].labels, (std::vector<int32_t>{1, 2, 3, -100, 5}));
  Batcher b(ex, 2, 3, 7, false, 0);
  Batch first = b.get(0);
  EXPECT_EQ(first.T, 3);
  EXPECT_EQ(first.ids, (std::vector<int32_t>{1, 2, 3, 4, 5, 0}));
  EXPECT_EQ(first.labels, (std::vector<int32_t>{1, 2, 3, -100, 5, -100}));
  Batch second = b.get(1);  // example 3 truncated to 3, then wraps around to example 1
  EXPECT_EQ(second.truncated, 1);
  EXPECT_EQ(second.ids, (std::vector<int32_t>{6, 7, 8, 1, 2, 3}));
}

TEST(TrainData, ErrorsNameFileAndLine) {
  TempDir tmp("data_errors");
  write_file(tmp / "bad.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 2,\n");
  try {
    load_examples(tmp / "bad.jsonl", golden_dir("llama"), 96);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  write_file(tmp / "oov.jsonl", "{\"input_ids\": [1, 2, 300]}\n");
  EXPECT_THROW(load_examples(tmp / "oov.jsonl", golden_dir("llama"), 96), Error);
  write_file(tmp / "empty.jsonl", "\n");
  EXPECT_THROW(load_examples(tmp / "empty.jsonl", golden_dir("llama"), 96), Error);
  write_file(tmp / "text.jsonl", "{\"text\": \"hello\"}\n");
  try {
    load_examples(tmp / "text.jsonl", golden_dir("llama"), 96);  // the golden model has no tokenizer
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer"), std::string::npos) << e.what();
  }
}

// --method loftq: the LoftQ init in memory at 2 bits, LoRA on the packed NF2 base (written to
// OUT/base), learning and resuming bit-identically; --init-adapter from a saved init is the
// same run.
TEST(TrainLoop, LoftqOnATwoBitBaseLearnsAndResumes) {
  TempDir tmp("loftq");
  TrainOptions o = learnable_run(tmp, "llama", DType::BF16);
  o.method = "loftq";
  o.quant = "nf2";
  o.quant_block = 32;  // the golden shape's MLP rows are 160 long
  o.double_quant = false;
  o.loftq.iters = 2;
  o.steps = 60;
  o.lr = 2e-2;
  o.lora.r = 8;
  o.lora.alpha = 16;
  o.lora.dropout = 0;
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  auto base = load_model(o.out_dir + "/base");
  int nf2 = 0;
  base->visit_linears([&](Linear& l) {
    auto* q = dynamic_cast<const QuantizedWeight*>(l.weight.get());
    nf2 += q && q->format() == QuantFormat::NF2;
  });
  EXPECT_EQ(nf2, 14);
  // The trained adapter evaluates on that base (auto: as stored) and refuses the dense one.
  auto trained = load_model_with_adapter(o.out_dir + "/base", o.out_dir, "auto", nullptr);
  EXPECT_NE(error_of([&] { load_model_with_adapter(o.model_dir, o.out_dir, "auto", nullptr); }).find("LoftQ"),
            std::string::npos);

  const TrainOptions a = expect_short_resume_bit_identical(o, tmp);

  // The same init saved (OUT/base + the step-0 adapter) and given as --init-adapter.
  TrainOptions init = o;
  init.out_dir = tmp / "init";
  init.steps = 1;
  init.lr = 1e-30;  // one step that changes nothing measurable; the saved adapter is the init
  train(init);
  TrainOptions c = a;
  c.method = "lora";
  c.model_dir = init.out_dir + "/base";
  c.init_adapter = init.out_dir;
  c.out_dir = tmp / "c";
  c.save_every = 0;
  c.lora = {};  // rank, alpha, targets come from the adapter
  c.lora.dropout = 0;
  TrainResult rc = train(c);
  TrainResult ra = train([&] { TrainOptions x = a; x.out_dir = tmp / "a2"; x.save_every = 0; return x; }());
  EXPECT_NEAR(rc.first_loss, ra.first_loss, 1e-4 * ra.first_loss);
  EXPECT_NEAR(rc.last_loss, ra.last_loss, 1e-3 * ra.last_loss);
}

// length_runs: the cheapest contiguous cut (checked against every cut of small batches), each
// run at its longest labelled span.
TEST(TrainData, LengthRunsAreTheCheapestCut) {
  Rng rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    Batch b;
    b.B = 1 + int64_t(rng.below(8));
    b.T = 2 + int64_t(rng.below(12));
    b.labels.assign(size_t(b.B * b.T), kIgnoreIndex);
    std::vector<int64_t> need(size_t(b.B), 1);
    for (int64_t r = 0; r < b.B; ++r) {
      const int64_t last = int64_t(rng.below(uint64_t(b.T)));  // 0: no label at all
      if (last > 0) {
        b.labels[size_t(r * b.T + last)] = 5;
        need[size_t(r)] = last + 1;
      }
    }
    const int64_t overhead = int64_t(rng.below(6));
    auto cost_of = [&](const std::vector<RowRun>& runs) {
      int64_t c = overhead * (int64_t(runs.size()) - 1);
      for (const RowRun& run : runs) c += (run.end - run.begin) * run.T;
      return c;
    };
    int64_t best = std::numeric_limits<int64_t>::max();
    for (uint32_t cuts = 0; cuts < (1u << (b.B - 1)); ++cuts) {
      std::vector<RowRun> runs(1);
      for (int64_t r = 0; r < b.B; ++r) {
        if (r > 0 && (cuts >> (r - 1) & 1)) runs.push_back({r, r, 0});
        runs.back().end = r + 1;
        runs.back().T = std::max(runs.back().T, need[size_t(r)]);
      }
      best = std::min(best, cost_of(runs));
    }
    const std::vector<RowRun> runs = length_runs(b, overhead);
    ASSERT_FALSE(runs.empty());
    EXPECT_EQ(runs.front().begin, 0);
    EXPECT_EQ(runs.back().end, b.B);
    for (size_t i = 0; i < runs.size(); ++i) {
      if (i > 0) {
        EXPECT_EQ(runs[i].begin, runs[i - 1].end);
      }
      int64_t longest = 0;
      for (int64_t r = runs[i].begin; r < runs[i].end; ++r) longest = std::max(longest, need[size_t(r)]);
      EXPECT_EQ(runs[i].T, longest);
    }
    EXPECT_EQ(cost_of(runs), best) << "trial " << trial;
  }
}

// A choice batch of very different prompt lengths computed run by run gives the losses and
// gradients of one forward padded to its longest row.
TEST(TrainData, ChoiceRunsMatchOnePaddedForward) {
  auto model = load_model(golden_dir("llama"));
  const auto params = model->make_fully_trainable();
  std::vector<ChoiceExample> data;
  Rng rng(5);
  for (int64_t len : {3, 40, 5, 6, 33, 2, 4, 28}) {
    ChoiceExample ex;
    for (int64_t i = 0; i < len; ++i) ex.prompt_ids.push_back(int32_t(1 + rng.below(90)));
    ex.choice_ids = {{int32_t(7)}, {int32_t(9), int32_t(11)}};
    ex.answer = int(len % 2);
    data.push_back(ex);
  }
  ChoiceBatcher batcher(data, int64_t(data.size()), 64, 1, false, 0);
  const ChoiceBatch cb = batcher.get(0);
  ASSERT_GT(length_runs(cb.rows, 0).size(), 2u);
  auto losses_and_grads = [&](int64_t overhead, std::vector<std::vector<float>>* grads) {
    for (const auto& [name, p] : params) p.zero_grad();
    Graph g(true);
    ChoiceTokens layout;
    Var lp = choice_batch_logprobs(g, *model, cb, &layout, overhead);
    ChoiceLossResult r = choice_losses(g, lp, layout);
    g.backward(r.loss);
    grads->clear();
    for (const auto& [name, p] : params) {
      if (!p.has_grad()) {
        grads->emplace_back(size_t(p.value().numel()), 0.0f);
        continue;
      }
      const float* d = p.grad().f32();
      grads->emplace_back(d, d + p.value().numel());
    }
    return r;
  };
  std::vector<std::vector<float>> g_runs, g_one;
  const ChoiceLossResult runs = losses_and_grads(0, &g_runs);
  const ChoiceLossResult one = losses_and_grads(std::numeric_limits<int32_t>::max(), &g_one);
  EXPECT_NEAR(runs.lm, one.lm, 1e-5 * std::fabs(one.lm));
  EXPECT_NEAR(runs.ul, one.ul, 1e-5 * std::fabs(one.ul) + 1e-7);
  EXPECT_NEAR(runs.ln, one.ln, 1e-5 * std::fabs(one.ln));
  EXPECT_EQ(runs.right, one.right);
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < g_one.size(); ++i)
    for (size_t j = 0; j < g_one[i].size(); ++j) {
      max_abs = std::max(max_abs, double(std::fabs(g_one[i][j])));
      max_diff = std::max(max_diff, double(std::fabs(g_one[i][j] - g_runs[i][j])));
    }
  EXPECT_GT(max_abs, 0.0);
  EXPECT_LE(max_diff, 1e-4 * max_abs);
}
