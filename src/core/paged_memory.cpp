#include "core/paged_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"

namespace qpeft {

namespace {

// Live mappings: start address -> length, for is_paged().
std::mutex g_mu;
std::map<const char*, size_t>& live() {
  static std::map<const char*, size_t> m;
  return m;
}

struct PagedMapping {
  void* data = nullptr;
  size_t length = 0;
  ~PagedMapping() {
    if (!data) return;
    {
      std::lock_guard<std::mutex> lk(g_mu);
      live().erase(static_cast<const char*>(data));
    }
    munmap(data, length);
  }
};

size_t page_size() {
  static const size_t ps = [] {
    long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? size_t(v) : size_t(4096);
  }();
  return ps;
}

std::string human_bytes(size_t b) { return fmt::format("{:.1f} MiB", double(b) / (1024.0 * 1024.0)); }

}  // namespace

PagedDir paged_dir() {
  const char* env = std::getenv("QPEFT_PAGED_DIR");
  if (env && *env) return {env, "QPEFT_PAGED_DIR"};
  std::error_code ec;
  std::filesystem::path p = std::filesystem::temp_directory_path(ec);
  return {ec ? std::string("/tmp") : p.string(), "the system temp dir ($TMPDIR or /tmp)"};
}

std::shared_ptr<Storage> allocate_paged(size_t bytes) {
  const PagedDir dir = paged_dir();
  const size_t ps = page_size();
  const size_t length = std::max<size_t>(ps, (bytes + ps - 1) / ps * ps);
  const std::string where = fmt::format("'{}' (from {})", dir.path, dir.source);
  std::string tmpl = dir.path + "/qpeft-paged-XXXXXX";
  int fd = mkostemp(tmpl.data(), O_CLOEXEC);
  QP_CHECK(fd >= 0, "[paged] cannot create a paged-state file in {}: {}; set QPEFT_PAGED_DIR to a writable directory",
           where, std::strerror(errno));
  ::unlink(tmpl.c_str());  // nameless from now on: the mapping keeps it alive
  // Reserve the blocks now so a full disk fails here, not as SIGBUS on first write.
  int err = posix_fallocate(fd, 0, off_t(length));
  if (err != 0) {
    ::close(fd);
    if (err == ENOSPC || err == EDQUOT)
      fail("[paged] no room for {} of paged optimizer state in {}; free space there or set QPEFT_PAGED_DIR to a "
           "directory with more room",
           human_bytes(length), where);
    fail("[paged] cannot reserve {} for paged optimizer state in {}: {}; set QPEFT_PAGED_DIR to another directory",
         human_bytes(length), where, std::strerror(err));
  }
  void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  err = errno;
  ::close(fd);
  QP_CHECK(p != MAP_FAILED, "[paged] cannot map {} of paged optimizer state from {}: {}", human_bytes(length), where,
           std::strerror(err));
  auto mapping = std::make_shared<PagedMapping>();
  mapping->data = p;
  mapping->length = length;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    live()[static_cast<const char*>(p)] = length;
  }
  // Fresh file blocks read as zero: no memset (it would touch every page).
  return Storage::wrap(p, bytes, std::move(mapping));
}

Tensor paged_zeros(const Shape& shape, DType dt) {
  const int64_t n = shape_numel(shape);
  return Tensor::from_storage(allocate_paged(size_t(n) * dtype_size(dt)), 0, shape, dt);
}

bool is_paged(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lk(g_mu);
  auto& m = live();
  auto it = m.upper_bound(c);
  if (it == m.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

size_t paged_bytes_in_use() {
  std::lock_guard<std::mutex> lk(g_mu);
  size_t n = 0;
  for (auto& [p, len] : live()) n += len;
  return n;
}

}  // namespace qpeft
