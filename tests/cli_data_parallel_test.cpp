// `mpirun -np 2 qpeft train` end to end (issue 14): two ranks with half the batch each match
// one process with the whole batch; two 2-rank runs give the same bits; kill -9 of the job
// then --resume continues bit-identically and leaves nothing behind; a rank that fails ends
// the job with its message, never a hang. The tests start their own mpirun on localhost.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "gen_fixtures.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;
namespace fs = std::filesystem;

namespace {

// mpirun on this machine only, as root too (CI runs as root), each rank on any core.
std::string mpirun(int ranks) {
  std::string cmd = "mpirun --oversubscribe --bind-to none -np " + std::to_string(ranks);
  if (::geteuid() == 0) cmd += " --allow-run-as-root";
  return cmd + " ";
}

class CliDataParallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("cli_dp");
    RunResult v = run_cli("--version");
    with_mpi_ = v.output.find("Open MPI") != std::string::npos && std::system("command -v mpirun >/dev/null") == 0;
    if (!with_mpi_) return;
    ASSERT_EQ(run_cli("init-model --preset tiny --dtype f32 --seed 3 --out " + (*tmp_ / "tiny")).status, 0);
    // Examples of several lengths, so rows pad and ranks hold different numbers of targets.
    std::string data;
    for (int i = 0; i < 12; ++i) {
      data += "{\"input_ids\": [";
      for (int t = 0; t < 8 + (5 * i) % 13; ++t) data += (t ? "," : "") + std::to_string(3 + (7 * i + 11 * t) % 400);
      data += "]}\n";
    }
    write_file(*tmp_ / "data.jsonl", data);
    write_file(*tmp_ / "eval.jsonl", data.substr(0, data.find('\n', data.size() / 2) + 1));
    // A model with a tokenizer, and multiple-choice data (T-Few's losses) for (IA)³.
    gen_fixtures::make_model_dir(*tmp_ / "with_tokenizer");
    std::string mc;
    const char* prompts[] = {"the cat sat on the", "one two three", "what is it", "a b c d", "x y", "then the cat"};
    for (int i = 0; i < 6; ++i)
      mc += std::string("{\"prompt\": \"") + prompts[i] + "\", \"choices\": [\" mat\", \" dog and cat\", \" four\"], " +
            "\"answer\": " + std::to_string(i % 3) + "}\n";
    write_file(*tmp_ / "mc.jsonl", mc);
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override {
    if (!with_mpi_) GTEST_SKIP() << "qpeft was built without Open MPI, or mpirun is missing (scripts/install-deps.sh)";
  }

  // Batch 5 over 2 ranks splits 3 + 2; dropout and accumulation on.
  static std::string train_args(const std::string& out, const std::string& extra = "",
                                const std::string& data = "data.jsonl", int steps = 6, int batch = 5) {
    return "train --model " + (*tmp_ / "tiny") + " --data " + (*tmp_ / data) + " --eval-data " +
           (*tmp_ / "eval.jsonl") + " --out " + out + " --rank 4 --alpha 8 --dropout 0.1 --targets all-linear " +
           "--steps " + std::to_string(steps) + " --batch " + std::to_string(batch) +
           " --grad-accum 2 --seq-len 24 --lr 1e-2 --no-packing --threads 1 --metrics " + out +
           ".metrics.jsonl " + extra;
  }
  // Rank 0 with the usual data, rank 1 with `data` (mpirun's MPMD form: one command per rank).
  static RunResult run_with_rank1_data(const std::string& out, const std::string& data) {
    const std::string qpeft = std::string(QPEFT_CLI_PATH) + " ";
    return run_shell(mpirun(1) + qpeft + train_args(out) + " : -np 1 " + qpeft + train_args(out, "", data) + " 2>&1");
  }

  static std::vector<nlohmann::json> metrics(const std::string& out) {
    std::vector<nlohmann::json> rows;
    std::istringstream in(read_file(out + ".metrics.jsonl"));
    for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
    return rows;
  }

  static TempDir* tmp_;
  static bool with_mpi_;
};
TempDir* CliDataParallel::tmp_ = nullptr;
bool CliDataParallel::with_mpi_ = false;

}  // namespace

