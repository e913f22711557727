#!/usr/bin/env python3
"""Crash at any moment: SIGKILLs a training run at random moments, resumes it from
`latest` each time, and checks that the final weights (and the logs) are bit for bit
those of the same run uninterrupted.

    tools/crash_test.py --family sft --kills 20
    tools/crash_test.py --family grpo --kills 20 --seed 7

Kills land at chosen moments in turn: a random time, while a checkpoint is being
written (a checkpoint-<n>.tmp directory exists), while final/ is being written,
during an evaluation, during generation (online trainers), during a training step.
The phase each kill hit is read from the run's own debug log ("phase: ..." lines,
`--log-level debug`). A round ends when a resumed run finishes: its final/ and
metrics.jsonl are compared with the uninterrupted run's; rounds repeat (each in a
fresh directory, from scratch) until the kills are spent.

Exit status 0 when every round matched. Uses nothing but the standard library.
"""
import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One small, quick run per trainer family, with frequent checkpoints (and evaluations
# where the family has evaluation data) so that kills meet every phase.
FAMILIES = {
    "sft": ("recipes/sft/stories260K_gsm8k.toml",
            "trainer.max_steps=16 trainer.per_device_train_batch_size=4 trainer.gradient_accumulation_steps=2 "
            "trainer.max_length=128 trainer.max_prompt_length=64 trainer.save_steps=2 trainer.logging_steps=2 "
            "trainer.eval_steps=4 data.max_examples=64 eval_data.max_examples=8 trainer.eval_on_start=false"),
    "dpo": ("recipes/dpo/stories260K_hh_harmless.toml",
            "trainer.max_steps=16 trainer.per_device_train_batch_size=4 trainer.max_length=96 "
            "trainer.max_prompt_length=64 trainer.save_steps=2 trainer.logging_steps=2 trainer.eval_steps=4 "
            "trainer.eval_on_start=false trainer.precompute_ref_log_probs=false data.max_examples=64 "
            "eval_data.max_examples=4"),
    # num_iterations = 2 with save_steps = 3: checkpoints also fall within a generation's reuse.
    "grpo": ("recipes/grpo/stories260K_keyword.toml",
             "trainer.max_steps=16 trainer.per_device_train_batch_size=2 trainer.num_generations=4 "
             "sampler.max_completion_length=16 trainer.max_completion_length=16 trainer.num_iterations=2 "
             "trainer.save_steps=3 trainer.logging_steps=2"),
    "ppo": ("recipes/ppo/stories260K_keyword.toml",
            "trainer.max_steps=16 trainer.per_device_train_batch_size=4 sampler.max_completion_length=16 "
            "trainer.save_steps=2 trainer.logging_steps=2"),
}

MODES = ["random", "checkpoint", "step", "random", "evaluation", "generation", "final"]
# The run's debug line ("phase: ...") that each phase mode waits for.
PHASE_LINES = {"step": "training step", "evaluation": "evaluation", "generation": "generation"}


def command(args, out_dir, resume):
    recipe, overrides = FAMILIES[args.family]
    cmd = [args.posttrain, "--log-level", "debug", "run", recipe, f"output_dir={out_dir}",
           f"model.path={args.model}", "overwrite_output_dir=true"] + overrides.split()
    if resume:
        cmd.append("trainer.resume_from_checkpoint=latest")
    return cmd


def checkpoints(out_dir):
    return [d for d in listdir(out_dir) if re.fullmatch(r"checkpoint-\d+", d)]


def partial_checkpoints(out_dir, since=0.0):
    """checkpoint-N.tmp directories (being written, or left by a kill) touched at or after `since`."""
    found = []
    for d in listdir(out_dir):
        try:
            if d.endswith(".tmp") and os.path.getmtime(os.path.join(out_dir, d)) >= since:
                found.append(d)
        except FileNotFoundError:
            pass  # renamed into place meanwhile
    return found


def phases(log_path):
    try:
        with open(log_path, errors="replace") as f:
            return re.findall(r"phase: (.*)", f.read())
    except FileNotFoundError:
        return []


def run_to_end(args, out_dir, log_path):
    with open(log_path, "w") as log:
        rc = subprocess.call(command(args, out_dir, bool(checkpoints(out_dir))), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT)
    return rc


def same_as_reference(ref_dir, out_dir):
    problems = []
    for name in ("final/model.safetensors", "final/adapter_model.safetensors", "metrics.jsonl", "completions.jsonl"):
        a, b = os.path.join(ref_dir, name), os.path.join(out_dir, name)
        if not os.path.exists(a):
            continue
        if not os.path.exists(b):
            problems.append(f"{name} is missing")
            continue
        with open(a, "rb") as fa, open(b, "rb") as fb:
            if fa.read() != fb.read():
                problems.append(f"{name} differs")
    return problems


def wait_for(proc, condition, timeout):
    """Polls (every 0.5 ms) until condition() holds or the process ends; True if it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(FAMILIES), required=True)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--posttrain", default=os.path.join(ROOT, "build/bin/posttrain"))
    p.add_argument("--model", default=None,
                   help="model directory (default: stories260K converted from recipes/data into the scratch directory)")
    p.add_argument("--work", default=None, help="scratch directory (default: a new one under /tmp)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = args.work or f"/tmp/posttrain_crash_{args.family}_{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    if args.model is None:
        args.model = os.path.join(work, "stories260K")
        subprocess.run([args.posttrain, "convert", "llama2c", "--checkpoint", "recipes/data/stories260K.bin",
                        "--tokenizer", "recipes/data/tok512.model", "--out", args.model], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

    ref = os.path.join(work, "reference")
    start = time.monotonic()
    if run_to_end(args, ref, ref + ".log") != 0:
        print(open(ref + ".log").read()[-3000:])
        sys.exit(f"crash_test: the uninterrupted {args.family} run failed (log: {ref}.log)")
    duration = time.monotonic() - start
    print(f"{args.family}: uninterrupted run {duration:.1f} s")

    # Moments this family has (no evaluation data, no generation: those modes go).
    ref_phase_list = phases(ref + ".log")
    ref_phases = " ".join(ref_phase_list)
    modes = [m for m in MODES if m not in ("evaluation", "generation") or PHASE_LINES[m] in ref_phases]

    kills, rounds, starts = 0, 0, 0
    hit = collections.Counter()
    failed = []
    while kills < args.kills:
        rounds += 1
        if rounds > args.kills + 10:
            sys.exit(f"crash_test: {rounds - 1} rounds ended before {args.kills} kills could land (a run too quick to kill?)")
        out = os.path.join(work, f"round-{rounds}")
        finished = False
        while kills < args.kills and not finished:
            mode = modes[kills % len(modes)]
            log_path = os.path.join(work, f"round-{rounds}-start-{starts}.log")
            starts += 1
            started = time.time()
            with open(log_path, "w") as log:
                proc = subprocess.Popen(command(args, out, bool(checkpoints(out))), cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            if mode == "random":
                # After a random number of the run's phases (its speed varies with the
                # machine's load), a random few milliseconds in; or during start-up.
                k = rng.randint(0, max(1, len(ref_phase_list) // 2))
                if k == 0:
                    wait_for(proc, lambda: False, rng.uniform(0, 0.5))
                elif wait_for(proc, lambda: len(phases(log_path)) >= k, 120):
                    time.sleep(rng.uniform(0, 0.05))
            elif mode == "checkpoint":
                wait_for(proc, lambda: partial_checkpoints(out), 120)
            elif mode == "final":
                wait_for(proc, lambda: os.path.isdir(os.path.join(out, "final")), 120)
            else:
                wanted = PHASE_LINES[mode]
                skip = 0 if mode == "evaluation" else rng.randint(0, 3)  # the first such phase after a random number of them
                if wait_for(proc, lambda: sum(ph.startswith(wanted) for ph in phases(log_path)) > skip, 120):
                    time.sleep(rng.uniform(0, 0.01))
            if proc.poll() is None:
                # A checkpoint being written by this start (not one a kill left behind before).
                pending = bool(partial_checkpoints(out, since=started))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                seen = phases(log_path)
                where = re.sub(r"\d+", "N", seen[-1]) if seen else "start-up"
                hit[where + (" (a checkpoint-N.tmp present)" if pending else "")] += 1
                kills += 1
                continue
            # It ended before the kill could land (that moment never came): the run is complete.
            if proc.returncode != 0:
                print(open(log_path).read()[-3000:])
                sys.exit(f"crash_test: a resumed run failed (rc {proc.returncode}, log {log_path})")
            finished = True
        if not finished:
            log_path = os.path.join(work, f"round-{rounds}-finish.log")
            rc = run_to_end(args, out, log_path)
            if rc != 0:
                print(open(log_path).read()[-3000:])
                sys.exit(f"crash_test: the final resume failed (rc {rc}, log {log_path})")
        problems = same_as_reference(ref, out)
        print(f"round {rounds}: {'bit-identical' if not problems else '; '.join(problems)} ({kills} kills so far)")
        if problems:
            failed.append(rounds)
    print(f"{args.family}: {kills} kills over {rounds} rounds and {starts} starts, {time.monotonic() - start:.0f} s; "
          f"where the kills landed:")
    for where, n in sorted(hit.items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d}  {where}")
    if failed:
        sys.exit(f"crash_test: rounds {failed} ended with weights or logs that differ from the uninterrupted run")
    print(f"{args.family}: every round's final weights and logs equal the uninterrupted run's")


def listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    main()
