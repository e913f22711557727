// tokenizer.json (BPE and SentencePiece-style models, normalizers, pre-tokenizers,
// added tokens), then encoding and decoding a fixed text with whatever parsed.
#include "posttrain/tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto tokenizer = posttrain::ParseHfTokenizer(text);
  if (tokenizer.ok()) {
    const std::vector<std::int64_t> ids = (*tokenizer)->Encode("Hello wörld 12 <s> \n\t é😀", true);
    (void)(*tokenizer)->Decode(ids, false);
  }
  return 0;
}