TEST_F(CliDataParallel, TwoRanksMatchOneProcessWithTheWholeBatch) {
  const std::string one = *tmp_ / "one", two = *tmp_ / "two";
  RunResult r1 = run_cli(train_args(one));
  ASSERT_EQ(r1.status, 0) << r1.output;
  const std::string cmd2 = mpirun(2) + QPEFT_CLI_PATH + " " + train_args(two) + " 2>&1";
  RunResult r2 = run_shell(cmd2);
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_NE(r2.output.find("data-parallel: 2 ranks, each micro-batch of 5 rows split 3 or 2 per rank"),
            std::string::npos) << r2.output;
  // Rank 0 alone prints: one progress line per step.
  size_t lines = 0;
  for (size_t at = r2.output.find("/6 | loss"); at != std::string::npos; at = r2.output.find("/6 | loss", at + 1)) ++lines;
  EXPECT_EQ(lines, 6u) << r2.output;

  const auto m1 = metrics(one), m2 = metrics(two);
  ASSERT_EQ(m1.size(), 6u);
  ASSERT_EQ(m2.size(), 6u);
  for (size_t i = 0; i < m1.size(); ++i) {
    EXPECT_NEAR(m2[i]["loss"].get<double>(), m1[i]["loss"].get<double>(), 1e-4) << "step " << i + 1;
    EXPECT_NEAR(m2[i]["grad_norm"].get<double>(), m1[i]["grad_norm"].get<double>(), 1e-3) << "step " << i + 1;
    EXPECT_EQ(m2[i]["tokens"], m1[i]["tokens"]);
    EXPECT_GT(m2[i]["allreduce_bytes"].get<int64_t>(), 0);
  }
  EXPECT_NEAR(m2.back()["eval_loss"].get<double>(), m1.back()["eval_loss"].get<double>(), 1e-4);

  auto a1 = SafetensorsFile::open(one + "/adapter_model.safetensors");
  auto a2 = SafetensorsFile::open(two + "/adapter_model.safetensors");
  ASSERT_EQ(a1->names(), a2->names());
  double max_abs = 0, max_diff = 0;
  for (const auto& name : a1->names()) {
    Tensor x = a1->get(name).to(DType::F32), y = a2->get(name).to(DType::F32);
    ASSERT_EQ(x.shape(), y.shape()) << name;
    for (int64_t i = 0; i < x.numel(); ++i) {
      max_abs = std::max(max_abs, double(std::fabs(x.f32()[i])));
      max_diff = std::max(max_diff, double(std::fabs(x.f32()[i] - y.f32()[i])));
    }
  }
  EXPECT_GT(max_abs, 0.0);
  EXPECT_LE(max_diff, 1e-3 * max_abs) << "largest value " << max_abs;
}

// Every method through the same loop: 2 ranks match 1 process (final loss, evaluation).
TEST_F(CliDataParallel, EveryMethodMatchesOneProcess) {
  const std::string lm = " --data " + (*tmp_ / "data.jsonl") + " --eval-data " + (*tmp_ / "eval.jsonl");
  const std::string mc = " --data " + (*tmp_ / "mc.jsonl") + " --eval-data " + (*tmp_ / "mc.jsonl");
  const std::pair<std::string, std::string> runs[] = {
      {"qlora", "--method qlora --rank 4 --model " + (*tmp_ / "tiny") + lm},
      {"loftq", "--method loftq --quant nf2 --rank 4 --model " + (*tmp_ / "tiny") + lm},
      {"full", "--method full --lr 1e-4 --model " + (*tmp_ / "tiny") + lm},
      {"ia3_choice", "--method ia3 --lr 3e-2 --model " + (*tmp_ / "with_tokenizer") + mc},
  };
  for (const auto& [name, flags] : runs) {
    SCOPED_TRACE(name);
    const std::string one = *tmp_ / ("m1_" + name), two = *tmp_ / ("m2_" + name);
    auto args = [&](const std::string& out) {
      return "train " + flags + " --out " + out + " --steps 3 --batch 4 --seq-len 24 --threads 1 --metrics " + out +
             ".metrics.jsonl";
    };
    RunResult r1 = run_cli(args(one));
    ASSERT_EQ(r1.status, 0) << r1.output;
    RunResult r2 = run_shell(mpirun(2) + QPEFT_CLI_PATH + " " + args(two) + " 2>&1");
    ASSERT_EQ(r2.status, 0) << r2.output;
    const auto m1 = metrics(one), m2 = metrics(two);
    ASSERT_EQ(m1.size(), 3u);
    ASSERT_EQ(m2.size(), 3u);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_NEAR(m2[i]["loss"].get<double>(), m1[i]["loss"].get<double>(), 1e-4) << "step " << i + 1;
    for (const char* key : {"eval_loss", "eval_accuracy", "batch_accuracy", "ln_loss"}) {
      if (m1.back().contains(key)) {
        EXPECT_NEAR(m2.back()[key].get<double>(), m1.back()[key].get<double>(), 1e-4) << key;
      }
    }
  }
}

