#!/usr/bin/env python3
"""Reference fixtures for plora's ViT from Hugging Face transformers + PEFT.

Writes, per small random-initialised configuration, a checkpoint directory

    <out>/vit_<name>/config.json          ViTConfig (transformers' own writer)
    <out>/vit_<name>/model.safetensors    the weights as Hub checkpoints store them
    <out>/vit_<name>/reference.safetensors inputs and what transformers/PEFT compute

reference.safetensors (all float32, references computed in float64 from the
float32 weights, so the only error left in a comparison is plora's own):
    pixel_values            [N, C, S, S]
    logits                  [N, labels]         ViTForImageClassification, eval mode
    hidden_states.<i>       [N, tokens, hidden] i = 0 embeddings, i = l + 1 after layer l
    labels                  [N]                 class ids (exact small integers)
    lora.<site>.lora_A      [r, in]             PEFT LoRA values (B non-zero, random)
    lora.<site>.lora_B      [out, r]
    lora.logits, lora.loss  [N, labels], [1]    the PEFT model's output and mean CE loss
    grad.<parameter>        gradients after one backward of lora.loss: every
                            <site>.lora_A / .lora_B and classifier.weight / .bias
__metadata__: versions of torch / transformers / peft / safetensors, r, lora_alpha,
target modules, the key layout of model.safetensors.

<site> uses the Hub names (vit.encoder.layer.<i>.attention.attention.query):
transformers >= 5 renames the modules in memory (vit.layers.<i>.attention.q_proj)
but still saves the Hub names, and plora uses the Hub names everywhere.

Configurations: A (hidden 64, 4 layers, 4 heads, patch 4, image 32, 10 labels,
saved by save_pretrained with "vit."-prefixed keys) and B (odd sizes, eps 1e-6,
no query/key/value bias, saved ViTModel-style without the "vit." prefix and with
an unused pooler, to exercise the loader). `--full DIR` writes a ViT-B/16-sized
random checkpoint directory of the same layout for the manual check in
docs/reference-checks.md (about 350 MB, never committed).

Run with tools/.venv/bin/python; the script creates that venv itself if it is
missing.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
VENV = TOOLS / ".venv"
REQUIREMENTS = ["torch", "transformers", "peft", "safetensors"]


def ensure_environment():
    """Re-executes under tools/.venv, creating it with the requirements if needed."""
    try:
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if Path(sys.executable).resolve() == python.resolve():
        sys.exit(f"{python} lacks one of {REQUIREMENTS}; install them with {VENV}/bin/pip")
    if not python.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(python), "-m", "pip", "install", *REQUIREMENTS])
    os.execv(str(python), [str(python), *sys.argv])


ensure_environment()

import peft  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

LORA_R = 4
LORA_ALPHA = 8

CONFIGS = {
    "a": dict(config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                          patch_size=4, image_size=32, num_channels=3, num_labels=10),
              batch=3, prefixed=True, seed=1),
    "b": dict(config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                          patch_size=5, image_size=20, num_channels=3, num_labels=7, layer_norm_eps=1e-6,
                          qkv_bias=False),
              batch=2, prefixed=False, seed=2),
    "full": dict(config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                             patch_size=16, image_size=224, num_channels=3, num_labels=10),
                 batch=2, prefixed=True, seed=3),
}

# transformers >= 5 module names -> Hub checkpoint names (what save_pretrained writes).
HUB_RENAMES = [
    (".attention.q_proj", ".attention.attention.query"),
    (".attention.k_proj", ".attention.attention.key"),
    (".attention.v_proj", ".attention.attention.value"),
    (".attention.o_proj", ".attention.output.dense"),
    (".mlp.fc1", ".intermediate.dense"),
    (".mlp.fc2", ".output.dense"),
]


def hub_name(name):
    """A module path of the in-memory model in Hub checkpoint naming."""
    if name.startswith("vit.layers."):
        name = "vit.encoder.layer." + name[len("vit.layers."):]
    for new, old in HUB_RENAMES:
        name = name.replace(new, old)
    return name


def randomise(model, generator):
    """Weights at a scale where every part of the network matters (HF's 0.02
    init makes attention nearly uniform and the test insensitive)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm_before.weight") or name.endswith("layernorm_after.weight") or \
                    name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=generator))
            elif p.dim() >= 2 and "embeddings" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in ** 0.5)
            elif name.endswith("projection.weight"):
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
            elif name.endswith("cls_token") or name.endswith("position_embeddings"):
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
            else:  # biases, LayerNorm shifts
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def metadata(extra):
    meta = {"format": "pt", "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "peft_version": peft.__version__, "safetensors_version": safetensors.__version__,
            "generator": "tools/make_fixtures.py"}
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def lora_targets(model):
    """PEFT target names for query and value in this transformers version."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return ["q_proj", "v_proj"] if "q_proj" in names else ["query", "value"]


def make(name, out_dir):
    spec = CONFIGS[name]
    torch.manual_seed(spec["seed"])  # PEFT draws lora_A from the global generator
    generator = torch.Generator().manual_seed(spec["seed"])
    config = ViTConfig(**spec["config"])
    config._attn_implementation = "eager"
    model = ViTForImageClassification(config).eval()
    randomise(model, generator)

    directory = out_dir / f"vit_{name}"
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    if spec["prefixed"]:
        model.save_pretrained(directory)
    else:
        # ViTModel-style keys (no "vit." prefix) plus a pooler plora must ignore.
        model.save_pretrained(directory / "tmp")
        from safetensors import safe_open
        with safe_open(directory / "tmp" / "model.safetensors", "pt") as f:
            tensors = {k[len("vit."):] if k.startswith("vit.") else k: f.get_tensor(k) for k in f.keys()}
        hidden = config.hidden_size
        tensors["pooler.dense.weight"] = torch.randn(hidden, hidden, generator=generator)
        tensors["pooler.dense.bias"] = torch.randn(hidden, generator=generator)
        save_file(tensors, directory / "model.safetensors", metadata=metadata({"layout": "unprefixed + pooler"}))
        for f in (directory / "tmp").iterdir():
            f.unlink()
        (directory / "tmp").rmdir()

    batch = spec["batch"]
    pixels = torch.rand(batch, config.num_channels, config.image_size, config.image_size, generator=generator) * 2 - 1
    labels = torch.randint(0, config.num_labels, (batch,), generator=generator)
    reference = {"pixel_values": pixels, "labels": labels.to(torch.float32)}

    # Plain model, float64 forward on the float32 weights.
    model64 = model.double()
    with torch.no_grad():
        out = model64(pixel_values=pixels.double(), output_hidden_states=True)
    reference["logits"] = out.logits
    for i, h in enumerate(out.hidden_states):
        reference[f"hidden_states.{i}"] = h

    # PEFT LoRA on query and value, classifier trained in full, B non-zero.
    targets = lora_targets(model64)
    lora_config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=targets,
                             modules_to_save=["classifier"])
    peft_model = get_peft_model(model64, lora_config)
    peft_model.eval()
    with torch.no_grad():
        for module_name, module in peft_model.base_model.model.named_modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                # float32-representable values, so plora loads exactly what PEFT used
                a = module.lora_A["default"].weight
                a.copy_(a.float().double())
                b = module.lora_B["default"].weight
                b.copy_((0.3 * torch.randn(b.shape, generator=generator)).double())
                site = hub_name(module_name)
                reference[f"lora.{site}.lora_A"] = a.detach().clone()
                reference[f"lora.{site}.lora_B"] = b.detach().clone()
    lora_out = peft_model(pixel_values=pixels.double(), labels=labels)
    lora_out.loss.backward()
    reference["lora.logits"] = lora_out.logits.detach()
    reference["lora.loss"] = lora_out.loss.detach().reshape(1)
    for pname, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        short = pname.removeprefix("base_model.model.").replace(".default", "").replace(".modules_to_save", "")
        short = hub_name(short.removesuffix(".weight") if ".lora_" in short else short)
        reference[f"grad.{short}"] = p.grad.detach()

    reference = {k: v.detach().to(torch.float32).contiguous() for k, v in reference.items()}
    save_file(reference, directory / "reference.safetensors",
              metadata=metadata({"lora_r": LORA_R, "lora_alpha": LORA_ALPHA, "lora_targets": "query,value",
                                 "peft_target_modules": ",".join(targets), "config": name,
                                 "model_keys": "vit.-prefixed" if spec["prefixed"] else "unprefixed + pooler"}))
    for f in directory.iterdir():
        f.chmod(0o644)  # safetensors writes 0600
    size = sum(f.stat().st_size for f in directory.iterdir())
    print(f"{directory}: {len(reference)} reference tensors, {size / 1e6:.2f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TOOLS.parent / "tests" / "data",
                        help="directory receiving vit_a/ and vit_b/ (default: tests/data)")
    parser.add_argument("--full", type=Path, metavar="DIR",
                        help="instead write a ViT-B/16-sized random checkpoint to DIR/vit_full (not committed)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.full:
        make("full", args.full)
    else:
        make("a", args.out)
        make("b", args.out)


if __name__ == "__main__":
    main()
