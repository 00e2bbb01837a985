// The CLI against hostile files, nonsense flags and interruption (issue 12): each case exits 1
// with one line "qpeft: error: ..." naming the file, key or flag (CLI11 names the flag for
// validators), in bounded time; kill -9 then --resume gives the same bytes and leaves nothing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_util.h"

using namespace qpeft::testing;
namespace fs = std::filesystem;

namespace {

// CLI11 validation errors: a usage exit status and the flag named.
void expect_flag_rejected(const RunResult& r, const std::string& flag) {
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 2) << r.output;  // not "internal error"
  EXPECT_NE(r.output.find(flag), std::string::npos) << "missing '" << flag << "' in: " << r.output;
  EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("17976931348623157"), std::string::npos) << r.output;  // DBL_MAX in full
}

// Every path under dir whose name holds ".tmp-" (a temporary of an atomic write).
std::vector<std::string> temporaries_in(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path().string());
  return out;
}

class CliHostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir("cli_hostile");
    RunResult init = run_cli("init-model --preset tiny --dtype f32 --seed 3 --out " + (*tmp_ / "tiny"));
    ASSERT_EQ(init.status, 0) << init.output;
    write_file(*tmp_ / "data.jsonl", repetitive_jsonl(8, 24, 32000, 5));
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string model() { return *tmp_ / "tiny"; }
  static std::string data() { return *tmp_ / "data.jsonl"; }
  // `extra` adds flags, and --steps and --rank unless it gives them.
  static std::string train_args(const std::string& out, const std::string& extra = "") {
    std::string a = "train --model " + model() + " --data " + data() + " --out " + out +
                    " --batch 2 --seq-len 24 --lr 1e-2 --threads 2 " + extra;
    if (extra.find("--steps") == std::string::npos) a += " --steps 6";
    if (extra.find("--rank") == std::string::npos) a += " --rank 4";
    return a;
  }
  // The shipped model (it has a tokenizer, which generate needs).
  static std::string shipped() { return std::string(QPEFT_TEST_DATA) + "/../../models/austen-tiny"; }
  // A copy of the shipped model's directory with config.json replaced.
  static std::string model_with_config(const std::string& name, const std::string& config_text) {
    const std::string dir = *tmp_ / name;
    fs::create_directories(dir);
    for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(shipped() + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
    write_file(dir + "/config.json", config_text);
    return dir;
  }
  static TempDir* tmp_;
};
TempDir* CliHostile::tmp_ = nullptr;

}  // namespace

TEST_F(CliHostile, HostileConfigJsonIsOneLine) {
  nlohmann::json cfg = nlohmann::json::parse(read_file(shipped() + "/config.json"));
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  std::string text = cfg.dump();
  text.insert(1, "\"extra\": " + deep + ", ");
  expect_one_line_error(run_cli("generate --model " + model_with_config("deep", text) + " --prompt hi"),
                        "config.json: the JSON nests deeper than 128 levels");
  nlohmann::json bad = cfg;
  bad["architectures"] = {7};
  expect_one_line_error(run_cli("generate --model " + model_with_config("arch7", bad.dump()) + " --prompt hi"),
                        "key 'architectures'[0] must be a string (found the integer 7)");
  bad = cfg;
  bad["hidden_size"] = 1000000000;
  const auto t0 = std::chrono::steady_clock::now();
  expect_one_line_error(run_cli("generate --model " + model_with_config("huge", bad.dump()) + " --prompt hi"),
                        "key 'hidden_size' must be an integer in [1, 131072]");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  text = cfg.dump();
  text.insert(1, "\"rms_norm_eps\": 1e400, ");
  expect_one_line_error(run_cli("generate --model " + model_with_config("e400", text) + " --prompt hi"),
                        "not valid JSON (number overflow parsing '1e400')");
}