TEST_F(CliDataParallel, TwoRankRunsAreBitIdentical) {
  const std::string a = *tmp_ / "bits_a", b = *tmp_ / "bits_b";
  for (const std::string& out : {a, b}) {
    RunResult r = run_shell(mpirun(2) + QPEFT_CLI_PATH + " " + train_args(out, "--quiet") + " 2>&1");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  EXPECT_EQ(read_file(a + "/adapter_model.safetensors"), read_file(b + "/adapter_model.safetensors"));
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i]["loss"], mb[i]["loss"]);
}

TEST_F(CliDataParallel, KillNineOfTheJobThenResumeContinuesBitIdentically) {
  const std::string ref = *tmp_ / "kill_ref", run = *tmp_ / "killed";
  // Long enough that the kill lands well before the end.
  const std::string extra = "--save-every 2 --keep-checkpoints 2 --quiet";
  auto args = [&](const std::string& out, const std::string& more) { return train_args(out, more, "data.jsonl", 40); };
  RunResult r = run_shell(mpirun(2) + QPEFT_CLI_PATH + " " + args(ref, extra) + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string want = read_file(ref + "/adapter_model.safetensors");

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + mpirun(2) + QPEFT_CLI_PATH + " " + args(run, extra) + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(run + "/checkpoint-2/trainer_state.json"))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(pid, SIGKILL);  // mpirun: its ranks lose their launcher and end
  int st = 0;
  ::waitpid(pid, &st, 0);
  // No rank outlives the job (each would go on writing into `run`).
  // The bracket keeps the pattern from matching this shell's own command line.
  const std::string alive = "pgrep -f -- '[-]-out " + run + " ' >/dev/null";
  for (int i = 0; i < 300 && std::system(alive.c_str()) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_NE(std::system(alive.c_str()), 0) << "a rank survived kill -9 of mpirun";
  ASSERT_FALSE(fs::exists(run + "/adapter_model.safetensors")) << "the job finished before it was killed";

  RunResult rs = run_shell(mpirun(2) + QPEFT_CLI_PATH + " " + args(run, "--save-every 2 --resume") + " 2>&1");
  ASSERT_EQ(rs.status, 0) << rs.output;
  EXPECT_NE(rs.output.find("resuming from " + run + "/checkpoint-"), std::string::npos) << rs.output;
  EXPECT_EQ(read_file(run + "/adapter_model.safetensors"), want);
  for (auto& e : fs::directory_iterator(run))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  // A checkpoint written by two ranks resumes in one process (float tolerance from there on).
  const std::string single = *tmp_ / "resumed_single";
  fs::create_directories(single);
  fs::copy(ref + "/checkpoint-38", single + "/checkpoint-38", fs::copy_options::recursive);
  RunResult one = run_cli(args(single, "--resume --quiet"));
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_NEAR(metrics(single).back()["loss"].get<double>(), metrics(ref).back()["loss"].get<double>(), 1e-4);
}

TEST_F(CliDataParallel, ARankThatFailsEndsTheJobWithItsMessage) {
  write_file(*tmp_ / "broken.jsonl", "{\"input_ids\": [1, 2,\n");
  const std::string out = *tmp_ / "fails";
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = run_with_rank1_data(out, "broken.jsonl");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("qpeft (rank 1 of 2): error: " + (*tmp_ / "broken.jsonl") + ":1: not valid JSON"),
            std::string::npos) << r.output;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
  EXPECT_FALSE(fs::exists(out + "/adapter_model.safetensors"));

  // Different (valid) data on one rank is caught before any step.
  write_file(*tmp_ / "other.jsonl", read_file(*tmp_ / "eval.jsonl"));
  r = run_with_rank1_data(out, "other.jsonl");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1's training data (--data) differs from rank 0's"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out + "/checkpoint-6"));
}

TEST_F(CliDataParallel, ABatchSmallerThanTheRanksIsRefused) {
  RunResult r = run_shell(mpirun(2) + QPEFT_CLI_PATH + " " + train_args(*tmp_ / "small", "", "data.jsonl", 6, 1) + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--batch 1 is the global batch, split across the job's 2 ranks: it must be at least 2"),
            std::string::npos) << r.output;
}

TEST_F(CliDataParallel, OnlyTrainRunsUnderMpirun) {
  EXPECT_NE(run_cli("--version").output.find("data-parallel training: Open MPI"), std::string::npos);
  RunResult r = run_shell(mpirun(2) + QPEFT_CLI_PATH + " eval --model " + (*tmp_ / "tiny") + " --data " +
                          (*tmp_ / "data.jsonl") + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("under mpirun only `qpeft train` runs data-parallel"), std::string::npos) << r.output;
}
