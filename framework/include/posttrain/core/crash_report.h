// A crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) prints the signal and a
// symbolized stack trace to stderr before the process dies of it, so that a crash
// on a machine without a debugger (a borrowed GPU node, a user's cluster) says where
// it happened. Unwound by libgcc (backtrace), named by Abseil's symbolizer; other
// signals keep their actions. Sanitized builds leave crashes to the sanitizers.
//
//   int main(int argc, char** argv) { posttrain::InstallCrashReport(argv[0]); ... }
#pragma once

namespace posttrain {

void InstallCrashReport(const char* argv0);

}  // namespace posttrain
