// Hugging Face `tokenizer.json` with a BPE model.
//
// Supported components (others are refused at load with the component's name):
//   normalizer:    NFC, NFKC, NFD, NFKD (utf8proc), Lowercase, Strip, Replace
//                  (String or Regex), Prepend, Sequence
//   pre_tokenizer: Split (Regex/String; Isolated, Removed, MergedWithPrevious,
//                  MergedWithNext, Contiguous; invert), ByteLevel (add_prefix_space,
//                  use_regex with the GPT-2 pattern), Metaspace (prepend_scheme,
//                  split), Digits, Sequence
//   model:         BPE (merges as "a b" or ["a", "b"], byte_fallback, unk_token,
//                  fuse_unk, ignore_merges)
//   decoder:       ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence
//   post_processor: TemplateProcessing (single sequence), ByteLevel, Sequence
//   added_tokens:  matched in the raw text before normalisation (longest first)
// Regexes run on PCRE2 (UTF, Unicode properties, JIT); Hugging Face uses Oniguruma,
// whose syntax for these patterns is the same.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain {

// Parses tokenizer.json text. `config_json` is tokenizer_config.json's text or "".
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizer(absl::string_view tokenizer_json,
                                                            absl::string_view config_json = "",
                                                            const std::string& source = "tokenizer.json");

}  // namespace posttrain
