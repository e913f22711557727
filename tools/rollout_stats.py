#!/usr/bin/env python3
"""Curves of an online run: per-step keyword/total reward and, at the first and last
logged step, the share of completions mentioning a word and their distinct
word-bigram ratio (unique bigrams / bigrams within each completion, summed over the
step's completions). Standard library only.

    python3 tools/rollout_stats.py runs/grpo_stories260K_keyword [--word dog]
"""
import argparse
import json
import re


def distinct_bigrams(rows):
    total = unique = 0
    for row in rows:
        words = re.findall(r"[A-Za-z']+", row["completion"].lower())
        bigrams = list(zip(words, words[1:]))
        total += len(bigrams)
        unique += len(set(bigrams))
    return unique / max(total, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--word", default="dog")
    args = parser.parse_args()
    metrics = [json.loads(line) for line in open(f"{args.run_dir}/metrics.jsonl")]
    metrics = [m for m in metrics if "reward" in m]
    key = "rewards/keyword/mean"
    print("step:keyword/total  " + " ".join(f"{m['step']}:{m.get(key, 0):.2f}/{m['reward']:.2f}" for m in metrics))
    rows = [json.loads(line) for line in open(f"{args.run_dir}/completions.jsonl")]
    steps = sorted({r["step"] for r in rows})
    pattern = re.compile(rf"\b{re.escape(args.word.lower())}\b")
    for step in (steps[0], steps[-1]):
        at_step = [r for r in rows if r["step"] == step]
        share = sum(1 for r in at_step if pattern.search(r["completion"].lower())) / len(at_step)
        print(f"step {step}: {len(at_step)} completions, '{args.word}' share {share:.3f}, "
              f"distinct word-bigram ratio {distinct_bigrams(at_step):.3f}")


if __name__ == "__main__":
    main()
