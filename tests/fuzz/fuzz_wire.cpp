// libFuzzer target: the binary protocol's frame decoder (protocols/wire.hpp), as the node's
// listener uses it: split the input into frames under a 4 KiB bound, decode each payload as a
// request (and as a response, as the client does); re-encode what decodes and check that the
// re-encoded frame decodes to the same request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocols/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hive::wire;
  std::string_view in{reinterpret_cast<const char*>(data), size};
  for (int frames = 0; frames < 64; ++frames) {
    auto f = next_frame(in, 4096);
    if (!f || f->consumed == 0)
      break;
    if (auto req = decode_request(f->payload)) {
      std::string again;
      append_frame(again, *req);
      auto f2 = next_frame(again, 1 << 20);
      if (!f2 || f2->consumed != again.size())
        std::abort();
      auto req2 = decode_request(f2->payload);
      if (!req2 || req2->id != req->id || req2->body.index() != req->body.index())
        std::abort();
    }
    (void)decode_response(f->payload);
    in.remove_prefix(f->consumed);
  }
  // The payload decoders on the raw input too (no framing).
  (void)decode_request(std::string_view{reinterpret_cast<const char*>(data), size});
  return 0;
}
