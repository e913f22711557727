#include "test_support.h"

#include "posttrain/model/safetensors.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace posttrain::testing {

std::string TempDir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string test = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name()
                                     : std::string("global");
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "posttrain_tests" /
                              test / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

PluginHost& BuiltinHost() {
  static PluginHost* host = [] {
    auto* h = new PluginHost();
    absl::Status status = h->LoadDirectory(BuiltinPluginDir());
    if (!status.ok()) {
      ADD_FAILURE() << status;
    }
    return h;
  }();
  return *host;
}

const std::string& Stories260KDir() {
  // ctest runs every test in its own process, several at once: each converts into
  // a private directory and renames it into place; the first rename wins, and a
  // directory that exists is complete.
  static const std::string* dir = [] {
    const std::filesystem::path root = std::filesystem::path(::testing::TempDir()) / "posttrain_tests";
    const std::string out = (root / "stories260K_v2").string();
    if (std::filesystem::exists(out + "/tokenizer.model")) return new std::string(out);
    const std::string mine = (root / ("stories260K_v2.tmp." + std::to_string(::getpid()))).string();
    std::string log;
    const int rc = RunCommand(CliPath() + " convert llama2c --checkpoint " + RepoDataPath("stories260K.bin") +
                                  " --tokenizer " + RepoDataPath("tok512.model") + " --out " + mine,
                              &log);
    if (rc != 0) ADD_FAILURE() << "converting stories260K failed: " << log;
    std::error_code ec;
    std::filesystem::rename(mine, out, ec);
    if (ec) std::filesystem::remove_all(mine, ec);  // another process was first
    return new std::string(out);
  }();
  return *dir;
}

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  output->clear();
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
  int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::map<std::string, at::Tensor> LoadTensors(const std::string& file) {
  std::map<std::string, at::Tensor> out;
  auto st = SafetensorsFile::Open(file);
  EXPECT_TRUE(st.ok()) << st.status();
  if (!st.ok()) return out;
  for (const auto& e : st->entries()) out[e.name] = *st->Get(e.name);
  return out;
}

// A port below the kernel's ephemeral range (32768-60999 on Linux), free when asked:
// a port the kernel handed out ephemerally and released can be handed out again at
// once, and was — to a Gloo connection of a test running beside this one ("Address
// already in use" at the rendezvous). Candidates start from the process id, so tests
// running together try different ports.
int FreePort() {
  static int attempt = 0;
  for (int tries = 0; tries < 2000; ++tries) {
    const int port = 20000 + static_cast<int>((static_cast<unsigned>(getpid()) * 7919u + 97u * attempt++) % 12000u);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  ADD_FAILURE() << "no free port in [20000, 32000)";
  return 0;
}

}  // namespace posttrain::testing
