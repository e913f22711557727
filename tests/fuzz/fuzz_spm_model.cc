// A SentencePiece .model file (a serialized ModelProto, read by libsentencepiece
// behind posttrain's wrapper), then encoding and decoding a fixed text with whatever
// loaded: the wrapper must turn every bad file into an error.
#include "fuzz_util.h"
#include "posttrain/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = posttrain::fuzz::WriteTemp(data, size, ".model");
  auto tokenizer = posttrain::LoadSentencePieceTokenizer(path);
  if (tokenizer.ok()) {
    const std::vector<std::int64_t> ids = (*tokenizer)->Encode("Hello wörld 12 <s> \n\t é😀", true);
    (void)(*tokenizer)->Decode(ids, false);
    (void)(*tokenizer)->Decode({0, 1, 2, -1, 1 << 30}, true);
  }
  return 0;
}
