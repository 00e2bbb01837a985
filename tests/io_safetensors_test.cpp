#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "io/safetensors.h"

using namespace qpeft;
namespace fs = std::filesystem;

namespace {

// Passes if f throws qpeft::Error whose message contains every part.
::testing::AssertionResult ThrowsWith(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << msg;
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-qpeft exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}
#define EXPECT_ERROR(stmt, ...) EXPECT_TRUE(ThrowsWith([&] { stmt; }, {__VA_ARGS__}))

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) { return read_text_file(path); }

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(v >> (8 * i)));
  return s;
}

// A safetensors file from a header JSON text and raw data (no padding unless asked).
std::string st_bytes(const std::string& header, const std::string& data, bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  return le64(h.size()) + h + data;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ::testing::TempDir() + "qpeft_io_" + std::to_string(::getpid()) + "_" + info->name();
    remove_all(dir_);
    make_dirs(dir_);
  }
  void TearDown() override { remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

Tensor filled(const Shape& shape, DType dt, int seed) {
  Tensor t = Tensor::empty(shape, dt);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(i * 31 + seed * 7 + 1);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace

TEST_F(SafetensorsTest, RoundTripAllDtypesScalarsEmptyAndMetadata) {
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"b.bf16", filled({4}, DType::BF16, 1)},      {"a.f32", Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6})},
      {"c.f16", filled({3, 1}, DType::F16, 2)},     {"d.u8", filled({5}, DType::U8, 3)},
      {"e.i32", filled({2, 2}, DType::I32, 4)},     {"f.i8", filled({3}, DType::I8, 5)},
      {"g.i64", filled({3}, DType::I64, 6)},        {"h.scalar", Tensor::full({}, 2.5f)},
      {"i.empty", Tensor::empty({0, 4}, DType::F32)}, {"j.empty_bf16", Tensor::empty({0}, DType::BF16)},
  };
  std::string p = path("rt.safetensors");
  save_safetensors(p, ts, {{"note", "hello"}});

  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->path(), p);
  EXPECT_EQ(f->size(), ts.size());
  EXPECT_EQ(f->header_size() % 8, 0u);
  auto names = f->names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  uint64_t total = 0;
  for (const auto& [name, t] : ts) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f->has(name));
    const auto* e = f->find(name);
    ASSERT_NE(e, nullptr);
    EXPECT_TRUE(e->supported);
    EXPECT_EQ(e->dtype, t.dtype());
    EXPECT_EQ(e->shape, t.shape());
    EXPECT_EQ(e->nbytes(), t.nbytes());
    total += e->nbytes();
    Tensor r = f->get(name);
    EXPECT_TRUE(same_bytes(r, t));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.raw()) % dtype_size(r.dtype()), 0u) << "aligned";
  }
  EXPECT_EQ(f->get("h.scalar").ndim(), 0);
  EXPECT_EQ(f->get("h.scalar").to_vector(), std::vector<float>{2.5f});
  EXPECT_EQ(f->get("i.empty").numel(), 0);
  EXPECT_EQ(total, f->data_size()) << "no gaps, no trailing bytes (the reference reader requires it)";
  EXPECT_EQ(f->metadata().at("note"), "hello");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_FALSE(f->has("nope"));
  EXPECT_EQ(f->find("nope"), nullptr);

  // Header: __metadata__ first, then tensors in insertion order, data in order of element size.
  std::string bytes = read_bytes(p);
  std::string header = bytes.substr(8, f->header_size());
  EXPECT_EQ(header.find("{\"__metadata__\""), 0u);
  EXPECT_LT(header.find("\"b.bf16\""), header.find("\"a.f32\""));
  EXPECT_LT(f->find("a.f32")->begin, f->find("b.bf16")->begin);
  EXPECT_LT(f->find("g.i64")->begin, f->find("a.f32")->begin);
}

TEST_F(SafetensorsTest, GetIsZeroCopyAndKeepsTheMappingAlive) {
  std::string p = path("zc.safetensors");
  save_safetensors(p, {{"w", Tensor::from_vector({2, 2}, {1, 2, 3, 4})}, {"v", filled({8}, DType::BF16, 9)}});
  auto f = SafetensorsFile::open(p);
  Tensor w = f->get("w");
  EXPECT_FALSE(w.storage()->owned());
  EXPECT_EQ(static_cast<const uint8_t*>(w.raw()), f->data_section() + f->find("w")->begin);
  EXPECT_EQ(f->get("w").raw(), w.raw()) << "every get shares the one mapping";
  f.reset();  // the tensor keeps the mapping alive
  EXPECT_EQ(w.to_vector(), (std::vector<float>{1, 2, 3, 4}));
}

