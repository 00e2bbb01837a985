// config.json (models/config.h): parse, then serialise what was accepted.
#include "fuzz_util.h"
#include "models/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::ModelConfig c = qpeft::ModelConfig::parse(std::string(qpeft::fuzz::text_of(data, size)), "config.json");
    (void)c.num_parameters();
    (void)qpeft::ModelConfig::parse(c.to_json(), "round trip");
  });
  return 0;
}
