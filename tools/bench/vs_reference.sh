#!/usr/bin/env bash
# posttrain's train_bench against ../shared/bench/ref_torch.py (TRL's way of computing
# each step, plain PyTorch eager on the same libtorch kernels), side by side on the
# same shapes: stories15M (dim 288, 6 layers, tied), batch 8, prompts 16-128 and
# completions 16-256 tokens, at vocab 32000 and at Qwen3's 151,936.
#
#   tools/bench/vs_reference.sh [--steps 3] [--vocabs "32000 151936"] [--workloads "sft dpo grpo grpo_260K"]
#                               [--bf16 auto|0|1|both] [--reference PATH]
#
# Each configuration runs posttrain then the reference, back to back (interleaved),
# so that both see the same machine load. The reference runs in the allocator
# setting posttrain ships (jemalloc keeping freed pages: cmake/allocator_config.cc)
# through LD_PRELOAD, so that the ratio measures the design, not the allocator.
# Ratios > 1 mean posttrain is faster (tokens/s) or < 1 leaner (peak RSS).
# grpo is ref_torch.py's GRPO step (2 prompts x 8 samples x 64 new tokens, reward =
# sampled tokens that are 0 mod 7, one policy-gradient step), generation included;
# its step-time ratio is the inverse of the speed ratio. It runs at vocab 32000 only.
# grpo_260K is the same step on the quickstart's model shape (stories260K: dim 64,
# 5 layers, 8 heads over 4 KV heads, hidden 172, vocab 512).
#
# bf16: "auto" runs the bf16 rows only where `posttrain env` finds native bf16
# matmuls (avx512_bf16 or AMX); without them oneDNN emulates bf16 and both sides
# run at a few tokens/s, which measures the emulation, not the frameworks.
set -euo pipefail

here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${POSTTRAIN_BUILD:-$here/build}/bin"
reference="$here/../shared/bench/ref_torch.py"
steps=3
vocabs="32000 151936"
workloads="sft dpo grpo grpo_260K"
bf16=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --vocabs) vocabs="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --bf16) bf16="$2"; shift 2 ;;
    --reference) reference="$2"; shift 2 ;;
    *) echo "vs_reference.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/train_bench" ]] || { echo "vs_reference.sh: build first ($bin/train_bench missing)" >&2; exit 2; }
[[ -f "$reference" ]] || { echo "vs_reference.sh: reference '$reference' not found (it lives in ../shared/bench)" >&2; exit 2; }

jemalloc="$(ldconfig -p | awk '/libjemalloc\.so\.2 / && !found {print $NF; found = 1}')"
[[ -n "$jemalloc" ]] || { echo "vs_reference.sh: libjemalloc.so.2 not found (apt-get install libjemalloc2)" >&2; exit 2; }
malloc_conf="dirty_decay_ms:-1,muzzy_decay_ms:-1"  # what cmake/allocator_config.cc sets

cpu="$("$bin/posttrain" env | sed -n 's/^cpu: //p')"
case "$bf16" in
  auto) if grep -q "native" <<<"$cpu"; then dtypes="0 1"; else dtypes="0"; fi ;;
  both) dtypes="0 1" ;;
  0|1) dtypes="$bf16" ;;
  *) echo "vs_reference.sh: --bf16 must be auto, 0, 1 or both" >&2; exit 2 ;;
esac

echo "cpu: $cpu"
echo "shape: stories15M (dim 288, 6 layers, tied), batch 8, prompts 16-128, completions 16-256; $steps timed steps after one warm-up"
[[ "$dtypes" == "0" && "$bf16" == "auto" ]] && echo "bf16 rows skipped: no native bf16 matmul on this CPU (--bf16 both runs them anyway)"
printf '%-9s %-5s %-7s | %10s %10s %7s | %10s %10s %7s\n' workload dtype vocab "posttrain" "reference" "speed" "RSS MiB" "ref MiB" "memory"
printf '%-9s %-5s %-7s | %10s %10s %7s | %10s %10s %7s\n' "" "" "" "tokens/s" "tokens/s" "ratio" "" "" "ratio"
for vocab in $vocabs; do
  for workload in $workloads; do
    [[ "$workload" == grpo* && "$vocab" != 32000 ]] && continue
    for b in $dtypes; do
      if [[ "$workload" == grpo_260K ]]; then
        line="$("$bin/train_bench" --mode grpo --shape stories260K --steps "$steps" --bf16 "$b")"
      else
        line="$("$bin/train_bench" --mode "$workload" --steps "$steps" --batch 8 --bf16 "$b" --vocab "$vocab")"
      fi
      ours_tps="$(sed -n 's/.*: *\([0-9.]*\) tokens\/s.*/\1/p' <<<"$line")"
      ours_rss="$(sed -n 's/.*peak RSS *\([0-9.]*\) MiB.*/\1/p' <<<"$line")"
      if [[ "$workload" == grpo_260K ]]; then
        ref_flags=(--workload grpo --tie --steps "$steps" --dim 64 --layers 5 --heads 8 --kv-heads 4 --hidden 172 --vocab 512)
      elif [[ "$workload" == grpo ]]; then
        ref_flags=(--workload grpo --tie --steps "$steps" --vocab "$vocab")
      else
        ref_flags=(--workload "$workload" --tie --batch 8 --prompt-len 16,128 --completion-len 16,256 --steps "$steps" --vocab "$vocab")
      fi
      [[ "$b" == 1 ]] && ref_flags+=(--bf16)
      suffix=""
      if ! json="$(LD_PRELOAD="$jemalloc" MALLOC_CONF="$malloc_conf" /usr/bin/python3 "$reference" "${ref_flags[@]}")"; then
        # Keeping every freed page, the reference can outgrow the machine (DPO at
        # 151,936: killed at 24 GB here); it then runs in its own setting (glibc).
        suffix="  (reference killed under jemalloc keeping pages: rerun with glibc malloc)"
        if ! json="$(/usr/bin/python3 "$reference" "${ref_flags[@]}")"; then
          printf '%-9s %-5s %-7s | %10.0f %10s %7s | reference failed\n' "$workload" "$([[ $b == 1 ]] && echo bf16 || echo fp32)" "$vocab" "$ours_tps" "-" "-"
          continue
        fi
      fi
      read -r ref_tps ref_rss < <(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["tokens_per_s"], d["peak_rss_mb"])' "$json")
      shown_vocab="$vocab"
      [[ "$workload" == grpo_260K ]] && shown_vocab=512
      awk -v w="$workload" -v d="$([[ $b == 1 ]] && echo bf16 || echo fp32)" -v v="$shown_vocab" -v ot="$ours_tps" -v rt="$ref_tps" \
          -v om="$ours_rss" -v rm="$ref_rss" \
          -v s="$suffix" 'BEGIN { printf "%-9s %-5s %-7s | %10.0f %10.0f %6.2fx | %10.0f %10.0f %6.2fx%s\n", w, d, v, ot, rt, ot / rt, om, rm, om / rm, s }'
    done
  done
done