TEST_F(SafetensorsTest, MisalignedDataIsCopied) {
  // Header of 13 bytes: the data section starts at offset 21, misaligned for f32.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while (header.size() % 4 != 1) header += ' ';
  ASSERT_EQ((8 + header.size()) % 4, 1u);
  float v[2] = {1.5f, -2.0f};
  std::string p = path("mis.safetensors");
  write_bytes(p, st_bytes(header, std::string(reinterpret_cast<char*>(v), 8), /*pad=*/false));
  auto f = SafetensorsFile::open(p);
  Tensor t = f->get("x");
  EXPECT_TRUE(t.storage()->owned());
  EXPECT_EQ(t.to_vector(), (std::vector<float>{1.5f, -2.0f}));
}

TEST_F(SafetensorsTest, WriterStreamsOneTensorAtATime) {
  SafetensorsWriter w;
  std::vector<std::string> calls;
  int alive = 0, max_alive = 0;  // a fill's buffer is freed before the next fill
  auto fill_for = [&](const std::string& name, uint8_t v, size_t n) {
    return [&, name, v, n](void* dst) {
      calls.push_back(name);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(static_cast<uint8_t*>(dst)[i], 0) << "zeroed";
      std::memset(dst, v, n);
      max_alive = std::max(max_alive, ++alive);
      --alive;
    };
  };
  w.add("small", DType::BF16, {3}, fill_for("small", 7, 6));
  w.add("big", DType::F32, {4, 5}, fill_for("big", 9, 80));
  w.add("none", DType::F32, {0}, fill_for("none", 1, 0));
  w.set_metadata("format", "custom");
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w.total_bytes(), 86u);
  std::string p = path("stream.safetensors");
  w.write(p);
  EXPECT_EQ(calls, (std::vector<std::string>{"big", "small"})) << "data order; no fill for empty tensors";
  EXPECT_EQ(max_alive, 1);
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->metadata().at("format"), "custom");
  Tensor small = f->get("small");
  for (int i = 0; i < 6; ++i) EXPECT_EQ(static_cast<uint8_t*>(small.raw())[i], 7);
  EXPECT_EQ(f->get("none").numel(), 0);
  EXPECT_FALSE(file_exists(p + ".tmp-" + std::to_string(::getpid())));
}

TEST_F(SafetensorsTest, WriterRejectsBadDeclarationsAndLeavesNoFileOnFailure) {
  SafetensorsWriter w;
  w.add("a", Tensor::full({2}, 1.0f));
  EXPECT_ERROR(w.add("a", Tensor::full({2}, 1.0f)), "'a'", "twice");
  EXPECT_ERROR(w.add("__metadata__", Tensor::full({2}, 1.0f)), "__metadata__");
  EXPECT_ERROR(w.add("neg", DType::F32, {2, -1}, [](void*) {}), "'neg'", "negative");
  EXPECT_ERROR(w.add("huge", DType::F32, {int64_t(1) << 40, int64_t(1) << 40}, [](void*) {}), "'huge'", "overflows");
  w.add("boom", DType::F32, {2}, [](void*) { fail("no data"); });
  std::string p = path("fail.safetensors");
  EXPECT_ERROR(w.write(p), p, "'boom'", "no data");
  EXPECT_FALSE(file_exists(p));
  EXPECT_TRUE(fs::is_empty(dir_)) << "temporary file removed";
}

