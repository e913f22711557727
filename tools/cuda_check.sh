#!/usr/bin/env bash
# Builds posttrain against a CUDA libtorch, runs the test suite with the GPU
# visible, and runs recipes on the GPU and on the CPU side by side.
#
#   tools/cuda_check.sh [seconds for the suite]       (default 240)
#
# Environment:
#   BUILD_DIR    build tree (default build-cuda)
#   TORCH_CMAKE  Torch's CMake prefix (default: python3's torch, torch.utils.cmake_prefix_path)
#   NCCL_ROOT    NCCL's directory (default: python3's nvidia.nccl package, if any)
#   DEPS_ROOT    a root holding the other libraries (e.g. Debian packages unpacked with
#                `dpkg -x`), searched before the system's; its protoc and pkg-config are used
#   EXTRA_CXX_FLAGS  added to CMAKE_CXX_FLAGS
#   LOG_DIR      where the logs go (default $BUILD_DIR/logs)
#   SKIP_RECIPES set to 1 to run the suite only
#
# Every step logs to LOG_DIR and the script goes on after a failure, so that one run
# on a borrowed GPU machine reports everything at once; the exit status is that of
# the first failed step.
set -uo pipefail
cd "$(dirname "$0")/.."
suite_seconds=${1:-240}
build=${BUILD_DIR:-build-cuda}
logs=${LOG_DIR:-$build/logs}
mkdir -p "$build" "$logs"
status=0
step() {  # step <name> <command...>: runs, logs to $logs/<name>.log, prints the tail on failure
  local name=$1; shift
  local start=$(date +%s)
  "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc, $(( $(date +%s) - start )) s"
  if (( rc != 0 )); then
    tail -n 40 "$logs/$name.log"
    (( status == 0 )) && status=$rc
  fi
  return $rc
}

# --- what the machine has ------------------------------------------------------
{
  nvidia-smi -L 2>&1
  g++ --version 2>&1 | head -1
  cmake --version 2>&1 | head -1
  python3 -c 'import torch, os; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count()); print("torch/include:", sorted(os.listdir(os.path.join(os.path.dirname(torch.__file__), "include"))))' 2>&1
} | tee "$logs/machine.log"

torch_cmake=${TORCH_CMAKE:-$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')}
torch_version=$(python3 -c 'import torch; print(".".join(torch.__version__.split("+")[0].split(".")[:2]))' 2>/dev/null || echo 0.0)
# libtorch 2.12 and later ask for C++20 in their headers.
std=17
if [[ "$(printf '%s\n2.12\n' "$torch_version" | sort -V | head -1)" == "2.12" ]]; then std=20; fi
nccl_root=${NCCL_ROOT:-$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)}

