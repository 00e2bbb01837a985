// io/gguf: what GgufWriter writes, GgufFile reads back (metadata of every kind, tensors at
// aligned offsets); hostile files (truncated, lying counts and offsets, unknown types) are
// clear errors naming the file and the key or tensor, never a crash or a huge allocation.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "io/gguf.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

std::vector<uint8_t> bytes_of(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::string write_sample(const TempDir& tmp) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::str("llama"));
  w.set("llama.block_count", GgufValue::u32(4));
  w.set("llama.rope.freq_base", GgufValue::f32(10000.0f));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array({"<s>", "a", "b c"}));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array({3, 1, -1}));
  w.set("some.floats", GgufValue::f32_array({0.5f, -2.0f}));
  w.add_tensor("a.weight", GgufTensorType::kF32, {3, 2}, [] { return bytes_of({1, 2, 3, 4, 5, 6}); });
  w.add_tensor("b.weight", GgufTensorType::kF16, {5}, [] { return std::vector<uint8_t>(10, 0x3c); });
  const std::string path = tmp / "sample.gguf";
  w.write(path);
  return path;
}

// The file with bytes [at, at + n) replaced by `with`.
std::string patched(const TempDir& tmp, const std::string& src, size_t at, const std::vector<uint8_t>& with) {
  std::string b = read_file(src);
  std::memcpy(b.data() + at, with.data(), with.size());
  const std::string path = tmp / "patched.gguf";
  write_file(path, b);
  return path;
}

template <class T>
std::vector<uint8_t> le(T v) {
  std::vector<uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}

void expect_error(const std::string& path, const std::string& must_contain) {
  try {
    GgufFile::open(path);
    ADD_FAILURE() << "no error; expected one containing '" << must_contain << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(must_contain), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Gguf, WhatTheWriterWritesTheReaderReads) {
  TempDir tmp("gguf_rt");
  const std::string path = write_sample(tmp);
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_uint("llama.block_count"), 4u);
  EXPECT_EQ(g->get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(g->get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(g->get_array("tokenizer.ggml.tokens", GgufType::kString).strings,
            (std::vector<std::string>{"<s>", "a", "b c"}));
  EXPECT_EQ(g->get_array("tokenizer.ggml.token_type", GgufType::kInt32).ints, (std::vector<int64_t>{3, 1, -1}));
  EXPECT_EQ(g->get_array("some.floats", GgufType::kFloat32).floats, (std::vector<double>{0.5, -2.0}));
  ASSERT_EQ(g->tensors().size(), 2u);
  const auto* a = g->find_tensor("a.weight");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(a->nbytes, 24u);
  float v[6];
  std::memcpy(v, a->data, 24);
  EXPECT_EQ(v[5], 6.0f);
  const auto* b = g->find_tensor("b.weight");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->offset % 32, 0u);
  EXPECT_EQ(b->data[9], 0x3c);
  // Typed look-ups name the key and what it is.
  try {
    g->get_uint("general.architecture");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'general.architecture' is a string, expected an integer"), std::string::npos)
        << e.what();
  }
  try {
    g->get_string("llama.context_length");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'llama.context_length' is missing"), std::string::npos) << e.what();
  }
}

TEST(Gguf, HostileFilesAreClearErrors) {
  TempDir tmp("gguf_bad");
  const std::string good = write_sample(tmp);
  const std::string bytes = read_file(good);
  // Header: magic 0, version 4, tensor count 8, metadata count 16; first key's length at 24.
  expect_error(patched(tmp, good, 0, {'G', 'G', 'U', 'X'}), "not a GGUF file");
  expect_error(patched(tmp, good, 4, le<uint32_t>(7)), "GGUF version 7");
  expect_error(patched(tmp, good, 8, le<uint64_t>(uint64_t(1) << 60)), "tensors cannot fit");
  expect_error(patched(tmp, good, 16, le<uint64_t>(uint64_t(1) << 40)), "metadata entries cannot fit");
  expect_error(patched(tmp, good, 24, le<uint64_t>(uint64_t(1) << 62)), "claims a string of");
  expect_error(patched(tmp, good, 24, le<uint64_t>(1u << 20)), "the file ends inside");
  // First value's type, right after the key "general.architecture" (20 bytes).
  expect_error(patched(tmp, good, 24 + 8 + 20, le<uint32_t>(99)), "unknown value type 99");
  // Truncated anywhere: an error, never a read past the end.
  // (The last 22 bytes are padding after the last tensor: cutting into them is harmless.)
  for (size_t cut : {size_t(3), size_t(30), bytes.size() / 2, bytes.size() - 23}) {
    const std::string path = tmp / "cut.gguf";
    write_file(path, bytes.substr(0, cut));
    EXPECT_THROW(GgufFile::open(path), Error) << cut;
  }
  // A tensor's type, dimensions and offset: find them after its name in the infos.
  const size_t name_at = bytes.find("a.weight");
  ASSERT_NE(name_at, std::string::npos);
  const size_t dims_at = name_at + 8, ne_at = dims_at + 4, type_at = ne_at + 16, offset_at = type_at + 4;
  expect_error(patched(tmp, good, dims_at, le<uint32_t>(9)), "9 dimensions");
  expect_error(patched(tmp, good, ne_at, le<uint64_t>(0)), "dimension 0 of size 0");
  expect_error(patched(tmp, good, type_at, le<uint32_t>(77)), "ggml type 77");
  expect_error(patched(tmp, good, type_at, le<uint32_t>(8)), "not a multiple of q8_0's block of 32");
  expect_error(patched(tmp, good, offset_at, le<uint64_t>(3)), "not a multiple of the alignment");
  expect_error(patched(tmp, good, offset_at, le<uint64_t>(uint64_t(1) << 40)), "runs past the end of the file");
}
