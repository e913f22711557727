// Hugging Face `tokenizer.json`, read as the tokenizers crate reads it.
//
// Supported components (others are refused at load with the component's name):
//   normalizer:    NFC, NFKC, NFD, NFKD (utf8proc), Lowercase (char::to_lowercase),
//                  StripAccents, BertNormalizer, Nmt, Strip, Replace (String or
//                  Regex), Prepend, Precompiled (SentencePiece's compiled charsmap:
//                  its darts-clone trie, per grapheme cluster as the crate applies
//                  it), Sequence
//   pre_tokenizer: Split (Regex/String; Isolated, Removed, MergedWithPrevious,
//                  MergedWithNext, Contiguous; invert), ByteLevel (add_prefix_space,
//                  use_regex with the GPT-2 pattern), Metaspace (prepend_scheme,
//                  split), Whitespace, WhitespaceSplit, Punctuation (behavior),
//                  BertPreTokenizer, CharDelimiterSplit, Digits, FixedLength, Sequence
//   model:         BPE (merges as "a b" or ["a", "b"], byte_fallback, unk_token,
//                  fuse_unk, ignore_merges, continuing_subword_prefix,
//                  end_of_word_suffix), WordPiece, WordLevel, Unigram (Viterbi,
//                  unks fused, byte_fallback)
//   decoder:       ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
//                  WordPiece, BPEDecoder, CTC, Sequence
//   post_processor: TemplateProcessing (single sequence), BertProcessing,
//                  RobertaProcessing, ByteLevel, Sequence
//   added_tokens:  matched leftmost-longest, `normalized` ones in the normalised
//                  text (by their normalised content), the others in the raw text;
//                  lstrip, rstrip, single_word
// Not supported: UnicodeScripts, BPE dropout. Regexes run on PCRE2 (UTF, Unicode properties, JIT);
// Hugging Face uses Oniguruma, whose syntax for these patterns is the same.
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
