// bitsandbytes 4-bit checkpoints: round trips, the exact layout bitsandbytes writes, a file
// built by hand from bitsandbytes' layout, and corrupt files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "io/bnb_checkpoint.h"

using namespace qpeft;

namespace {

class BnbCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = ::testing::TempDir() + "qpeft_bnb_" + std::to_string(::getpid()) + "_" + info->name();
    make_dirs(dir_);
  }
  void TearDown() override { remove_all(dir_); }
  std::string path(const std::string& f) const { return dir_ + "/" + f; }
  std::string dir_;
};

Tensor gaussian(int64_t rows, int64_t cols, uint32_t seed, DType dt = DType::F32) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> v(size_t(rows * cols));
  for (auto& x : v) x = nd(rng);
  if (rows * cols > 10) v[7] = 0.3f;  // an outlier
  Tensor t = Tensor::from_vector({rows, cols}, v);
  return dt == DType::F32 ? t : t.to(dt);
}

Tensor u8(const std::vector<uint8_t>& v, const Shape& shape) {
  Tensor t = Tensor::zeros(shape, DType::U8);
  std::memcpy(t.raw(), v.data(), v.size());
  return t;
}
Tensor u8_text(const std::string& s) { return u8(std::vector<uint8_t>(s.begin(), s.end()), {int64_t(s.size())}); }
Tensor f32(std::span<const float> v) { return Tensor::from_vector({int64_t(v.size())}, std::vector<float>(v.begin(), v.end())); }

// The tensors of one quantized weight as a plain list, for editing into corrupt variants.
using Parts = std::vector<std::pair<std::string, Tensor>>;
Parts parts_of(const QuantizedWeight& q, const std::string& w) {
  Parts p;
  p.emplace_back(w, u8(q.packed(), {int64_t(q.packed().size()), 1}));
  if (auto* dq = q.dq_scales()) {
    p.emplace_back(w + ".absmax", u8(dq->qabsmax, {q.num_blocks()}));
    p.emplace_back(w + ".nested_absmax", f32(dq->nested_absmax));
    p.emplace_back(w + ".nested_quant_map", f32(dq->nested_map));
  } else {
    p.emplace_back(w + ".absmax", f32(q.absmax()));
  }
  p.emplace_back(w + ".quant_map", f32(q.quant_map()));
  p.emplace_back(w + ".quant_state." + quant_state_tag(q.format()), u8_text(bnb_quant_state_json(q)));
  return p;
}
Tensor& part(Parts& p, const std::string& name) {
  for (auto& [n, t] : p)
    if (n == name) return t;
  throw std::runtime_error("no part " + name);
}
void drop(Parts& p, const std::string& name) {
  std::erase_if(p, [&](const auto& e) { return e.first == name; });
}

const std::string kW = "model.layers.0.mlp.up_proj.weight";

std::shared_ptr<QuantizedWeight> read_back(const std::string& file, const std::string& w, const Shape& expected) {
  TensorStore store = TensorStore::open_files({file});
  auto found = find_quantized_weights(store);
  if (!found.count(w)) throw Error("not found as quantized: " + w);
  return read_bnb_weight(store, w, found.at(w), expected);
}

void expect_same(const QuantizedWeight& a, const QuantizedWeight& b) {
  EXPECT_EQ(a.format(), b.format());
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  EXPECT_EQ(a.block_size(), b.block_size());
  EXPECT_EQ(a.original_dtype(), b.original_dtype());
  EXPECT_EQ(a.packed(), b.packed());
  EXPECT_EQ(a.absmax(), b.absmax());
  ASSERT_EQ(a.double_quant(), b.double_quant());
  if (a.double_quant()) {
    EXPECT_EQ(a.dq_scales()->qabsmax, b.dq_scales()->qabsmax);
    EXPECT_EQ(a.dq_scales()->nested_absmax, b.dq_scales()->nested_absmax);
    EXPECT_EQ(a.dq_scales()->nested_map, b.dq_scales()->nested_map);
    EXPECT_EQ(a.dq_scales()->offset, b.dq_scales()->offset);
  }
  Tensor da = a.dequantize(), db = b.dequantize();
  EXPECT_EQ(0, std::memcmp(da.raw(), db.raw(), da.nbytes()));
}

struct Case {
  QuantFormat f;
  int64_t rows, cols, block;
  bool dq;
};

