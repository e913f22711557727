#!/usr/bin/env python3
"""Every tensor created in framework/ and plugins/ names its options: the model's
(CausalLM::options()), an input tensor's (.options()), or HostOptions for host
staging (core/device.h) — never libtorch's implicit default device. Fails naming
each factory call (at::zeros, at::tensor, ...) whose arguments mention no options
(random draws from an explicit at::Generator are placed by the generator).
Run from the repository root."""
import pathlib
import re
import sys

FACTORY = re.compile(r"\bat::(zeros|ones|full|arange|empty|tensor|scalar_tensor|eye|linspace|rand|randn|randint|normal)\(")
bad = []
for root in ("framework", "plugins"):
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.suffix not in (".cc", ".h"):
            continue
        text = path.read_text()
        for m in FACTORY.finditer(text):
            # The call's arguments: up to the parenthesis that closes it.
            depth, i = 0, m.end() - 1
            while i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                if depth == 0:
                    break
                i += 1
            args = text[m.end():i]
            if "ptions" in args or (m.group(1) in ("normal", "rand", "randn", "randint") and "gen" in args):
                continue
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path}:{line}: at::{m.group(1)}({args.strip()[:60]}) names no device (options)")
for b in bad:
    print("explicit-device:", b)
if bad:
    sys.exit(1)
print("explicit-device: every tensor factory call in framework/ and plugins/ names its options")
