#!/usr/bin/env python3
"""plora against PyTorch + transformers + PEFT on the same machine, threads,
checkpoint and batch (tools/bench_vs_peft is the entry point).

For each model shape (ViT-B/16, ViT-S/16: batch 8, 224 x 224; DeBERTa-v3-base:
batch 8, 128 tokens; deberta-tiny: 2 layers of width 64, a fast check of the
harness itself) this script
  1. creates a randomly initialised ViTForImageClassification (10 labels) or
     DebertaV2ForSequenceClassification (2 labels, dropout 0, so both sides
     do the same arithmetic and the first losses can be compared) with
     transformers and saves it as safetensors: both sides load THAT directory;
  2. saves one batch (pixels in [-1, 1] / random token ids after [CLS] with an
     all-ones attention mask; labels) that both sides use;
  3. has plora's driver (benchmarks/models/side_by_side.cpp) write the
     Partial-LoRA masks (density 0.13) that both sides apply;
  4. runs every mode as separate processes, interleaved plora / PyTorch per
     mode, every mode once per round (--rounds), each process doing --warmup
     untimed and --steps timed steps, and reports the median step time over
     all timed steps and the median of the processes' peak RSS.
Modes: forward (eval), lora (r 8, alpha 16, query + value projections, head
trained: ViT's classifier, DeBERTa's pooler + classifier as plora's DeBERTa
trains them; AdamW), partial (the same LoRA with the masked rows of B /
columns of A held at zero by gradient hooks, the best a PEFT user can do
today), full (every encoder linear weight + head, AdamW).
Before any timing is compared, the first step's loss (forward: the logits) of
the two sides must agree (tolerances in agree()), and in lora / full their
trainable counts; a mismatch is reported and fails the run. Peak RSS is each
process's own VmHWM (ru_maxrss would include the orchestrator's, inherited).

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
# deberta-v3-base's config.json (transformers' DebertaV2Config defaults are v2's).
DEBERTA_V3_BASE = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                       position_buckets=256, pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                       max_relative_positions=-1, position_biased_input=False, layer_norm_eps=1e-7)
SHAPES = {
    "vit-b16": dict(family="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vit-s16": dict(family="vit", hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "deberta-v3-base": dict(family="deberta", **DEBERTA_V3_BASE),
    # A check of the harness: 32 buckets (not 256) so that 128 tokens reach the log-bucketed relative
    # positions; weights N(0, 0.2) (not 0.02) so that attention is far from uniform and the logits are O(1)
    # and depend on the sequence (at 0.02 they are ~0.02, nearly the same for every sequence, loss ~ ln 2).
    "deberta-tiny": dict(family="deberta", **dict(DEBERTA_V3_BASE, vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=256, position_buckets=32,
                                                  initializer_range=0.2)),
}
DEFAULT_SHAPES = ["vit-b16", "vit-s16", "deberta-v3-base"]
# Per family: labels; LoRA target_modules (transformers 5 renamed ViT's query / value); the head
# PEFT's modules_to_save trains (what plora's models train).
FAMILIES = {
    "vit": dict(num_labels=10, lora_targets=(["q_proj", "v_proj"], ["query", "value"]), head=["classifier"]),
    "deberta": dict(num_labels=2, lora_targets=(["query_proj", "value_proj"],), head=["pooler", "classifier"]),
}
SEQ_LEN = 128
DOCS_BEGIN = "<!-- bench_vs_peft:begin -->"
DOCS_END = "<!-- bench_vs_peft:end -->"


def peak_rss_mib():
    """This process's own peak RSS: VmHWM. ru_maxrss would also carry, across exec, the peak of the
    orchestrator it was forked from (torch loaded, the checkpoint just written)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- worker side
def find_module(model, site):
    """The LoRA-wrapped module of plora's site name: the module of that path, or (ViT
    under transformers 5, which renamed attention.attention.query) the same layer's q_proj / v_proj."""
    layer, kind = re.search(r"layer\.(\d+)\..*\.(\w+)$", site).groups()
    renamed = {"query": "attention.q_proj", "value": "attention.v_proj"}.get(kind)
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and (
                name.endswith("." + site) or
                (renamed and re.search(rf"layers?\.{layer}\.{re.escape(renamed)}$", name))):
            return module
    raise KeyError(f"no LoRA module for plora site {site}")


