#!/bin/bash
# Builds the libFuzzer targets (tests/fuzz: one per parser of outside input) with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer, and runs them.
#
#   tools/fuzz.sh                 # every target, 600 s each
#   tools/fuzz.sh chat_template 60
#
# Seeds come from the repository (models, tokenizers, recipes, data, templates) and
# ../shared when present; corpora grow under build-fuzz/corpus/<target>. A crash
# leaves its input as build-fuzz/crash-<target>-*: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
seconds="${2:-600}"
build=build-fuzz
targets=(safetensors shard_index model_config tokenizer_json spm_model chat_template recipe jsonl llama2c adapter_config)
[[ "$which" != all ]] && targets=("$which")

if [[ ! -d build/models/stories260K ]]; then bash tools/setup.sh build > /dev/null; fi
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTTRAIN_FUZZ=ON -DPOSTTRAIN_SANITIZE=address,undefined \
  -DPOSTTRAIN_BUILD_TESTS=OFF -DPOSTTRAIN_BUILD_BENCH=OFF > "$build/cmake.log" || { cat "$build/cmake.log"; exit 1; }
ninja -C "$build" $(printf 'fuzz_%s ' "${targets[@]}") posttrain_data_jsonl posttrain_trainer_sft posttrain_trainer_grpo \
  posttrain_reward_keyword posttrain_sampler_default posttrain_adapter_lora posttrain_spm > "$build/build.log" || { tail -30 "$build/build.log"; exit 1; }

seed() {  # seed TARGET FILES...: copy the existing files into its corpus
  local dir="$build/corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do [[ -f "$f" ]] && cp "$f" "$dir/seed_$(echo "$f" | tr '/.' '__')"; done
  return 0
}
model=build/models/stories260K
python3 - "$build/corpus/safetensors" <<'PY'
import os, struct, json, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
for i, (dtype, shape) in enumerate([("F32", [2, 3]), ("BF16", [4]), ("I64", [1, 1, 2]), ("F16", [])]):
    size = {"F32": 4, "BF16": 2, "I64": 8, "F16": 2}[dtype]
    n = 1
    for s in shape: n *= s
    header = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": dtype, "shape": shape, "data_offsets": [0, n * size]}}).encode()
    open(f"{d}/seed_{i}", "wb").write(struct.pack("<Q", len(header)) + header + bytes(range(n * size)))
PY
seed model_config "$model/config.json" recipes/gkd/student_config.json ../shared/data/qwen3_tokenizer/config.json tests/fuzz/seeds/config_*.json
seed tokenizer_json "$model/tokenizer.json" tests/fuzz/seeds/tokenizer_*.json
seed spm_model recipes/data/tok512.model $(find ../shared/data -name '*.model' 2>/dev/null | head -5)
mkdir -p "$build/corpus/shard_index"
cat > "$build/corpus/shard_index/seed_index" <<'JSON'
{"metadata": {"total_size": 72}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
 "model.norm.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}
JSON
mkdir -p "$build/corpus/adapter_config"
cat > "$build/corpus/adapter_config/seed_lora" <<'JSON'
{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "use_rslora": false,
 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "bias": "none",
 "modules_to_save": null, "base_model_name_or_path": "build/models/stories260K"}
JSON
cat > "$build/corpus/adapter_config/seed_regex" <<'JSON'
{"peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_rslora": true, "target_modules": ".*\\.(q|v)_proj",
 "modules_to_save": ["embed_tokens"]}
JSON
seed chat_template recipes/templates/*.jinja $(find ../shared/fixtures -name '*.jinja' 2>/dev/null | head -20)
seed recipe $(find recipes -name '*.toml') tests/fuzz/regressions/recipe_*
mkdir -p "$build/corpus/jsonl"
for f in recipes/data/*.jsonl; do head -3 "$f" > "$build/corpus/jsonl/seed_$(basename "$f")"; done
cp tests/fuzz/regressions/jsonl_* "$build/corpus/jsonl/" 2>/dev/null || true
cp tests/fuzz/regressions/adapter_config_* "$build/corpus/adapter_config/" 2>/dev/null || true
head -c 4096 recipes/data/stories260K.bin > "$build/corpus/jsonl/../llama2c_seed" 2>/dev/null || true
mkdir -p "$build/corpus/llama2c"
python3 - "$build/corpus/llama2c" <<'PY'
import struct, sys
d = sys.argv[1]
for i, (dim, hidden, layers, heads, kv, vocab, seq) in enumerate([(8, 16, 1, 2, 2, 16, 8), (8, 16, 1, 2, 1, -16, 8)]):
    hd = dim // heads
    n = vocab if vocab > 0 else -vocab
    floats = n * dim + layers * (dim + dim * dim + 2 * dim * kv * hd + dim * dim + dim + 3 * dim * hidden) + dim + seq * hd
    if vocab < 0: floats += n * dim
    open(f"{d}/seed_{i}", "wb").write(struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) + b"\0" * (4 * floats))
PY

# As tools/sanitize.sh: libraries outside posttrain (libtorch, libsentencepiece) pair
# their own allocation functions.
export ASAN_OPTIONS="alloc_dealloc_mismatch=0:detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
failed=()
for t in "${targets[@]}"; do
  dict=tests/fuzz/dict/$t.dict
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
        -artifact_prefix="$build/crash-$t-")
  [[ -f "$dict" ]] && args+=(-dict="$dict")
  echo "== fuzz_$t ($seconds s)"
  # Inputs that once crashed a target are run first (tests/fuzz/regressions).
  rc=0
  "$build/bin/fuzz_$t" "${args[@]}" "$build/corpus/$t" > "$build/fuzz_$t.log" 2>&1 || rc=$?
  grep -E "^#[0-9]+.*DONE|stat::|ERROR|SUMMARY|Test unit written" "$build/fuzz_$t.log" | tail -8
  if (( rc != 0 )); then failed+=("$t"); fi
done
if (( ${#failed[@]} > 0 )); then
  echo "crashes in: ${failed[*]} (inputs: $build/crash-*; logs: $build/fuzz_<target>.log)"
  exit 1
fi
echo "no crash, leak or timeout in: ${targets[*]}"
