// libposttrain_spm.so: SentencePiece behind SpmProcessor (see spm_processor.h).
#include "spm_processor.h"

#include <sentencepiece_processor.h>

#include <exception>
#include <memory>

namespace posttrain::internal {
namespace {

class SpmProcessorImpl final : public SpmProcessor {
 public:
  // libsentencepiece throws on some malformed models (e.g. an empty piece reaches its
  // trie builder): nothing may escape this module, and a processor that threw is
  // replaced by a fresh one.
  std::string Load(const std::string& path) override {
    try {
      const auto status = processor_->Load(path);
      return status.ok() ? std::string() : status.ToString();
    } catch (const std::exception& e) {
      processor_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
      return std::string("malformed model: ") + e.what();
    } catch (...) {
      processor_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
      return "malformed model";
    }
  }
  std::vector<int> Encode(const std::string& text) const override {
    std::vector<int> ids;
    try {
      processor_->Encode(text, &ids).IgnoreError();
    } catch (...) {
      ids.clear();
    }
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    try {
      processor_->Decode(ids, &text).IgnoreError();
    } catch (...) {
      text.clear();
    }
    return text;
  }
  int size() const override { return processor_->GetPieceSize(); }
  std::string IdToPiece(int id) const override { return processor_->IdToPiece(id); }
  int PieceToId(const std::string& piece) const override { return processor_->PieceToId(piece); }
  bool IsControl(int id) const override { return processor_->IsControl(id); }
  int bos_id() const override { return processor_->bos_id(); }
  int eos_id() const override { return processor_->eos_id(); }
  int pad_id() const override { return processor_->pad_id(); }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
};

}  // namespace
}  // namespace posttrain::internal

extern "C" __attribute__((visibility("default"))) posttrain::internal::SpmProcessor* posttrain_spm_create() {
  return new posttrain::internal::SpmProcessorImpl();
}
