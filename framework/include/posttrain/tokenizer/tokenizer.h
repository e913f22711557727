// Tokenizers: text ↔ token ids.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(auto tok, LoadTokenizer("models/stories260K"));  // a dir, a
//   std::vector<std::int64_t> ids = tok->Encode("Once upon a time", /*add_special_tokens=*/true);
//   std::string text = tok->Decode(ids, /*skip_special_tokens=*/true);
//
// Two implementations: Hugging Face `tokenizer.json` (BPE models with
// SentencePiece-style or byte-level pre-tokenization; see hf_tokenizer.h) and
// SentencePiece `.model` files through libsentencepiece.
// Thread-safety: Encode/Decode are const and safe from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace posttrain {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // add_special_tokens: apply the tokenizer's template (e.g. a BOS token first).
  virtual std::vector<std::int64_t> Encode(absl::string_view text,
                                           bool add_special_tokens = false) const = 0;
  // Ids outside the vocabulary decode to nothing.
  virtual std::string Decode(absl::Span<const std::int64_t> ids,
                             bool skip_special_tokens = false) const = 0;

  virtual std::int64_t vocab_size() const = 0;
  virtual std::optional<std::int64_t> TokenToId(absl::string_view token) const = 0;
  // "" for ids outside the vocabulary.
  virtual std::string IdToToken(std::int64_t id) const = 0;

  std::optional<std::int64_t> bos_token_id() const { return bos_token_id_; }
  std::optional<std::int64_t> eos_token_id() const { return eos_token_id_; }
  std::optional<std::int64_t> pad_token_id() const { return pad_token_id_; }

 protected:
  std::optional<std::int64_t> bos_token_id_, eos_token_id_, pad_token_id_;
};

// `path` is a model directory (tokenizer.json, else tokenizer.model), a
// tokenizer.json file, or a SentencePiece .model file. Special token ids come
// from tokenizer_config.json beside it when present.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

// A SentencePiece .model (libsentencepiece).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

// Converts a SentencePiece BPE .model (normalizer "identity", as llama2.c's) into
// an equivalent Hugging Face tokenizer.json (nlohmann::json), plus the
// tokenizer_config.json that names its special tokens. Unimplemented for unigram
// models or other normalizers.
struct ConvertedTokenizer {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};
absl::StatusOr<ConvertedTokenizer> ConvertSentencePieceToHf(const std::string& model_path);

}  // namespace posttrain