TEST_F(SafetensorsTest, ShardedWriteAndRead) {
  SafetensorsWriter w;
  std::vector<Tensor> ts;
  for (int i = 0; i < 5; ++i) {
    ts.push_back(filled({100}, DType::F32, i));  // 400 bytes each
    w.add("layers." + std::to_string(i) + ".weight", ts.back());
  }
  std::string d = path("ckpt");
  w.write_sharded(d, 1000);  // 2 + 2 + 1 tensors
  EXPECT_TRUE(file_exists(d + "/model-00001-of-00003.safetensors"));
  EXPECT_TRUE(file_exists(d + "/model-00003-of-00003.safetensors"));
  EXPECT_FALSE(file_exists(d + "/model.safetensors"));
  auto idx = nlohmann::json::parse(read_text_file(d + "/model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"], 2000);
  EXPECT_EQ(idx["weight_map"]["layers.2.weight"], "model-00002-of-00003.safetensors");

  TensorStore st = TensorStore::open_dir(d);
  EXPECT_EQ(st.size(), 5u);
  EXPECT_EQ(st.files().size(), 3u);
  for (int i = 0; i < 5; ++i) {
    std::string n = "layers." + std::to_string(i) + ".weight";
    EXPECT_TRUE(st.has(n));
    EXPECT_TRUE(same_bytes(st.get(n), ts[i])) << n;
    EXPECT_EQ(st.dtype_of(n), DType::F32);
    EXPECT_EQ(st.shape_of(n), (Shape{100}));
    EXPECT_EQ(st.find(n)->name, n);
  }
  EXPECT_EQ(st.file_of("layers.4.weight"), d + "/model-00003-of-00003.safetensors");

  // Rewritten as one file: the shards and index go, and the store reads the single file.
  w.write_sharded(d, 1 << 20);
  EXPECT_TRUE(file_exists(d + "/model.safetensors"));
  EXPECT_FALSE(file_exists(d + "/model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(d + "/model-00001-of-00003.safetensors"));
  TensorStore one = TensorStore::open_dir(d);
  EXPECT_EQ(one.size(), 5u);
  EXPECT_EQ(one.file_of("layers.0.weight"), d + "/model.safetensors");
  EXPECT_TRUE(same_bytes(one.get("layers.3.weight"), ts[3]));

  // A tensor larger than the limit gets a shard of its own.
  SafetensorsWriter big;
  big.add("a", filled({10}, DType::U8, 0));
  big.add("b", filled({500}, DType::U8, 1));
  big.add("c", filled({10}, DType::U8, 2));
  std::string d2 = path("ckpt2");
  big.write_sharded(d2, 100);
  EXPECT_EQ(TensorStore::open_dir(d2).files().size(), 3u);
}

TEST_F(SafetensorsTest, TensorStoreMissingNamesSuggestAndDuplicatesFail) {
  std::string d = path("m");
  make_dirs(d);
  save_safetensors(d + "/model.safetensors", {{"model.layers.0.mlp.up_proj.weight", Tensor::full({2}, 1.0f)},
                                              {"model.layers.0.mlp.down_proj.weight", Tensor::full({2}, 1.0f)},
                                              {"lm_head.weight", Tensor::full({2}, 1.0f)}});
  TensorStore st = TensorStore::open_dir(d);
  EXPECT_ERROR(st.get("model.layers.0.mlp.up_proj.weigth"), "'model.layers.0.mlp.up_proj.weigth'", "not found", d,
               "3 tensors", "did you mean 'model.layers.0.mlp.up_proj.weight'");
  EXPECT_ERROR(st.get("layers.0.mlp.down_proj.weight"), "did you mean 'model.layers.0.mlp.down_proj.weight'");
  EXPECT_ERROR(st.shape_of("zzz"), "'zzz'", "none with a similar name");
  EXPECT_ERROR(st.file_of("zzz"), "'zzz'");
  EXPECT_ERROR(SafetensorsFile::open(d + "/model.safetensors")->get("lm_head.weights"), d + "/model.safetensors",
               "did you mean 'lm_head.weight'");

  std::string other = path("other.safetensors");
  save_safetensors(other, {{"lm_head.weight", Tensor::full({2}, 2.0f)}, {"extra", Tensor::full({1}, 3.0f)}});
  EXPECT_ERROR(TensorStore::open_files({d + "/model.safetensors", other}), "'lm_head.weight'", "both", other);
  std::string third = path("third.safetensors");
  save_safetensors(third, {{"extra2", Tensor::full({1}, 3.0f)}});
  TensorStore two = TensorStore::open_files({d + "/model.safetensors", third});
  EXPECT_EQ(two.size(), 4u);
  EXPECT_EQ(two.file_of("extra2"), third);
}

TEST_F(SafetensorsTest, UnsupportedDtypesAreListedButNotLoaded) {
  std::string header =
      R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},)"
      R"("q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[16,20]},)"
      R"("z":{"dtype":"MYSTERY","shape":[3],"data_offsets":[20,23]},)"
      R"("ok":{"dtype":"U8","shape":[1],"data_offsets":[23,24]}})";
  std::string p = path("dt.safetensors");
  write_bytes(p, st_bytes(header, std::string(24, '\1')));
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->size(), 4u);
  ASSERT_TRUE(f->has("d"));
  EXPECT_FALSE(f->find("d")->supported);
  EXPECT_EQ(f->find("d")->dtype_name, "F64");
  EXPECT_ERROR(f->get("d"), p, "'d'", "F64", "cannot load");
  EXPECT_ERROR(f->get("q"), p, "'q'", "F8_E4M3");
  EXPECT_ERROR(f->get("z"), p, "'z'", "MYSTERY", "not a safetensors dtype");
  EXPECT_EQ(f->get("ok").numel(), 1);
  EXPECT_ERROR(TensorStore::open_files({p}).dtype_of("d"), "F64");
  // Known element sizes are still checked for dtypes we cannot load.
  write_bytes(p, st_bytes(R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_ERROR(SafetensorsFile::open(p), p, "'d'", "needs 16 bytes");
  // Sub-byte dtypes: 4 F4 values are 2 bytes; 3 of them are not a whole number of bytes.
  write_bytes(p, st_bytes(R"({"f":{"dtype":"F4","shape":[2,2],"data_offsets":[0,2]}})", std::string(2, '\0')));
  EXPECT_EQ(SafetensorsFile::open(p)->find("f")->nbytes(), 2u);
  write_bytes(p, st_bytes(R"({"f":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", std::string(2, '\0')));
  EXPECT_ERROR(SafetensorsFile::open(p), p, "'f'", "12 bits (not a whole number of bytes)");
}

TEST_F(SafetensorsTest, BadFilesGiveClearErrors) {
  const std::string ok = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> parts;  // besides the path
  };
  std::vector<Case> cases = {
      {"empty file", "", {"0 bytes", "too short"}},
      {"shorter than 8 bytes", std::string("\x05\0\0", 3), {"3 bytes", "too short"}},
      {"header length larger than file", le64(100) + "{}", {"header length 100", "runs past the end"}},
      {"header length 2^63", le64(uint64_t(1) << 63) + "{}      ", {"9223372036854775808", "runs past the end"}},
      {"invalid JSON", st_bytes("{\"a\": ", ""), {"not valid JSON"}},
      {"binary garbage", st_bytes(std::string("\xff\xfe\0\x01", 4), ""), {"not valid JSON"}},
      {"invalid UTF-8 name", st_bytes("{\"\xff\":1}", ""), {"not valid JSON"}},
      {"zero-length header", le64(0), {"not valid JSON"}},
      {"JSON array", st_bytes("[1, 2]", ""), {"JSON array", "not an object"}},
      {"JSON string", st_bytes("\"x\"", ""), {"JSON string"}},
      {"entry not an object", st_bytes(R"({"a": 5})", ""), {"'a'", "not an object"}},
      {"missing dtype", st_bytes(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, 0)), {"'a'", "dtype"}},
      {"dtype not a string", st_bytes(R"({"a":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "dtype"}},
      {"missing shape", st_bytes(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, 0)), {"'a'", "shape"}},
      {"missing data_offsets", st_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, 0)),
       {"'a'", "data_offsets"}},
      {"one offset", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, 0)),
       {"'a'", "data_offsets"}},
      {"negative offset", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", std::string(8, 0)),
       {"'a'", "data_offsets"}},
      {"offsets outside the data",
       st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(8, 0)),
       {"'a'", "[8, 16]", "past the end"}},
      {"offsets near 2^64",
       st_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}})", ""),
       {"'a'", "past the end"}},
      {"end before begin", st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, 0)),
       {"'a'", "end before"}},
      {"size != numel*dtype", st_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "hold 8 bytes", "needs 12 bytes"}},
      {"overlapping tensors",
       st_bytes("{" + ok + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 0)),
       {"'b'", "overlap", "'a'"}},
      {"negative shape", st_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "negative"}},
      {"float shape", st_bytes(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "other than integers"}},
      {"shape product overflow",
       st_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "64 bits"}},
      {"numel*size overflow",
       st_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", std::string(8, 0)),
       {"'a'", "more than 2^64"}},
      {"dimension above int64",
       st_bytes(R"({"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}})", ""),
       {"'a'", "64 bits"}},
      {"duplicate tensor", st_bytes("{" + ok + "," + ok + "}", std::string(8, 0)), {"'a'", "twice"}},
      {"deep nesting", st_bytes(std::string(100000, '[') + std::string(100000, ']'), ""), {"deeper"}},
      {"metadata not an object", st_bytes(R"({"__metadata__":[1]})", ""), {"__metadata__"}},
      {"metadata value not a string", st_bytes(R"({"__metadata__":{"k":1}})", ""), {"__metadata__", "'k'"}},
  };
  std::string p = path("bad.safetensors");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    write_bytes(p, c.bytes);
    std::vector<std::string> parts = c.parts;
    parts.push_back(p);
    EXPECT_TRUE(ThrowsWith([&] { SafetensorsFile::open(p); }, parts));
  }
  // A damaged header must not turn into a megabyte-long message.
  write_bytes(p, st_bytes("{\"" + std::string(1 << 20, 'a'), ""));
  try {
    SafetensorsFile::open(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_LT(std::strlen(e.what()), 1000u);
  }
  EXPECT_ERROR(SafetensorsFile::open(path("missing.safetensors")), path("missing.safetensors"), "cannot open");
  EXPECT_ERROR(SafetensorsFile::open(dir_), dir_, "not a regular file");
}

