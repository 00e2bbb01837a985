#include <gtest/gtest.h>

#include "core/thread_pool.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  qpeft::set_num_threads(2);
  return RUN_ALL_TESTS();
}
