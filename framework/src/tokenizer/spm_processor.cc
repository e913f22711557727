// libposttrain_spm.so: SentencePiece behind SpmProcessor (see spm_processor.h).
#include "spm_processor.h"

#include <sentencepiece_processor.h>

namespace posttrain::internal {
namespace {

class SpmProcessorImpl final : public SpmProcessor {
 public:
  std::string Load(const std::string& path) override {
    const auto status = processor_.Load(path);
    return status.ok() ? std::string() : status.ToString();
  }
  std::vector<int> Encode(const std::string& text) const override {
    std::vector<int> ids;
    processor_.Encode(text, &ids).IgnoreError();
    return ids;
  }
  std::string Decode(const std::vector<int>& ids) const override {
    std::string text;
    processor_.Decode(ids, &text).IgnoreError();
    return text;
  }
  int size() const override { return processor_.GetPieceSize(); }
  std::string IdToPiece(int id) const override { return processor_.IdToPiece(id); }
  int PieceToId(const std::string& piece) const override { return processor_.PieceToId(piece); }
  bool IsControl(int id) const override { return processor_.IsControl(id); }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }
  int pad_id() const override { return processor_.pad_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace
}  // namespace posttrain::internal

extern "C" __attribute__((visibility("default"))) posttrain::internal::SpmProcessor* posttrain_spm_create() {
  return new posttrain::internal::SpmProcessorImpl();
}