def load_model_and_inputs(checkpoint, batch_file):
    """(family, model, forward inputs, labels) for a checkpoint directory and batch written by make_inputs."""
    from transformers import AutoConfig, DebertaV2ForSequenceClassification, ViTForImageClassification
    from safetensors.torch import load_file

    batch = load_file(batch_file)
    labels = batch["labels"].long()
    if AutoConfig.from_pretrained(checkpoint).model_type == "vit":
        model = ViTForImageClassification.from_pretrained(checkpoint)
        size = model.config.image_size
        return FAMILIES["vit"], model, {"pixel_values": batch["pixels"].reshape(-1, 3, size, size)}, labels
    model = DebertaV2ForSequenceClassification.from_pretrained(checkpoint)
    inputs = {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}
    return FAMILIES["deberta"], model, inputs, labels


def worker(args):
    import torch

    torch.set_num_threads(args.threads)
    family, model, inputs, labels = load_model_and_inputs(args.checkpoint, args.batch)
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
            out["first_logits"] = model(**inputs).logits.flatten().tolist()
            out["step_seconds"] = time_steps(lambda: model(**inputs))
    else:
        if args.mode in ("lora", "partial"):
            from peft import LoraConfig, get_peft_model
            names = [n for n, _ in model.named_modules()]
            targets = next(t for t in family["lora_targets"] if any(n.endswith("." + t[0]) for n in names))
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                                                     modules_to_save=family["head"]))
            if args.mode == "partial":
                masks = json.loads(Path(args.masks).read_text())
                for site in masks["sites"]:
                    module = find_module(model, site["name"])
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
            linear = re.compile(r"layers?\.\d+\..*\.(q_proj|k_proj|v_proj|o_proj|fc1|fc2|query|key|value|dense|"
                                r"query_proj|key_proj|value_proj)\.weight$")
            for name, p in model.named_parameters():
                p.requires_grad_(bool(linear.search(name)) or name.split(".")[0] in family["head"])
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        out["trainable"] = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        losses = []

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = model(**inputs, labels=labels).loss
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
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, ViTConfig, ViTForImageClassification
    from safetensors.torch import save_file

    config = dict(SHAPES[shape])
    family = config.pop("family")
    num_labels = FAMILIES[family]["num_labels"]
    checkpoint = directory / "checkpoint"
    if not (checkpoint / "model.safetensors").exists():
        torch.manual_seed(0)
        if family == "vit":
            model = ViTForImageClassification(ViTConfig(**config, num_labels=num_labels, image_size=224, patch_size=16))
        else:
            model = DebertaV2ForSequenceClassification(DebertaV2Config(
                **config, num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        model.save_pretrained(checkpoint, safe_serialization=True)
    batch = directory / "batch.safetensors"
    if not batch.exists():
        generator = torch.Generator().manual_seed(1)
        if family == "vit":
            tensors = {"pixels": torch.rand(batch_size, 3 * 224 * 224, generator=generator) * 2 - 1}
        else:  # [CLS] (id 1), then ordinary pieces (ids from 4: 0-3 are pad, CLS, SEP, UNK); no padding
            ids = torch.randint(4, config["vocab_size"], (batch_size, SEQ_LEN), generator=generator, dtype=torch.int64)
            ids[:, 0] = 1
            tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        tensors["labels"] = torch.randint(0, num_labels, (batch_size,), generator=generator, dtype=torch.int64)
        save_file(tensors, batch)
    return checkpoint, batch


def run_json(command, env):
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def agree(plora, peer, mode, family):
    """(ok, text): the forward's logits or the first step's loss of the two sides; in lora and full
    also the trainable counts (in partial PEFT counts the dense A and B it masks)."""
    if mode == "forward":
        diff = max(abs(a - b) for a, b in zip(plora["first_logits"], peer["first_logits"]))
        if family == "vit":
            # Logits ~N(0, 0.5); fp32 through 12 layers in a different GEMM order: ~1e-5 apart.
            return diff < 1e-3, f"max abs logit diff {diff:.1e}"
        # Relative to the logits' own scale, ~0.2 at DeBERTa-v3-base's init (not ViT's ~1): fp32 in a
        # different GEMM order differs by a few 1e-6 of it (measured: v3-base 2.7e-6, deberta-tiny 1.4e-6).
        scale = max(abs(b) for b in peer["first_logits"])
        return diff <= 1e-4 * scale, f"max abs logit diff {diff:.1e} (largest logit {scale:.1e})"
    diff = abs(plora["first_loss"] - peer["first_loss"])
    if family == "vit":
        ok, text = diff < 1e-3 * max(1.0, abs(peer["first_loss"])), f"abs loss diff {diff:.1e}"
    else:
        # With logits ~0.2 the loss stays within ~0.05 of ln 2, so ViT's 1e-3 would be loose. The loss
        # moves by at most twice the largest logit difference (softmax - one-hot has L1 norm <= 2), ~1e-6,
        # plus fp32 rounding (one ulp of 0.69 is 6e-8); measured: v3-base 1.2e-7, deberta-tiny 4.8e-7.
        ok, text = diff <= 1e-5, f"abs loss diff {diff:.1e}"
    if mode != "partial" and plora["trainable"] != peer["trainable"]:
        ok, text = False, f"{text}; trainable {plora['trainable']} vs {peer['trainable']}"
    return ok, text


def lscpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def kernel_settings():
    """The environment settings that choose either side's GEMM kernel or threading, as `NAME=value` words:
    the recorded command must name them to be repeatable (OPENBLAS_CORETYPE picks OpenBLAS's kernel).
    OMP_NUM_THREADS is left out: --threads sets it for both sides."""
    prefixes = ("OPENBLAS_", "OMP_", "GOMP_", "MKL_", "KMP_")
    return [f"{k}={v}" for k, v in sorted(os.environ.items())
            if k.startswith(prefixes) and k != "OMP_NUM_THREADS"]


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
        "command": " ".join(kernel_settings() + sys.argv),
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
        common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                  "--masks", str(masks)]
        processes = {mode: {"plora": [], "peer": []} for mode in args.modes}
        # Each round visits every mode, plora then peer: the host's speed drifts
        # by +-20 % over minutes, and this spreads the drift over all modes, so
        # that ratios across modes (partial vs lora) compare like with like.
        for _ in range(args.rounds):
            for mode in args.modes:
                processes[mode]["plora"].append(run_json([args.driver, checkpoint, batch, mode] + common, env))
                processes[mode]["peer"].append(run_json([sys.executable, __file__, "--worker", "--checkpoint",
                                                         str(checkpoint), "--batch", str(batch), "--mode", mode] +
                                                        common, env))
        for mode in args.modes:
            sides = processes[mode]
            ok, check = agree(sides["plora"][0], sides["peer"][0], mode, SHAPES[shape]["family"])
            failed = failed or not ok
            row = {"model": shape, "mode": mode, "check": check, "agree": ok}
            meta["plora_gemm_kernel"] = sides["plora"][0].get("gemm_kernel", "unknown")
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
    deberta = any(SHAPES[r["model"]]["family"] == "deberta" for r in report["results"])
    tokens = f" (DeBERTa: {SEQ_LEN} tokens each)" if deberta else ""
    lines = [
        f"Machine: {m['machine']} ({m['cpus']} CPUs); date {m['date']}; commit {m['commit']}; "
        f"{m['threads']} threads on both sides; torch {m['torch']}, transformers {m['transformers']}, "
        f"peft {m['peft']}; batch {m['batch']}{tokens}; {m['rounds']} rounds x {m['steps']} timed steps per side "
        f"({m['warmup']} warm-up step per process excluded), processes interleaved plora / PyTorch; "
        f"load average before {m['load_before'][0]:.2f}, after {m['load_after'][0]:.2f}.",
        f"plora GEMM kernel: {m.get('plora_gemm_kernel', 'unknown')}.",
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
    p.add_argument("--models", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES),
                   help="deberta-tiny: a ~2-minute check that both sides agree")
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
