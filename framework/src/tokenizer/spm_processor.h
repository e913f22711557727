// Private: libsentencepiece behind an interface of standard types only.
//
// libsentencepiece embeds protobuf-lite with exported symbols that collide with
// the libprotobuf libtorch loads, which crashes the process at start-up. So the
// wrapper lives in its own module, libposttrain_spm.so, which the framework opens
// on first use with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its references bind to its
// own protobuf. Its header clashes with Abseil too (it declares absl::string_view
// as std::string_view), another reason to keep it apart.
#pragma once

#include <string>
#include <vector>

namespace posttrain::internal {

class SpmProcessor {
 public:
  virtual ~SpmProcessor() = default;
  // "" on success, else the error.
  virtual std::string Load(const std::string& path) = 0;
  virtual std::vector<int> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int>& ids) const = 0;
  virtual int size() const = 0;
  virtual std::string IdToPiece(int id) const = 0;
  virtual int PieceToId(const std::string& piece) const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
};

// Exported by libposttrain_spm.so.
using SpmCreateFn = SpmProcessor*();
inline constexpr const char* kSpmCreateSymbol = "posttrain_spm_create";

}  // namespace posttrain::internal
