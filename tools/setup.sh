#!/usr/bin/env bash
# posttrain set-up on Debian 12: install missing packages, configure, build, then
#   tools/setup.sh quickstart   run recipes/quickstart.toml
#   tools/setup.sh test         run the whole test suite (ctest)
#   tools/setup.sh build        only build
# Run from anywhere; as root (or with sudo available) when packages are missing.
# Environment: BUILD_DIR (default build), JOBS (default: number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}

# --- packages -----------------------------------------------------------------
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' third_party/debian-packages.txt | awk '{print $1}')
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- build --------------------------------------------------------------------
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
start=$(date +%s)
cmake --build "$build_dir" -j "$jobs"
echo "setup: build took $(( $(date +%s) - start )) s"

# The real model the recipes use, shipped in recipes/data: stories260K as a
# Hugging Face directory.
model_dir=$build_dir/models/stories260K
if [ ! -f "$model_dir/model.safetensors" ]; then
  "$build_dir/bin/posttrain" convert llama2c --checkpoint recipes/data/stories260K.bin \
    --tokenizer recipes/data/tok512.model --out "$model_dir"
fi

# The GKD recipe's student: a smaller model of stories260K's vocabulary, random
# weights (recipes/gkd/student_config.json, posttrain init).
student_dir=$build_dir/models/stories260K_student
if [ ! -f "$student_dir/model.safetensors" ]; then
  "$build_dir/bin/posttrain" init --config recipes/gkd/student_config.json --tokenizer "$model_dir" \
    --out "$student_dir" --seed 0 > /dev/null
fi

case "$mode" in
  build) ;;
  quickstart)
    "$build_dir/bin/posttrain" run recipes/quickstart.toml ;;
  test)
    ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" ;;
  *)
    echo "usage: tools/setup.sh [build|quickstart|test]" >&2; exit 2 ;;
esac
