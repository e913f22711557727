// posttrain_program() puts libstdc++ first among a program's libraries, so that a
// library exporting a copy of libstdc++'s functions (PyTorch's wheels do) cannot
// take their calls. This binary links such a library (exported_libstdcxx_copy.cc)
// ahead of where the compiler driver would put libstdc++.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

extern "C" int posttrain_exported_libstdcxx_copy_linked();

namespace {

TEST(LibstdcxxFirstTest, StdFilesystemBindsToTheSystemLibrary) {
  ASSERT_EQ(posttrain_exported_libstdcxx_copy_linked(), 1);  // the copy is in the process
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("posttrain_libstdcxx_first_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "sub");
  std::ofstream(dir / "sub" / "file") << "x";
  // libstdc++'s remove_all removes the directory, its subdirectory and the file: 3.
  // The exported copy would return 4242 and leave them.
  EXPECT_EQ(std::filesystem::remove_all(dir), 3u)
      << "a library's exported copy of libstdc++ took the call: is libstdc++ still the first needed library?";
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
