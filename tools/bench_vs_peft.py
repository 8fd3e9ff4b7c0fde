#!/usr/bin/env python3
"""plora against PyTorch + transformers + PEFT on the same machine, threads,
checkpoint and batch (tools/bench_vs_peft is the entry point).

For each model shape (ViT-B/16, ViT-S/16; batch 8, 224 x 224) this script
  1. creates a randomly initialised ViTForImageClassification (10 labels) with
     transformers and saves it as safetensors: both sides load THAT directory;
  2. saves one batch (pixels in [-1, 1], labels) that both sides use;
  3. has plora's driver (benchmarks/models/side_by_side.cpp) write the
     Partial-LoRA masks (density 0.13) that both sides apply;
  4. runs every mode as separate processes, interleaved plora / PyTorch /
     plora / PyTorch ... (--rounds of each), each process doing --warmup
     untimed and --steps timed steps, and reports the median step time over
     all timed steps and the median of the processes' peak RSS.
Modes: forward (eval), lora (r 8, alpha 16, query + value, head trained,
AdamW), partial (the same LoRA with the masked rows of B / columns of A
held at zero by gradient hooks, the best a PEFT user can do today), full
(every encoder linear weight + head, AdamW).
Before any timing is compared, the first step's loss (forward: the logits) of
the two sides must agree; a mismatch is reported and fails the run.

Run as a worker (one PyTorch process) with --worker.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = ["forward", "lora", "partial", "full"]
SHAPES = {
    "vit-b16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vit-s16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
}
NUM_LABELS = 10
DOCS_BEGIN = "<!-- bench_vs_peft:begin -->"
DOCS_END = "<!-- bench_vs_peft:end -->"


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- worker side
def find_module(model, layer, kind):
    """The q / v projection of `layer` under either transformers naming."""
    names = {"query": ("attention.q_proj", "attention.attention.query"),
             "value": ("attention.v_proj", "attention.attention.value")}[kind]
    for name, module in model.named_modules():
        for suffix in names:
            if re.search(rf"layers?\.{layer}\.{re.escape(suffix)}$", name) and hasattr(module, "lora_A"):
                return module
    raise KeyError(f"no LoRA module for layer {layer} {kind}")


def worker(args):
    import torch
    from transformers import ViTForImageClassification
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    model = ViTForImageClassification.from_pretrained(args.checkpoint)
    batch = load_file(args.batch)
    pixels = batch["pixels"].reshape(-1, 3, model.config.image_size, model.config.image_size)
    labels = batch["labels"].long()
    out = {"mode": args.mode, "threads": torch.get_num_threads(), "warmup": args.warmup}

    def time_steps(step):
        seconds = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                seconds.append(time.perf_counter() - start)
        return seconds

    if args.mode == "forward":
        model.eval()
        with torch.inference_mode():
            out["first_logits"] = model(pixel_values=pixels).logits.flatten().tolist()
            out["step_seconds"] = time_steps(lambda: model(pixel_values=pixels))
    else:
        if args.mode in ("lora", "partial"):
            from peft import LoraConfig, get_peft_model
            names = [n for n, _ in model.named_modules()]
            targets = ["q_proj", "v_proj"] if any(n.endswith("q_proj") for n in names) else ["query", "value"]
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                                     modules_to_save=["classifier"]))
            if args.mode == "partial":
                masks = json.loads(Path(args.masks).read_text())
                for site in masks["sites"]:
                    layer = int(re.search(r"layer\.(\d+)\.", site["name"]).group(1))
                    module = find_module(model, layer, site["name"].rsplit(".", 1)[1])
                    row = torch.zeros(site["out"], 1)
                    row[site["rows"]] = 1.0
                    col = torch.zeros(1, site["in"])
                    col[0, site["cols"]] = 1.0
                    a, b = module.lora_A["default"].weight, module.lora_B["default"].weight  # (r, in), (out, r)
                    with torch.no_grad():
                        a.mul_(col)
                        b.mul_(row)
                    a.register_hook(lambda g, m=col: g * m)
                    b.register_hook(lambda g, m=row: g * m)
        else:  # full: every encoder linear weight and the head
            linear = re.compile(r"layers?\.\d+\..*\.(q_proj|k_proj|v_proj|o_proj|fc1|fc2|query|key|value|dense)\.weight$")
            for name, p in model.named_parameters():
                p.requires_grad_(bool(linear.search(name)) or name.startswith("classifier."))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        out["trainable"] = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        losses = []

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = model(pixel_values=pixels, labels=labels).loss
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

        out["step_seconds"] = time_steps(step)
        out["first_loss"] = losses[0]
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


# ---------------------------------------------------------- orchestrator side
def make_inputs(directory, shape, batch_size):
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from safetensors.torch import save_file

    checkpoint = directory / "checkpoint"
    if not (checkpoint / "model.safetensors").exists():
        torch.manual_seed(0)
        config = ViTConfig(**SHAPES[shape], num_labels=NUM_LABELS, image_size=224, patch_size=16)
        ViTForImageClassification(config).save_pretrained(checkpoint, safe_serialization=True)
    batch = directory / "batch.safetensors"
    if not batch.exists():
        generator = torch.Generator().manual_seed(1)
        pixels = torch.rand(batch_size, 3 * 224 * 224, generator=generator) * 2 - 1
        labels = torch.randint(0, NUM_LABELS, (batch_size,), generator=generator, dtype=torch.int64)
        save_file({"pixels": pixels.contiguous(), "labels": labels}, batch)
    return checkpoint, batch


def run_json(command, env):
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def agree(plora, peer, mode):
    """(ok, text): the first step's loss or the forward's logits of the two sides."""
    if mode == "forward":
        diff = max(abs(a - b) for a, b in zip(plora["first_logits"], peer["first_logits"]))
        # Logits ~N(0, 0.5); fp32 through 12 layers in a different GEMM order: ~1e-5 apart.
        return diff < 1e-3, f"max abs logit diff {diff:.1e}"
    diff = abs(plora["first_loss"] - peer["first_loss"])
    return diff < 1e-3 * max(1.0, abs(peer["first_loss"])), f"abs loss diff {diff:.1e}"


def lscpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def orchestrate(args):
    import torch, transformers, peft

    work = Path(args.work_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    meta = {
        "machine": lscpu_model(), "cpus": os.cpu_count(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
        "batch": args.batch, "load_before": os.getloadavg(),
        "command": " ".join(sys.argv),
    }
    results = []
    failed = False
    for shape in args.models:
        directory = work / shape
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint, batch = make_inputs(directory, shape, args.batch)
        masks = directory / "masks.json"
        run_json_or_none = subprocess.run([args.driver, checkpoint, batch, "write-masks", "--masks", masks,
                                           "--density", str(args.density)], env=env, check=True)
        del run_json_or_none
        for mode in args.modes:
            common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                      "--masks", str(masks)]
            sides = {"plora": [], "peer": []}
            for _ in range(args.rounds):  # interleaved: plora, peer, plora, peer, ...
                sides["plora"].append(run_json([args.driver, checkpoint, batch, mode] + common, env))
                sides["peer"].append(run_json([sys.executable, __file__, "--worker", "--checkpoint", str(checkpoint),
                                               "--batch", str(batch), "--mode", mode] + common, env))
            ok, check = agree(sides["plora"][0], sides["peer"][0], mode)
            failed = failed or not ok
            row = {"model": shape, "mode": mode, "check": check, "agree": ok}
            for side, runs in sides.items():
                steps = [s for r in runs for s in r["step_seconds"]]
                row[side] = {"median_s": statistics.median(steps), "min_s": min(steps), "samples": len(steps),
                             "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                             "trainable": runs[0].get("trainable", 0), "step_seconds": steps}
            row["time_ratio"] = row["plora"]["median_s"] / row["peer"]["median_s"]
            row["rss_ratio"] = row["plora"]["peak_rss_mib"] / row["peer"]["peak_rss_mib"]
            results.append(row)
            print(format_row(row), flush=True)
    meta["load_after"] = os.getloadavg()
    report = {"meta": meta, "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    print("\n" + table)
    if args.docs:
        update_docs(Path(args.docs), table)
    if failed:
        print("ERROR: the two sides disagree on at least one check (see 'check')", file=sys.stderr)
        return 1
    return 0


def format_row(r):
    return (f"{r['model']:8s} {r['mode']:8s} plora {r['plora']['median_s'] * 1e3:9.1f} ms "
            f"{r['plora']['peak_rss_mib']:7.0f} MiB | PyTorch+PEFT {r['peer']['median_s'] * 1e3:9.1f} ms "
            f"{r['peer']['peak_rss_mib']:7.0f} MiB | time x{r['time_ratio']:.2f} mem x{r['rss_ratio']:.2f} | {r['check']}")


def markdown(report):
    m = report["meta"]
    lines = [
        f"Machine: {m['machine']} ({m['cpus']} CPUs); date {m['date']}; commit {m['commit']}; "
        f"{m['threads']} threads on both sides; torch {m['torch']}, transformers {m['transformers']}, "
        f"peft {m['peft']}; batch {m['batch']}; {m['rounds']} rounds x {m['steps']} timed steps per side "
        f"({m['warmup']} warm-up step per process excluded), processes interleaved plora / PyTorch; "
        f"load average before {m['load_before'][0]:.2f}, after {m['load_after'][0]:.2f}.",
        "",
        f"Command: `{m['command']}`",
        "",
        "| model | mode | plora median (ms) | PyTorch+PEFT median (ms) | time plora/peer | "
        "plora peak RSS (MiB) | peer peak RSS (MiB) | memory plora/peer | check |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['mode']} | {r['plora']['median_s'] * 1e3:.0f} | "
                     f"{r['peer']['median_s'] * 1e3:.0f} | {r['time_ratio']:.2f} | "
                     f"{r['plora']['peak_rss_mib']:.0f} | {r['peer']['peak_rss_mib']:.0f} | {r['rss_ratio']:.2f} | "
                     f"{r['check']} |")
    return "\n".join(lines)


def update_docs(path, table):
    text = path.read_text() if path.exists() else ""
    section = f"{DOCS_BEGIN}\n{table}\n{DOCS_END}"
    if DOCS_BEGIN in text and DOCS_END in text:
        text = text[:text.index(DOCS_BEGIN)] + section + text[text.index(DOCS_END) + len(DOCS_END):]
    else:
        text += f"\n## plora vs PyTorch + PEFT (tools/bench_vs_peft)\n\n{section}\n"
    path.write_text(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help="run one PyTorch process (internal)")
    p.add_argument("--checkpoint")
    p.add_argument("--batch", default=8, help="orchestrator: batch size; worker: the batch file")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--masks")
    p.add_argument("--driver", default=str(REPO / "build-bench" / "benchmarks" / "side_by_side"))
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="processes per side and mode, interleaved")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per process")
    p.add_argument("--density", type=float, default=0.13, help="Partial-LoRA mask density")
    p.add_argument("--work-dir", default=str(REPO / "build-bench" / "vs_peft"))
    p.add_argument("--json", default=str(REPO / "benchmarks" / "models" / "results" / "vs_peft.json"))
    p.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"), help="'' to leave the docs alone")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    args.batch = int(args.batch)
    if args.rounds * args.steps < 5:
        p.error("need rounds * steps >= 5 timed steps per side for the median")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
