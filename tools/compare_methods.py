#!/usr/bin/env python3
"""The paper's comparison, reproduced on the ViT runner's built-in digits task.

Runs every method with 3 seeds (standard library only; no PyPI), reads each
run's report.json and writes docs/results.md: accuracy mean +- std, trainable
adapter parameters, the reduction against dense LoRA, the command, machine and
date. The demo's pretrained ViT is built once and shared by all runs.

    python3 tools/compare_methods.py [--runner build/release/examples/vit_runner/vit_runner]
                                     [--seeds 0 1 2] [--out out/compare] [--doc docs/results.md]
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, runner arguments). Partial-* rows extract ratios with SVD at tau 0.9
# unless they say otherwise; random-masking's default density matches the
# partial-lora parameter count of the same seed's extracted ratios.
METHODS = [
    ("Full fine-tuning (query, value)", ["--adapter", "full"]),
    ("LoRA r=8", ["--adapter", "lora"]),
    ("AdaLoRA r=8 -> 5", ["--adapter", "adalora"]),
    # Dense LoRA at about Partial-LoRA's budget: is the sparse ticket better than a smaller rank?
    ("LoRA r=1 (same budget)", ["--adapter", "lora", "--rank", "1", "--alpha", "2"]),
    ("Partial-LoRA, SVD, tau 0.9", ["--adapter", "partial-lora", "--ratio-extractor", "svd"]),
    ("Partial-LoRA, SNIP, tau 0.9", ["--adapter", "partial-lora", "--ratio-extractor", "snip"]),
    ("Partial-LoRA, IMP, tau 0.9", ["--adapter", "partial-lora", "--ratio-extractor", "imp"]),
    ("Partial-AdaLoRA, SVD, tau 0.9", ["--adapter", "partial-adalora"]),
    ("Targeted-LoRA (top rows/cols), SVD", ["--adapter", "partial-lora", "--mask", "targeted"]),
    ("Stochastic-targeted LoRA, SVD", ["--adapter", "partial-lora", "--mask", "stochastic"]),
    ("Uniform-ratio LoRA (mean ratio)", ["--adapter", "partial-lora", "--mask", "uniform"]),
    ("Random Masking (same params)", ["--adapter", "random-masking"]),
    ("Partial-LoRA, SVD, tau 0.8", ["--adapter", "partial-lora", "--tau", "0.8"]),
    ("Partial-LoRA, SVD, tau 0.7", ["--adapter", "partial-lora", "--tau", "0.7"]),
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", default=os.path.join(ROOT, "build/release/examples/vit_runner/vit_runner"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(ROOT, "out/compare"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs/results.md"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not os.access(args.runner, os.X_OK):
        sys.exit(f"compare_methods: runner '{args.runner}' not found; build it with bash scripts/run-default "
                 "or pass --runner")

    pretrained = os.path.join(args.out, "pretrained")
    rows = []
    started = time.time()
    for label, extra in METHODS:
        accuracies, adapters, heads, dense = [], [], [], None
        for seed in args.seeds:
            slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
            out = os.path.join(args.out, f"{slug}-seed{seed}")
            command = [args.runner, "--quiet", "--seed", str(seed), "--threads", str(args.threads),
                       "--pretrained-dir", pretrained, "--output", out] + extra
            print("$", shlex.join(command), flush=True)
            subprocess.run(command, check=True)
            with open(os.path.join(out, "report.json")) as f:
                report = json.load(f)
            accuracies.append(100.0 * report["accuracy"])
            adapters.append(report["trainable_params"]["adapters"])
            heads.append(report["trainable_params"]["head"])
            dense = report["dense_lora_params"]
        rows.append((label, extra, accuracies, adapters, heads[0], dense))

    lora_params = next(statistics.mean(r[3]) for r in rows if r[0] == "LoRA r=8")
    lora_acc = statistics.mean(next(r[2] for r in rows if r[0] == "LoRA r=8"))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Results: the paper's comparison on the built-in digits task",
        "",
        "Task: the ViT runner's built-in demo (a small ViT pretrained by plora on scikit-learn's 8x8 digits 0-4,",
        "fine-tuned on digits 5-9; 179 held-out test images). Adapters on query and value, r = 8, head trained",
        "in full, 10 epochs, AdamW lr 1e-2, seeds " + ", ".join(map(str, args.seeds)) + ".",
        "Accuracy is the test accuracy after the last epoch (mean +- sample std over seeds); parameters are the",
        "trainable adapter parameters (mean over seeds; the head adds " + str(rows[0][4]) + " for every method).",
        "",
        f"Command: `python3 tools/compare_methods.py --runner {os.path.relpath(args.runner, ROOT)}`  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s) per run  ",
        f"Date: {now}, commit {git_commit()}, total wall time {time.time() - started:.0f} s",
        "",
        "| method | accuracy % | adapter params | vs LoRA params | accuracy - LoRA |",
        "|---|---|---|---|---|",
    ]
    for label, _, accuracies, adapters, _, _ in rows:
        acc_mean, acc_std = mean_std(accuracies)
        params = statistics.mean(adapters)
        lines.append(f"| {label} | {acc_mean:.2f} +- {acc_std:.2f} | {params:,.0f} | "
                     f"{100.0 * params / lora_params:.1f}% | {acc_mean - lora_acc:+.2f} |")
    lines += ["", "Per-seed accuracies (%):", ""]
    for label, _, accuracies, _, _, _ in rows:
        lines.append(f"- {label}: " + ", ".join(f"{a:.2f}" for a in accuracies))
    lines.append("")
    # The hand-written "## Discussion" section of an earlier docs/results.md is kept.
    discussion = ""
    if os.path.exists(args.doc):
        with open(args.doc) as f:
            text = f.read()
        if "## Discussion" in text:
            discussion = text[text.index("## Discussion"):]
    with open(args.doc, "w") as f:
        f.write("\n".join(lines) + ("\n" + discussion if discussion else ""))
    print("\n".join(lines))
    print(f"\nwrote {args.doc}")


if __name__ == "__main__":
    main()
