#!/bin/bash
# Builds the framework, plugins, tools and tests with sanitizers and runs the suite.
#
#   tools/sanitize.sh                 # AddressSanitizer + UndefinedBehaviorSanitizer, the whole suite
#   tools/sanitize.sh thread          # ThreadSanitizer: the reward pipeline and data loading tests
#   tools/sanitize.sh address -R Jsonl   # extra arguments go to ctest
#
# A separate build tree (build-asan, build-tsan); jemalloc is left out there (the
# sanitizers bring their own allocator). Any report fails the test it happens in
# (halt_on_error, -fno-sanitize-recover). Reports come from posttrain's code: the
# libraries it links (libtorch, OpenBLAS, oneDNN) are not instrumented, and their
# process-lifetime allocations are suppressed for LeakSanitizer
# (tests/sanitize/lsan.supp).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-address}"
shift || true
case "$mode" in
  address) build=build-asan; sanitize=address,undefined; filter=(); targets=() ;;
  # TSan covers the multi-threaded CPU pipelines: only the binaries holding their tests.
  thread) build=build-tsan; sanitize=thread; targets=(framework_tests plugin_tests)
          filter=(-R "RewardPipeline|Jsonl|TextAdapter|Tokeniz|PackExamples|StepwiseTokens") ;;
  *) echo "usage: tools/sanitize.sh [address|thread] [ctest args...]" >&2; exit 2 ;;
esac
if [[ ! -d build/models/stories260K ]]; then bash tools/setup.sh build > /dev/null; fi
start=$(date +%s)
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTTRAIN_SANITIZE="$sanitize" \
  -DPOSTTRAIN_BUILD_BENCH=OFF > "$build/cmake.log" || { cat "$build/cmake.log"; exit 1; }
ninja -C "$build" "${targets[@]}"
# The tests find the models under build/models (tools/setup.sh made them).
ln -sfn "$PWD/build/models" "$build/models"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:alloc_dealloc_mismatch=0:detect_odr_violation=0"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitize/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
# The allocator test checks jemalloc, which sanitizer builds leave out.
ctest --test-dir "$build" -j2 --output-on-failure -E "AllocatorTest" "${filter[@]}" "$@"
echo "tools/sanitize.sh $mode: passed in $(( $(date +%s) - start )) s"
