// The test binaries' main: GoogleTest's, with a stack trace on a crash
// (posttrain/core/crash_report.h).
#include "gtest/gtest.h"
#include "posttrain/core/crash_report.h"

int main(int argc, char** argv) {
  posttrain::InstallCrashReport(argv[0]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