TEST_F(BnbCheckpoint, WriteReadRoundTripIsBitIdentical) {
  const Case cases[] = {
      {QuantFormat::NF4, 64, 128, 64, true},     {QuantFormat::NF4, 33, 37, 64, false},  // odd numel, partial block
      {QuantFormat::FP4, 48, 100, 128, true},    {QuantFormat::NF2, 40, 96, 64, false},
      {QuantFormat::NF3, 24, 72, 32, true},      {QuantFormat::Uniform4, 16, 256, 64, false},
      {QuantFormat::NF4, 300, 256, 64, true},  // > 256 blocks: two nested blocks
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(quant_format_name(c.f)) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols));
    auto q = std::make_shared<QuantizedWeight>(
        QuantizedWeight::quantize(gaussian(c.rows, c.cols, 7, DType::BF16), c.f, c.block, c.dq, kW));
    SafetensorsWriter w;
    add_bnb_weight(w, kW, q);
    w.write(path("m.safetensors"));
    auto back = read_back(path("m.safetensors"), kW, {c.rows, c.cols});
    expect_same(*q, *back);
    EXPECT_EQ(back->original_dtype(), DType::BF16);

    // Quantized while written (two passes over the source) gives the same file, byte for byte.
    SafetensorsWriter lazy;
    Tensor src = gaussian(c.rows, c.cols, 7, DType::BF16);
    int calls = 0;
    add_bnb_weight_lazy(lazy, kW, {c.rows, c.cols}, DType::BF16, {c.f, c.block, c.dq}, [&] {
      ++calls;
      return src;
    });
    lazy.write(path("lazy.safetensors"));
    EXPECT_EQ(read_text_file(path("m.safetensors")), read_text_file(path("lazy.safetensors")));
    EXPECT_EQ(calls, 2);
  }
}

TEST_F(BnbCheckpoint, LayoutIsBitsandbytes) {
  auto q = std::make_shared<QuantizedWeight>(
      QuantizedWeight::quantize(gaussian(64, 128, 1, DType::BF16), QuantFormat::NF4, 64, true, kW));
  SafetensorsWriter w;
  add_bnb_weight(w, kW, q);
  w.write(path("m.safetensors"));
  auto f = SafetensorsFile::open(path("m.safetensors"));
  auto expect_entry = [&](const std::string& name, const char* dtype, const Shape& shape) {
    const auto* e = f->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->dtype_name, dtype) << name;
    EXPECT_EQ(e->shape, shape) << name;
  };
  ASSERT_EQ(f->size(), 6u);
  expect_entry(kW, "U8", {64 * 128 / 2, 1});
  expect_entry(kW + ".absmax", "U8", {128});
  expect_entry(kW + ".quant_map", "F32", {16});
  expect_entry(kW + ".nested_absmax", "F32", {1});
  expect_entry(kW + ".nested_quant_map", "F32", {256});
  const std::string key = kW + ".quant_state.bitsandbytes__nf4";
  Tensor js = f->get(key);
  const std::string text(static_cast<const char*>(js.raw()), js.nbytes());
  const float off = q->dq_scales()->offset;
  // json.dumps of {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype",
  // "nested_offset"}: Python's separators and float repr.
  const std::string prefix =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [64, 128], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )";
  ASSERT_EQ(text.substr(0, prefix.size()), prefix);
  ASSERT_EQ(text.back(), '}');
  const std::string num = text.substr(prefix.size(), text.size() - prefix.size() - 1);
  EXPECT_EQ(float(std::stod(num)), off);
  EXPECT_EQ(std::stod(num), double(off));  // the float32 value exactly, as offset.item() gives it
  EXPECT_EQ(num.find_first_not_of("0123456789.e-+"), std::string::npos) << num;

  // The code book bitsandbytes stores for NF4 (its literal table).
  const float nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                         -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                         0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                         0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  Tensor qm = f->get(kW + ".quant_map");
  for (int i = 0; i < 16; ++i) EXPECT_EQ(qm.f32()[i], nf4[i]) << i;

  // Without double quantization: f32 absmax, no nested tensors, JSON without nested keys.
  auto fp = std::make_shared<QuantizedWeight>(
      QuantizedWeight::quantize(gaussian(3, 100, 2), QuantFormat::FP4, 128, false, "x.weight"));
  EXPECT_EQ(bnb_quant_state_json(*fp), R"({"quant_type": "fp4", "blocksize": 128, "dtype": "float32", "shape": [3, 100]})");
  SafetensorsWriter w2;
  add_bnb_weight(w2, "x.weight", fp);
  w2.write(path("fp4.safetensors"));
  auto f2 = SafetensorsFile::open(path("fp4.safetensors"));
  EXPECT_EQ(f2->names(), (std::vector<std::string>{"x.weight", "x.weight.absmax", "x.weight.quant_map",
                                                   "x.weight.quant_state.bitsandbytes__fp4"}));
  EXPECT_EQ(f2->find("x.weight")->shape, Shape({150, 1}));
  EXPECT_EQ(f2->find("x.weight.absmax")->dtype_name, "F32");
  EXPECT_EQ(f2->find("x.weight.absmax")->shape, Shape({3}));
  // bitsandbytes' FP4 map: [0, .0625, 8, 12, 4, 6, 2, 3] / 12, then the negatives (sign in bit 3).
  const float mag[8] = {0, 0.0625f, 8, 12, 4, 6, 2, 3};
  Tensor fm = f2->get("x.weight.quant_map");
  for (int i = 0; i < 16; ++i) EXPECT_EQ(fm.f32()[i], (i < 8 ? 1 : -1) * mag[i % 8] / 12.0f) << i;

  // Formats bitsandbytes does not have get qpeft's tag.
  EXPECT_EQ(quant_state_tag(QuantFormat::NF2), "qpeft__nf2");
  EXPECT_EQ(quant_state_tag(QuantFormat::NF3), "qpeft__nf3");
  QuantFormat g;
  EXPECT_TRUE(parse_quant_state_tag("qpeft__uniform4", &g));
  EXPECT_EQ(g, QuantFormat::Uniform4);
  EXPECT_FALSE(parse_quant_state_tag("bitsandbytes__nf2", &g));
  EXPECT_FALSE(parse_quant_state_tag("qpeft__nf4", &g));
}

