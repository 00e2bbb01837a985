// adapter_config.json (peft/adapter_io.h), as PEFT writes it for LoRA and (IA)³.
#include "fuzz_util.h"
#include "peft/adapter_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qpeft::fuzz::refuse_only_with_error(
      [&] { (void)qpeft::parse_adapter_config(std::string(qpeft::fuzz::text_of(data, size)), "adapter_config.json"); });
  return 0;
}
