// checkpoint-N/trainer_state.json (train/trainer.h), read on --resume.
#include "fuzz_util.h"
#include "train/trainer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qpeft::TrainOptions opt = [] {
    qpeft::TrainOptions o;
    o.batch = 2;
    o.seq_len = 24;
    return o;
  }();
  qpeft::fuzz::refuse_only_with_error(
      [&] { (void)qpeft::parse_trainer_state(std::string(qpeft::fuzz::text_of(data, size)), "trainer_state.json", opt); });
  return 0;
}