// A file laid out the way bitsandbytes' Linear4bit state dict is saved, built from first
// principles (codes packed high nibble first, literal JSON), decodes to code[idx] · absmax.
TEST_F(BnbCheckpoint, HandMadeBitsandbytesFileLoads) {
  const int64_t rows = 3, cols = 33, n = rows * cols, B = 64, nb = 2;  // odd numel: last nibble padded
  std::vector<uint8_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = uint8_t((i * 7 + 3) % 16);
  std::vector<uint8_t> packed(size_t((n + 1) / 2), 0);
  for (int64_t i = 0; i < n; ++i) packed[size_t(i / 2)] |= uint8_t(i % 2 == 0 ? idx[size_t(i)] << 4 : idx[size_t(i)]);
  packed.back() |= 7;  // bitsandbytes pads with the NF4 code of 0.0
  const std::vector<float> absmax = {0.5f, 2.0f};
  const std::vector<float> nf4(codebook(QuantFormat::NF4).begin(), codebook(QuantFormat::NF4).end());
  Parts p = {{"layer.weight", u8(packed, {int64_t(packed.size()), 1})},
             {"layer.weight.absmax", f32(absmax)},
             {"layer.weight.quant_map", f32(nf4)},
             {"layer.weight.quant_state.bitsandbytes__nf4",
              u8_text(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [3, 33]})")},
             {"layer.bias", Tensor::zeros({4})}};
  save_safetensors(path("hand.safetensors"), p);
  auto q = read_back(path("hand.safetensors"), "layer.weight", {rows, cols});
  EXPECT_EQ(q->original_dtype(), DType::F16);
  EXPECT_FALSE(q->double_quant());
  Tensor d = q->dequantize();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(d.f32()[i], nf4[idx[size_t(i)]] * absmax[size_t(i / B)]) << i;

  // Double quantization by hand: absmax[b] = nested_map[code[b]] · nested_absmax[b / 256] + offset.
  const std::vector<float> dyn(codebook(QuantFormat::Dynamic8).begin(), codebook(QuantFormat::Dynamic8).end());
  const std::vector<uint8_t> qcodes = {200, 17};
  const float nested = 0.75f, offset = 0.25f;
  Parts p2 = {{"layer.weight", u8(packed, {int64_t(packed.size()), 1})},
              {"layer.weight.absmax", u8(qcodes, {nb})},
              {"layer.weight.quant_map", f32(nf4)},
              {"layer.weight.nested_absmax", f32(std::vector<float>{nested})},
              {"layer.weight.nested_quant_map", f32(dyn)},
              {"layer.weight.quant_state.bitsandbytes__nf4",
               u8_text(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [3, 33], )"
                       R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.25})")}};
  save_safetensors(path("hand_dq.safetensors"), p2);
  auto q2 = read_back(path("hand_dq.safetensors"), "layer.weight", {rows, cols});
  ASSERT_TRUE(q2->double_quant());
  Tensor d2 = q2->dequantize();
  for (int64_t i = 0; i < n; ++i) {
    const float scale = float(dyn[qcodes[size_t(i / B)]] * nested) + offset;
    ASSERT_EQ(d2.f32()[i], nf4[idx[size_t(i)]] * scale) << i;
  }
}

