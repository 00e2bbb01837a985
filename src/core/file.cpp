#include "core/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace qpeft {

namespace fs = std::filesystem;

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  QP_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  auto mf = std::shared_ptr<MappedFile>(new MappedFile());
  mf->path_ = path;
  mf->size_ = size_t(st.st_size);
  if (mf->size_ > 0) {
    // Private copy-on-write mapping: a caller writing into a loaded tensor changes only its own copy.
    void* p = mmap(nullptr, mf->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("{}: cannot map {} bytes: {}", path, mf->size_, std::strerror(e));
    }
    mf->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return mf;
}

void MappedFile::release(const void* p, size_t n) const {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t b = (uintptr_t(p) + page - 1) / page * page, e = (uintptr_t(p) + n) / page * page;
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QP_CHECK(in, "{}: cannot open for reading", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool dir_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  QP_CHECK(!ec, "{}: cannot create directory: {}", path, ec.message());
}

void remove_all(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

static std::string tmp_suffix() { return ".tmp-" + std::to_string(::getpid()); }

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + tmp_suffix()) {
  f_ = std::fopen(tmp_.c_str(), "wb");
  QP_CHECK(f_, "{}: cannot create: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t n) {
  QP_CHECK(f_, "{}: write after commit", path_);
  if (n && std::fwrite(data, 1, n, f_) != n) fail("{}: write failed: {} (disk full?)", tmp_, std::strerror(errno));
}

void AtomicFile::commit() {
  QP_CHECK(f_, "{}: committed twice", path_);
  bool ok = std::fflush(f_) == 0 && fsync(fileno(f_)) == 0;
  int e = errno;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    fail("{}: write failed: {}", path_, std::strerror(e));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    e = errno;
    std::remove(tmp_.c_str());
    fail("{}: cannot rename into place: {}", path_, std::strerror(e));
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

AtomicDir::AtomicDir(std::string dir) : dir_(std::move(dir)) {
  while (!dir_.empty() && dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  tmp_ = dir_ + tmp_suffix();
  remove_all(tmp_);
  make_dirs(tmp_);
}

AtomicDir::~AtomicDir() {
  if (!committed_) remove_all(tmp_);
}

void AtomicDir::commit() {
  std::error_code ec;
  std::string old = dir_ + ".old" + tmp_suffix();
  bool had_old = fs::exists(dir_, ec);
  if (had_old) {
    fs::rename(dir_, old, ec);
    QP_CHECK(!ec, "{}: cannot move the previous version aside: {}", dir_, ec.message());
  }
  fs::rename(tmp_, dir_, ec);
  if (ec) {
    if (had_old) fs::rename(old, dir_, ec);
    fail("{}: cannot rename into place", dir_);
  }
  committed_ = true;
  if (had_old) remove_all(old);
}

namespace {

// The PID of a temporary's name "<name>.tmp-<PID>", or -1.
long temporary_pid(const std::string& name) {
  const size_t at = name.rfind(".tmp-");
  if (at == std::string::npos || at + 5 >= name.size()) return -1;
  long pid = 0;
  for (size_t i = at + 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 1L << 30) return -1;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}

bool process_alive(long pid) { return ::kill(pid_t(pid), 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  std::vector<fs::path> scan = {dir};
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && temporary_pid(e.path().filename().string()) < 0) scan.push_back(e.path());
  for (const auto& d : scan) {
    std::vector<fs::path> stale;
    for (auto& e : fs::directory_iterator(d, ec)) {
      const long pid = temporary_pid(e.path().filename().string());
      if (pid > 0 && pid != long(::getpid()) && !process_alive(pid)) stale.push_back(e.path());
    }
    for (const auto& p : stale) {
      fs::remove_all(p, ec);
      if (!ec) removed.push_back(p.string());
    }
  }
  return removed;
}

void check_writable_dir(const std::string& dir, const char* what) {
  const std::string probe = dir + "/.qpeft-write-probe" + tmp_suffix();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  const bool ok = f && std::fputs("probe\n", f) >= 0 && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  const int why = errno;
  if (f) std::fclose(f);
  std::remove(probe.c_str());
  QP_CHECK(ok, "{}: cannot write to {} ({}); choose a writable directory with free space", dir, what,
           std::strerror(why));
}

}  // namespace qpeft
