// Files: read-only memory maps, and atomic writes (temporary file or directory, then
// rename), so an interrupted run never leaves a half-written adapter, checkpoint or model.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qpeft {

class MappedFile {
 public:
  // Maps the whole file read-only; a clear error if it cannot be opened.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the resident pages wholly inside [p, p + n) (the data was copied elsewhere); the
  // mapping stays valid and rereads from the file if touched again.
  void release(const void* p, size_t n) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
void make_dirs(const std::string& path);

// Writes to "<path>.tmp-<pid>", fsyncs and renames over path on commit(); the destructor
// removes the temporary file if commit() was never reached.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

void write_file_atomic(const std::string& path, std::string_view contents);

// A directory written as a whole: files go into "<dir>.tmp-<pid>", and commit() swaps it
// into place (an existing dir is moved aside and removed only after the rename succeeded).
class AtomicDir {
 public:
  explicit AtomicDir(std::string dir);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  // Where to write the file `name` before commit().
  std::string path(const std::string& name) const { return tmp_ + "/" + name; }
  void commit();

 private:
  std::string dir_, tmp_;
  bool committed_ = false;
};

void remove_all(const std::string& path);

// Removes what interrupted writers left in `dir` and in its subdirectories: the "*.tmp-PID"
// files and directories of AtomicFile / AtomicDir whose process PID is no longer alive (a
// live writer's, this process's and unreadable names are kept). Returns the paths removed.
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

// A clear error now, rather than after hours of work, when files cannot be created in `dir`.
void check_writable_dir(const std::string& dir, const char* what);

}  // namespace qpeft