TEST_F(CliHostile, GenerateIsBoundedByTheContext) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_one_line_error(run_cli("generate --model " + shipped() + " --prompt hi --max-new-tokens 1048576"),
                        "--max-new-tokens 1048576 does not fit the model's context of 2048 tokens");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST_F(CliHostile, NonsenseFlagsAreRejectedUpFront) {
  const std::string out = *tmp_ / "flags";
  for (const char* bad : {"--warmup-steps -3", "--threads -1", "--save-every -1", "--keep-checkpoints 0",
                          "--max-grad-norm nan", "--alpha nan", "--lr nan", "--lr inf", "--dropout nan",
                          "--weight-decay -1", "--log-every 0"}) {
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    expect_flag_rejected(run_cli(train_args(out, bad)), flag);
  }
  expect_flag_rejected(run_cli("generate --model " + shipped() + " --prompt hi --temperature nan"), "--temperature");
  // Ranks above the layer: an error before 6.5 GB are allocated.
  const auto t0 = std::chrono::steady_clock::now();
  expect_one_line_error(run_cli(train_args(out, "--rank 100000")), "LoRA rank 100000 (--rank / --rank-pattern) is above");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  EXPECT_FALSE(fs::exists(out + "/adapter_model.safetensors"));
}

TEST_F(CliHostile, HostileAdapterAndTrainerStateFiles) {
  const std::string run = *tmp_ / "state";
  RunResult tr = run_cli(train_args(run, "--steps 2 --quiet"));
  ASSERT_EQ(tr.status, 0) << tr.output;
  // adapter_config.json with an integer peft_type, or a rank of the wrong type.
  nlohmann::json ac = nlohmann::json::parse(read_file(run + "/adapter_config.json"));
  const std::string bad_adapter = *tmp_ / "bad_adapter";
  fs::create_directories(bad_adapter);
  fs::copy_file(run + "/adapter_model.safetensors", bad_adapter + "/adapter_model.safetensors");
  nlohmann::json bad = ac;
  bad["peft_type"] = 3;
  write_file(bad_adapter + "/adapter_config.json", bad.dump());
  expect_one_line_error(run_cli("eval --model " + model() + " --adapter " + bad_adapter + " --data " + data()),
                        "adapter_config.json: key 'peft_type' must be a string (found the integer 3)");
  bad = ac;
  bad["r"] = "four";
  write_file(bad_adapter + "/adapter_config.json", bad.dump());
  expect_one_line_error(run_cli("eval --model " + model() + " --adapter " + bad_adapter + " --data " + data()),
                        "key 'r' must be an integer");
  bad = ac;
  bad["lora_alpha"] = 1e308;
  write_file(bad_adapter + "/adapter_config.json", bad.dump());
  expect_one_line_error(run_cli("eval --model " + model() + " --adapter " + bad_adapter + " --data " + data()),
                        "key 'lora_alpha' must be a number in [-1e+09, 1e+09]");

  // trainer_state.json without a field.
  const std::string state = run + "/checkpoint-2/trainer_state.json";
  nlohmann::json st = nlohmann::json::parse(read_file(state));
  st.erase("step");
  write_file(state, st.dump());
  expect_one_line_error(run_cli(train_args(run, "--steps 4 --resume")), "trainer_state.json: key 'step' is missing");
  st["step"] = "two";
  write_file(state, st.dump());
  expect_one_line_error(run_cli(train_args(run, "--steps 4 --resume")), "key 'step' must be an integer");
  st.erase("seed");
  st["step"] = 2;
  write_file(state, st.dump());
  expect_one_line_error(run_cli(train_args(run, "--steps 4 --resume")), "key 'seed' is missing");
}

TEST_F(CliHostile, TokenizeInputIsChecked) {
  const std::string tok = std::string(QPEFT_TEST_DATA) + "/../../models/austen-tiny";
  expect_one_line_error(run_cli("tokenize --tokenizer " + tok + " --decode --text '[1e400]'"),
                        "not valid JSON (number overflow");
  expect_one_line_error(run_cli("tokenize --tokenizer " + tok + " --decode --text '[[[[1]]]]'"),
                        "element 0 (a list of 1 items) is not a token id");
}