TEST_F(SafetensorsTest, HeaderLargerThanTheLimit) {
  // A sparse 150 MB file whose header claims 120 MB.
  std::string p = path("huge.safetensors");
  write_bytes(p, le64(120'000'000) + "{");
  fs::resize_file(p, 150'000'000);
  EXPECT_ERROR(SafetensorsFile::open(p), p, "120000000", "exceeds the limit");
}

TEST_F(SafetensorsTest, BadShardIndexes) {
  std::string d = path("c");
  make_dirs(d);
  save_safetensors(d + "/model-00001-of-00002.safetensors", {{"a", Tensor::full({2}, 1.0f)}});
  std::string idx = d + "/model.safetensors.index.json";

  write_bytes(idx, R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "model-00002-of-00002.safetensors", "'b'", "does not exist");

  write_bytes(idx, R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}})");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "'c'", d + "/model-00001-of-00002.safetensors", "does not hold");

  write_bytes(idx, R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "'a'", "not a file name inside");

  write_bytes(idx, R"({"weight_map":{"a":7}})");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "'a'", "not a file name");

  write_bytes(idx, R"({"metadata":{}})");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "weight_map");

  write_bytes(idx, "{not json");
  EXPECT_ERROR(TensorStore::open_dir(d), idx, "not valid JSON");

  write_bytes(idx, R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})");
  EXPECT_EQ(TensorStore::open_dir(d).size(), 1u);
  write_bytes(d + "/model-00001-of-00002.safetensors", "junk");  // a damaged shard names the index too
  EXPECT_ERROR(TensorStore::open_dir(d), d + "/model-00001-of-00002.safetensors", idx, "too short");

  std::string empty = path("empty");
  make_dirs(empty);
  write_bytes(empty + "/adapter_model.safetensors", "");
  EXPECT_ERROR(TensorStore::open_dir(empty), empty, "neither", "adapter_model.safetensors");
  EXPECT_ERROR(TensorStore::open_dir(path("nodir")), path("nodir"), "no such directory");
}

