#!/usr/bin/env python3
"""Sums a Chrome trace of libtorch operators (train_bench --profile) by operator name.

    tools/bench/trace_top.py trace.json [--top 30]

Self time is an event's duration less the events nested in it on the same thread
(nesting read from the timestamps), so the self column adds up to the traced time.
"""
import argparse
import collections
import json


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with open(args.trace) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            by_thread[e.get("tid")].append(e)
    total = collections.Counter()
    self_time = collections.Counter()
    calls = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [end, name, child time]
        def close(item):
            self_time[item[1]] += item[3] - item[2]
        for e in evs:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            if stack:
                stack[-1][2] += dur
            stack.append([start + dur, e["name"], 0.0, dur])
            total[e["name"]] += dur
            calls[e["name"]] += 1
        while stack:
            close(stack.pop())
    traced = sum(self_time.values())
    print(f"{'self ms':>10} {'self %':>7} {'total ms':>10} {'calls':>8}  operator")
    for name, t in self_time.most_common(args.top):
        print(f"{t / 1e3:10.1f} {100 * t / traced:6.1f}% {total[name] / 1e3:10.1f} {calls[name]:8d}  {name}")
    print(f"{traced / 1e3:10.1f}   traced (self times summed)")


if __name__ == "__main__":
    main()