TEST_F(CliHostile, UnwritableOutputFailsBeforeTraining) {
  // A file-size limit of 0 (with SIGXFSZ ignored) makes every write fail, as a full disk does.
  const std::string out = *tmp_ / "full";
  const std::string cmd = "sh -c 'trap \"\" XFSZ; ulimit -f 0; exec " + std::string(QPEFT_CLI_PATH) + " " +
                          train_args(out) + "' 2>&1";
  RunResult r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  expect_one_line_error(r, "cannot write to --out");
  EXPECT_EQ(r.output.find("step 1/"), std::string::npos) << r.output;
}

TEST_F(CliHostile, StaleTemporariesOfDeadRunsAreRemoved) {
  const std::string out = *tmp_ / "stale";
  fs::create_directories(out + "/checkpoint-2.tmp-999999");
  write_file(out + "/checkpoint-2.tmp-999999/adapter_model.safetensors", "partial");
  write_file(out + "/adapter_model.safetensors.tmp-999998", "partial");
  fs::create_directories(out + "/checkpoint-1");
  write_file(out + "/checkpoint-1/trainer_state.json.tmp-999997", "partial");
  // A live process's temporary (ours) stays.
  const std::string live = out + "/notes.tmp-" + std::to_string(::getpid());
  write_file(live, "mine");
  RunResult r = run_cli(train_args(out, "--steps 1"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("removed " + out + "/checkpoint-2.tmp-999999, left behind by an interrupted run"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("adapter_model.safetensors.tmp-999998"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("trainer_state.json.tmp-999997"), std::string::npos) << r.output;
  EXPECT_EQ(temporaries_in(out), std::vector<std::string>{live});
}

TEST_F(CliHostile, AdapterIsWrittenBeforeTheFinalCheckpoint) {
  const std::string out = *tmp_ / "order";
  ASSERT_EQ(run_cli(train_args(out, "--steps 2 --quiet")).status, 0);
  EXPECT_LE(fs::last_write_time(out + "/adapter_model.safetensors"),
            fs::last_write_time(out + "/checkpoint-2/trainer_state.json"));
}

TEST_F(CliHostile, KillNineThenResumeGivesTheSameBytesAndNoDebris) {
  const std::string ref = *tmp_ / "ref", run = *tmp_ / "killed";
  const std::string args = " --save-every 1 --keep-checkpoints 2 --quiet";
  ASSERT_EQ(run_cli(train_args(ref, args)).status, 0);
  const std::string want = read_file(ref + "/adapter_model.safetensors");
  ASSERT_FALSE(want.empty());

  // Kill at the first sign of a checkpoint being written after checkpoint-1 exists (inside
  // an atomic write if we catch one), else as soon as checkpoint-2 is complete.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + std::string(QPEFT_CLI_PATH) + " " + train_args(run, args) + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool killed_in_write = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    if (fs::exists(run + "/checkpoint-1/trainer_state.json", ec)) {
      bool writing = false;
      for (auto& e : fs::directory_iterator(run, ec)) writing |= e.path().filename().string().find(".tmp-") != std::string::npos;
      if (writing || fs::exists(run + "/checkpoint-2/trainer_state.json", ec)) {
        killed_in_write = writing;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st) || WIFEXITED(st));
  std::printf("killed %s\n", killed_in_write ? "inside a checkpoint write" : "between steps");

  RunResult rs = run_cli(train_args(run, "--save-every 1 --keep-checkpoints 2 --resume"));
  ASSERT_EQ(rs.status, 0) << rs.output;
  EXPECT_EQ(read_file(run + "/adapter_model.safetensors"), want);
  EXPECT_EQ(temporaries_in(run), std::vector<std::string>{});
}
