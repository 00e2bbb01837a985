// Paged memory: Storage backed by a shared mapping of a temporary file, so that under memory
// pressure the kernel writes its pages back to that file and drops them instead of the process
// being killed (the CPU counterpart of bitsandbytes' paged optimizers, which use CUDA unified
// memory). Used for large optimizer states (`--optim paged_adamw`, `paged_adamw8bit`).
//
// Each allocation is one file: created with mkstemp in the paged directory, unlinked at once (it
// has no name, nothing is left behind even after a crash), its blocks reserved with
// posix_fallocate (a full disk is a clear error now, never a SIGBUS on first touch), mapped
// MAP_SHARED read-write and zero-filled. The file is released when the last Tensor viewing the
// Storage goes away.
//
// Directory: $QPEFT_PAGED_DIR if set, else the system temp dir (std::filesystem's
// temp_directory_path: $TMPDIR or /tmp). Note a tmpfs /tmp is itself RAM backed by swap; point
// QPEFT_PAGED_DIR at a disk for the state to be paged to disk.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace qpeft {

// Where paged allocations go, and in words where that choice came from ("QPEFT_PAGED_DIR" or
// "the system temp dir ($TMPDIR or /tmp)").
struct PagedDir {
  std::string path;
  std::string source;
};
PagedDir paged_dir();

// A zero-filled paged Storage of `bytes` bytes (at least one page is mapped). Throws
// qpeft::Error naming the directory and its source when the file cannot be created, reserved
// (ENOSPC: says how many bytes were asked for) or mapped.
std::shared_ptr<Storage> allocate_paged(size_t bytes);

// A zero-filled Tensor on paged storage.
Tensor paged_zeros(const Shape& shape, DType dt = DType::F32);

// Whether [p, p + bytes) lies inside one live paged mapping (for tests and reports).
bool is_paged(const void* p, size_t bytes = 1);
inline bool is_paged(const Tensor& t) { return t.defined() && is_paged(t.raw(), t.nbytes() ? t.nbytes() : 1); }
// Bytes currently mapped by live paged allocations in this process.
size_t paged_bytes_in_use();

}  // namespace qpeft