// Every corrupt variant is refused with a message naming the file and the tensor.
TEST_F(BnbCheckpoint, CorruptFilesGiveClearErrors) {
  QuantizedWeight q = QuantizedWeight::quantize(gaussian(64, 128, 3), QuantFormat::NF4, 64, true, kW);
  QuantizedWeight q_plain = QuantizedWeight::quantize(gaussian(64, 128, 3), QuantFormat::NF4, 64, false, kW);
  const std::string state = kW + ".quant_state.bitsandbytes__nf4";
  const std::string good_json = bnb_quant_state_json(q);
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  struct Variant {
    const char* what;
    std::function<void(Parts&)> edit;
    bool plain;                  // start from the weight without double quantization
    std::string tensor_in_msg;   // must appear in the error
    std::string also;            // and this
  };
  const std::vector<Variant> variants = {
      {"wrong shape in JSON", [&](Parts& p) { part(p, state) = u8_text(replace(good_json, "[64, 128]", "[128, 64]")); },
       false, state, "expects"},
      {"truncated absmax", [&](Parts& p) { part(p, kW + ".absmax") = f32(std::vector<float>(127, 1.0f)); }, true,
       kW + ".absmax", "[127]"},
      {"missing nested_absmax", [&](Parts& p) { drop(p, kW + ".nested_absmax"); }, false, kW + ".nested_absmax",
       "missing"},
      {"unknown quant_type", [&](Parts& p) {
         part(p, state) = u8_text(replace(good_json, "nf4", "nf5"));
         p.back().first = kW + ".quant_state.bitsandbytes__nf5";
       }, false, kW + ".quant_state.bitsandbytes__nf5", "unknown quantization type 'bitsandbytes__nf5'"},
      {"quant_type differs from the key", [&](Parts& p) { part(p, state) = u8_text(replace(good_json, "nf4", "fp4")); },
       false, state, "does not match"},
      {"JSON not JSON", [&](Parts& p) { part(p, state) = u8_text("{\"quant_type\": "); }, false, state, "not valid JSON"},
      {"blocksize not a power of two", [&](Parts& p) {
         part(p, state) = u8_text(replace(good_json, "\"blocksize\": 64", "\"blocksize\": 48"));
       }, false, state, "blocksize 48"},
      {"no dtype", [&](Parts& p) { part(p, state) = u8_text(replace(good_json, "\"dtype\": \"float32\", ", "")); },
       false, state, "\"dtype\""},
      {"packed codes truncated", [&](Parts& p) { part(p, kW) = u8(std::vector<uint8_t>(4000), {4000, 1}); }, false, kW,
       "4096"},
      {"absmax f32 with double quant", [&](Parts& p) { part(p, kW + ".absmax") = Tensor::zeros({128}); }, false,
       kW + ".absmax", "U8[128]"},
      {"nested_absmax wrong size", [&](Parts& p) { part(p, kW + ".nested_absmax") = Tensor::zeros({2}); }, false,
       kW + ".nested_absmax", "[2]"},
      {"non-finite absmax", [&](Parts& p) { part(p, kW + ".absmax").f32()[5] = NAN; }, true, kW + ".absmax",
       "non-finite"},
      {"foreign code book", [&](Parts& p) { part(p, kW + ".quant_map").f32()[3] = 0.5f; }, false,
       kW + ".quant_map", "code book"},
      {"nested_offset missing", [&](Parts& p) {
         part(p, state) = u8_text(good_json.substr(0, good_json.find(", \"nested_offset\"")) + "}");
       }, false, state, "nested_offset"},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.what);
    Parts p = parts_of(v.plain ? q_plain : q, kW);
    v.edit(p);
    const std::string file = path("bad.safetensors");
    save_safetensors(file, p);
    try {
      read_back(file, kW, {64, 128});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(v.tensor_in_msg), std::string::npos) << msg;
      EXPECT_NE(msg.find(v.also), std::string::npos) << msg;
      EXPECT_TRUE(msg.find(file) != std::string::npos || msg.find(dir_) != std::string::npos) << msg;
    }
  }
}

TEST_F(BnbCheckpoint, TwoQuantStatesForOneWeightAreRefused) {
  QuantizedWeight q = QuantizedWeight::quantize(gaussian(8, 64, 4), QuantFormat::NF4, 64, false, kW);
  Parts p = parts_of(q, kW);
  p.emplace_back(kW + ".quant_state.bitsandbytes__fp4", u8_text("{}"));
  save_safetensors(path("two.safetensors"), p);
  TensorStore store = TensorStore::open_files({path("two.safetensors")});
  try {
    find_quantized_weights(store);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("two quant_state"), std::string::npos) << e.what();
  }
}

}  // namespace
