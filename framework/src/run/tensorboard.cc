#include "posttrain/run/tensorboard.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <boost/crc.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "posttrain/core/atomic_file.h"
#include "posttrain/core/status.h"
#include "proto/tensorboard_event.pb.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;
namespace tb = posttrain::tensorboard;

constexpr int kDtString = 7;  // tensorflow.DataType DT_STRING

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Frame(const std::string& bytes) {
  std::string out;
  const std::uint64_t length = bytes.size();
  char header[8];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  auto put32 = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  out.append(header, 8);
  put32(MaskCrc(Crc32c(header, 8)));
  out += bytes;
  put32(MaskCrc(Crc32c(bytes.data(), bytes.size())));
  return out;
}

std::uint64_t Le(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::uint32_t Crc32c(const void* data, std::size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  return crc.checksum();
}

std::uint32_t MaskCrc(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::StatusOr<std::vector<std::string>> TensorBoardWriter::ReadRecords(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t at = 0;
  while (at < data.size()) {
    if (data.size() - at < 12) break;  // a header cut short by a kill
    const std::uint64_t length = Le(p + at, 8);
    if (static_cast<std::uint32_t>(Le(p + at + 8, 4)) != MaskCrc(Crc32c(p + at, 8))) {
      return absl::DataLossError(absl::StrCat(path, ": record ", out.size(), " at byte ", at, ": length CRC mismatch"));
    }
    if (data.size() - at - 12 < length + 4) break;  // a record cut short by a kill
    const std::uint32_t crc = static_cast<std::uint32_t>(Le(p + at + 12 + length, 4));
    if (crc != MaskCrc(Crc32c(p + at + 12, length))) {
      return absl::DataLossError(absl::StrCat(path, ": record ", out.size(), " at byte ", at, ": data CRC mismatch"));
    }
    out.emplace_back(data.data() + at + 12, length);
    at += 12 + length + 4;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& dir, std::int64_t resume_step) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create logging_dir '", dir, "': ", ec.message()));
  std::string path, kept;
  if (resume_step >= 0) {
    // The newest event file continues.
    fs::file_time_type newest;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (!absl::StartsWith(name, "events.out.tfevents.")) continue;
      if (path.empty() || entry.last_write_time() > newest) {
        path = entry.path().string();
        newest = entry.last_write_time();
      }
    }
    if (!path.empty()) {
      POSTTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> records, ReadRecords(path));
      for (const std::string& record : records) {
        tb::Event event;
        if (!event.ParseFromString(record)) return absl::DataLossError(absl::StrCat(path, ": a record is not an Event"));
        if (event.has_summary() && event.step() > resume_step) continue;
        kept += Frame(record);
      }
      POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic(path, kept));
    }
  }
  const bool fresh = path.empty();
  if (fresh) {
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    path = (fs::path(dir) / absl::StrCat("events.out.tfevents.", static_cast<std::int64_t>(WallTime()), ".", host)).string();
  }
  std::FILE* file = std::fopen(path.c_str(), fresh ? "wb" : "ab");
  if (file == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "': ", std::strerror(errno)));
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(path, file));
  if (fresh) {
    tb::Event version;
    version.set_wall_time(WallTime());
    version.set_file_version("brain.Event:2");
    POSTTRAIN_RETURN_IF_ERROR(writer->WriteRecord(version.SerializeAsString()));
  }
  return writer;
}

absl::Status TensorBoardWriter::WriteRecord(const std::string& bytes) {
  const std::string framed = Frame(bytes);
  if (std::fwrite(framed.data(), 1, framed.size(), file_) != framed.size() || std::fflush(file_) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("writing '", path_, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status TensorBoardWriter::AddScalars(std::int64_t step, const std::map<std::string, double>& scalars) {
  tb::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  for (const auto& [tag, value] : scalars) {
    tb::Summary::Value* v = event.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

absl::Status TensorBoardWriter::AddText(std::int64_t step, const std::string& tag, const std::string& text) {
  tb::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  tb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  tb::TensorProto* t = v->mutable_tensor();
  t->set_dtype(kDtString);
  t->mutable_tensor_shape();  // a scalar string
  t->add_string_val(text);
  return WriteRecord(event.SerializeAsString());
}

}  // namespace posttrain