TEST_F(SafetensorsTest, TruncatedAndCorruptedFilesNeverCrash) {
  std::string good = path("good.safetensors");
  {
    SafetensorsWriter w;
    w.add("model.embed.weight", filled({4, 3}, DType::BF16, 1));
    w.add("model.norm", filled({3}, DType::F32, 2));
    w.add("scalar", Tensor::full({}, 1.0f));
    w.add("ids", filled({2, 2}, DType::I64, 3));
    w.add("empty", Tensor::empty({0, 3}, DType::F16));
    w.set_metadata("k", "v");
    w.write(good);
  }
  const std::string bytes = read_bytes(good);
  const size_t header_end = 8 + SafetensorsFile::open(good)->header_size();
  std::string p = path("fuzz.safetensors");
  int opened = 0, rejected = 0;
  auto try_file = [&](const std::string& b) {
    write_bytes(p, b);
    try {
      auto f = SafetensorsFile::open(p);
      for (const auto& e : f->entries()) {
        try {
          Tensor t = f->get(e);
          volatile uint8_t sink = 0;  // touch every byte
          for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ static_cast<const uint8_t*>(t.raw())[i];
        } catch (const Error& err) {
          EXPECT_NE(std::string(err.what()).find(p), std::string::npos) << err.what();
        }
      }
      ++opened;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(p), std::string::npos) << err.what();
      ++rejected;
    }
    // Any other exception type escapes and fails the test.
  };
  for (size_t n = 0; n <= bytes.size(); ++n) try_file(bytes.substr(0, n));
  EXPECT_EQ(opened, 1) << "only the whole file is valid";
  Rng rng(1234);
  for (int v = 0; v < 600; ++v) {
    std::string b = bytes;
    int flips = 1 + int(rng.below(3));
    for (int k = 0; k < flips; ++k) {
      size_t at = size_t(rng.below(header_end));
      if (rng.below(2)) {
        b[at] = char(rng.below(256));
      } else {  // a plausible character: digits, quotes and brackets hit the interesting paths
        const char pick[] = "0123456789-,:[]{}\" e.";
        b[at] = pick[rng.below(sizeof(pick) - 1)];
      }
    }
    try_file(b);
  }
  EXPECT_GT(rejected, 300);
}