prefix="$torch_cmake"
if [[ -n "${DEPS_ROOT:-}" ]]; then
  deps=$(realpath "$DEPS_ROOT")
  libdir=$deps/usr/lib/x86_64-linux-gnu
  # Packages' absolute symlinks (libz.so -> /lib/...) point into the root instead.
  while IFS= read -r link; do
    target=$(readlink "$link")
    if [[ $target == /* && ! -e $target && -e $deps$target ]]; then ln -sfn "$deps$target" "$link"; fi
  done < <(find "$deps" -type l)
  prefix="$deps/usr;$libdir/cmake;$torch_cmake"
  # protoc and pkg-config from the root, with its libraries.
  mkdir -p "$build/wrappers"
  for tool in protoc pkgconf; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$libdir" "$deps/usr/bin/$tool" > "$build/wrappers/$tool"
    chmod +x "$build/wrappers/$tool"
  done
  # Libraries libtorch bundles headers of (fmt, protobuf) come from the root first, to
  # match its libraries and its protoc: their directories go ahead of libtorch's.
  torch_include=$(realpath "$torch_cmake/../../include")
  first=$PWD/$build/deps_first
  rm -rf "$first" && mkdir -p "$first"
  for dir in "$deps/usr/include"/*; do
    if [[ -e "$torch_include/$(basename "$dir")" ]]; then ln -s "$dir" "$first/"; fi
  done
  echo "cuda_check: taken from DEPS_ROOT ahead of libtorch's copies: $(ls "$first" | tr '\n' ' ')"
  EXTRA_CXX_FLAGS="-I$first ${EXTRA_CXX_FLAGS:-}"
  export PKG_CONFIG="$PWD/$build/wrappers/pkgconf"
  export PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$deps/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$deps"
  protoc_arg=(-DProtobuf_PROTOC_EXECUTABLE="$PWD/$build/wrappers/protoc" -DPKG_CONFIG_EXECUTABLE="$PKG_CONFIG")
else
  protoc_arg=()
fi

cuda_arg=()
if command -v nvcc > /dev/null; then
  cuda_arg=(-DCUDAToolkit_ROOT="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")")
fi
# CMAKE_POLICY_VERSION_MINIMUM: CMake 4 refuses packages' config files written for CMake < 3.5.
step configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=$std \
  -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "${cuda_arg[@]}" \
  -DCMAKE_PREFIX_PATH="$prefix" -DNCCL_ROOT="$nccl_root" -DPOSTTRAIN_WITH_PLOT=OFF -DPOSTTRAIN_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="${EXTRA_CXX_FLAGS:-}" "${protoc_arg[@]}" || { echo "cuda_check: configure failed"; exit 1; }
grep -E "posttrain:|CUDA|NCCL|cuDNN" "$logs/configure.log" | head -20
step build ninja -C "$build" -k 0
grep -E "error:|Error " "$logs/build.log" | head -60

# The programs find the root's libraries' own dependencies (absl's, protobuf's) there.
if [[ -n "${DEPS_ROOT:-}" ]]; then export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
# The tests' independent references (torch, sentencepiece, jinja2) are python3's here.
export POSTTRAIN_TEST_PYTHON=${POSTTRAIN_TEST_PYTHON:-$(command -v python3)}

# --- models the suite and the recipes use (as tools/setup.sh makes them) --------
models=$build/models
if [[ -x "$build/bin/posttrain" ]]; then
  step models bash -c "'$build/bin/posttrain' convert llama2c --checkpoint recipes/data/stories260K.bin \
      --tokenizer recipes/data/tok512.model --out '$models/stories260K' && \
    '$build/bin/posttrain' init --config recipes/gkd/student_config.json --tokenizer '$models/stories260K' \
      --out '$models/stories260K_student' --seed 0"
  # The recipes name build/models.
  if [[ "$build" != build ]]; then mkdir -p build && ln -sfn "$PWD/$models" build/models; fi
fi

# --- recipes on the GPU and on the CPU -----------------------------------------
recipe() {  # recipe <name> <file> <overrides...>: once on cuda:0, once with use_cpu
  local name=$1 file=$2; shift 2
  for where in cuda cpu; do
    local use_cpu=false; [[ $where == cpu ]] && use_cpu=true
    step "recipe_${name}_$where" "$build/bin/posttrain" run "$file" "output_dir=\"runs/cuda_check/${name}_$where\"" \
      "trainer.use_cpu=$use_cpu" "$@"
    grep -E "device:|error" "$logs/recipe_${name}_$where.log" | head -3
    tail -n 1 "runs/cuda_check/${name}_$where/metrics.jsonl" 2>/dev/null | cut -c1-400
  done
}
if [[ -x "$build/bin/posttrain" && "${SKIP_RECIPES:-0}" != 1 ]]; then
  recipe sft recipes/sft/stories260K_tinystories_packed.toml trainer.max_steps=20
  recipe dpo recipes/dpo/stories260K_hh_harmless.toml trainer.max_steps=20
  recipe grpo recipes/quickstart.toml trainer.max_steps=4
  recipe dpo_bf16 recipes/dpo/stories260K_hh_harmless.toml trainer.max_steps=20 trainer.bf16=true
  recipe dpo_lora recipes/dpo/stories260K_hh_lora.toml trainer.max_steps=20
  recipe kto recipes/kto/stories260K_hh_harmless.toml trainer.max_steps=10
  recipe ppo recipes/ppo/stories260K_keyword.toml trainer.max_steps=3
fi

# --- the suite, with the GPU visible --------------------------------------------
step suite timeout "$suite_seconds" ctest --test-dir "$build" -j "$(nproc)" --timeout 200 --output-on-failure
grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)|Not Run|\*\*\*" "$logs/suite.log" | head -60
cp "$build/Testing/Temporary/LastTest.log" "$logs/" 2>/dev/null
echo "cuda_check: done (status $status); logs in $logs"
exit $status
