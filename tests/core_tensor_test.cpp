#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

using namespace qpeft;

TEST(DType, Bf16RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::infinity()))));
}

TEST(DType, F16RoundTrip) {
  for (float v : {0.0f, 1.0f, -1.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f16_to_f32(0x0001), 5.9604645e-08f);
}

TEST(DType, VectorConversionEqualsScalar) {
  // 37 elements: the 8-wide kernel and its scalar tail; NaN, inf, subnormals, signed zero.
  std::vector<uint16_t> bits;
  for (uint32_t v : {0x0000u, 0x8000u, 0x0001u, 0x7f80u, 0xff80u, 0x7fc1u, 0x3f80u, 0xc2f7u, 0x0400u, 0x7bffu, 0x3c00u})
    bits.push_back(uint16_t(v));
  for (int i = 0; i < 26; ++i) bits.push_back(uint16_t(i * 2503 + 17));
  std::vector<float> out(bits.size());
  convert_to_f32(bits.data(), DType::BF16, out.data(), bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    float want = bf16_to_f32(bits[i]);
    EXPECT_EQ(std::memcmp(&out[i], &want, 4), 0) << i;
  }
  convert_to_f32(bits.data(), DType::F16, out.data(), bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    float want = f16_to_f32(bits[i]);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(out[i])) << i;
    else EXPECT_EQ(std::memcmp(&out[i], &want, 4), 0) << i;
  }
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 2}));
  EXPECT_EQ(r.f32()[0], 3.0f);
  r.f32()[0] = 30.0f;
  EXPECT_EQ(t.f32()[2], 30.0f);
  EXPECT_THROW(t.reshape({4, 2}), Error);
  EXPECT_THROW(t.rows(2, 4), Error);
  Tensor b = t.to(DType::BF16);
  EXPECT_EQ(b.to_vector()[1], 2.0f);
}

// Back-to-back short jobs (picked up while the threads spin) mixed with gaps and jobs longer
// than the spin (the threads go to sleep and are woken): every thread runs every job exactly
// once, in order, and a worker's error reaches the caller without losing the next job.
TEST(ThreadPool, ShortAndLongJobsSpinningAndSleeping) {
  for (int threads : {2, 3, 5}) {
    ThreadPool p(threads);
    std::vector<std::atomic<int>> runs(static_cast<size_t>(threads));
    for (int job = 0; job < 3000; ++job) {
      const bool pause = job % 97 == 0, long_job = job % 89 == 0;
      if (pause) std::this_thread::sleep_for(std::chrono::microseconds(300));
      p.run([&](int ith, int nth) {
        ASSERT_EQ(nth, threads);
        if (long_job && ith == nth - 1) std::this_thread::sleep_for(std::chrono::microseconds(400));
        runs[size_t(ith)].fetch_add(1);
      });
      for (int t = 0; t < threads; ++t) ASSERT_EQ(runs[size_t(t)].load(), job + 1) << "thread " << t << " job " << job;
      if (job % 500 == 250) {
        EXPECT_THROW(p.run([](int ith, int) {
          if (ith == 1) throw Error("worker boom");
        }),
                     Error);
      }
    }
  }
}

TEST(ThreadPool, RunsEveryChunkOnceAndPropagatesErrors) {
  ThreadPool p(3);
  std::vector<int> hits(100, 0);
  p.parallel_for(100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_THROW(p.run([](int ith, int) {
    if (ith == 2) throw Error("boom");
  }),
               Error);
}
