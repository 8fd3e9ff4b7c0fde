"""Writes the seed inputs of the fuzz targets (tests/fuzz/targets.hpp) into
tests/data/fuzz/<target>/: one valid file of every format each target reads,
so that fuzzing starts inside the readers instead of at their first check.
Run with tools/.venv/bin/python from the repository root (transformers writes
the model checkpoints; cjpeg, from Debian's libjpeg-turbo-progs, the JPEGs;
spm_train, from Debian's sentencepiece, the SentencePiece models).
Inputs that a fuzzing run found at fault (named after what they exercise) are
not written here: they come from scripts/fuzz and stay as found.

A target that reads several formats picks one by the first input byte (images:
the first two bytes pick the preprocessing size), so each seed starts with it.
"""
import gzip
import json
import struct
import subprocess
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

OUT = Path("tests/data/fuzz")
DATA = Path("tests/data")
# plora::glue_tasks() order; CIFAR-10 and CIFAR-100 follow.
GLUE = ["sst2", "cola", "mrpc", "stsb", "qqp", "mnli_matched", "mnli_mismatched", "qnli", "rte", "copa", "wsc"]


def write(target: str, name: str, prefix: bytes, body: bytes) -> None:
    (OUT / target).mkdir(parents=True, exist_ok=True)
    (OUT / target / name).write_bytes(prefix + body)


def safetensors_seeds() -> None:
    # A plora training checkpoint: parameters, optimizer state, the
    # plora.checkpoint metadata of train/checkpoint.hpp.
    meta = {"format": "plora-checkpoint", "version": 3, "seed": 1, "settings": {"lr": "0.01"}, "epoch": 0,
            "batch_in_epoch": 2, "step": 3, "window_loss": 1.25, "window_steps": 3,
            "optimizer": "AdamW", "optimizer_step": 3, "streams": {"dropout": {"seed": 1, "stream": 2, "offset": 3}}}
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.safetensors"
        save_file({"param/site.lora_A": a, "optimizer/site.lora_A.exp_avg": a.clone()}, str(path),
                  metadata={"plora.checkpoint": json.dumps(meta)})
        write("safetensors", "checkpoint.safetensors", b"", path.read_bytes())


def json_seeds() -> None:
    # The ViT and DeBERTa config.json seeds are the tiny checkpoints' (model_seeds).
    preprocessor = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 1 / 255,
                    "size": {"height": 32, "width": 32}}
    write("json_files", "preprocessor_config.json.in", b"\x02", json.dumps(preprocessor).encode())
    site = {"name": "vit.encoder.layer.0.attention.attention.query", "out_features": 4, "in_features": 4,
            "ratio": 0.25, "outcome": "found", "evaluations": 2,
            "probes": [{"q": 1.0, "density": 1.0, "metric": 0.84}, {"q": 0.25, "density": 0.25, "metric": 0.8}],
            "row_scores": [0.5, 0.25, 0.125, 0.0625], "col_scores": [0.1, 0.2, 0.3, 0.4],
            "top_rows": [0, 1], "top_cols": [2, 3]}
    ratios = {"format": "plora.ratios", "version": 1, "extractor": "svd", "metric": "accuracy", "tau": 0.9,
              "resolution": 0.015625, "reference_metric": 0.84, "seed": 0, "sites": [site]}
    write("json_files", "ratios.json.in", b"\x03", json.dumps(ratios).encode())


def bmp(width: int, height: int) -> bytes:
    row = (3 * width + 3) // 4 * 4
    pixels = b"".join(bytes(3 * x + (10 * y + c) for x in range(width) for c in range(3)).ljust(row, b"\0")
                      for y in range(height))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + info + pixels


def image_seeds() -> None:
    write("images", "bmp.in", b"\x07\x05", bmp(5, 3))
    write("images", "png.in", b"\x10\x20", (DATA / "io/rgb_7x5.png").read_bytes())
    ppm = b"P6 8 6 255\n" + bytes((30 * x + 7 * y + 50 * c) % 256 for y in range(6) for x in range(8) for c in range(3))
    for name, size, flags in [("jpg.in", b"\x05\x09", []), ("jpg_progressive.in", b"\x21\x03", ["-progressive"])]:
        jpeg = subprocess.run(["cjpeg", "-quality", "50", *flags], input=ppm, capture_output=True, check=True).stdout
        write("images", name, size, jpeg)


def dataset_seeds() -> None:
    files = {
        "sst2": ("tsv", "sentence\tlabel\nhello world\t1\nbad film\t0\n"),
        "cola": ("tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n"),
        "mrpc": ("tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat.\tThe cat.\n"),
        "stsb": ("tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                        "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tA jet.\t4.5\n"),
        "qqp": ("tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tHow?\t0\n"),
        "mnli_matched": ("tsv", "index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1"
                                "\tgold_label\n0\t1\t2\tg\ta\tb\tc\td\tA man.\tA person.\tentailment\tentailment\n"),
        "qnli": ("tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n"),
        "copa": ("jsonl", '{"premise": "It rained.", "choice1": "Wet.", "choice2": "Dry.", "question": "effect", '
                          '"label": 0}\n'),
        "wsc": ("jsonl", '{"text": "Mark told Pete.", "target": {"span1_text": "Pete", "span2_text": "he"}, '
                         '"label": true}\n'),
    }
    for task, (kind, text) in files.items():
        write("datasets", f"{task}.{kind}.in", bytes([GLUE.index(task)]), text.encode())
    record = bytes([3]) + bytes(range(256)) * 12  # label 3, 3072 pixel bytes
    write("datasets", "cifar10.in", bytes([len(GLUE)]), record)
    write("datasets", "cifar100.in", bytes([len(GLUE) + 1]), bytes([1, 55]) + bytes(3072))
    pixels = ",".join(str(3 * i % 256) for i in range(64))
    write("datasets", "pixels.csv.in", bytes([len(GLUE) + 2]), f"label,{pixels}\n3,{pixels}\n0,{pixels}\n".encode())
    digits = ",".join(str(i % 17) for i in range(64))
    digits_csv = f"{digits},7\n{digits},2\n".encode()
    write("datasets", "digits.csv.in", bytes([len(GLUE) + 3]), digits_csv)
    write("datasets", "digits.csv.gz.in", bytes([len(GLUE) + 3]), gzip.compress(digits_csv, mtime=0))


def model_seeds() -> None:
    """Tiny ViT and DeBERTa-v2 checkpoints in model_configs/<model>/ (the
    json_files target builds models from their weights, model_checkpoints
    from their configs); their model.safetensors and config.json are also
    the seeds of those two targets."""
    torch.manual_seed(0)
    models = {
        "vit": transformers.ViTForImageClassification(transformers.ViTConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=8,
            patch_size=4, num_labels=2)),
        "deberta": transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
            vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
            max_position_embeddings=16, relative_attention=True, position_buckets=4, pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, type_vocab_size=0,
            num_labels=2)),
    }
    for index, (name, model) in enumerate(models.items()):
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            config_dir = OUT / "model_configs" / name
            config_dir.mkdir(parents=True, exist_ok=True)
            for file in ("config.json", "model.safetensors"):
                (config_dir / file).write_bytes((Path(tmp) / file).read_bytes())
            write("model_checkpoints", f"{name}.safetensors.in", bytes([index]),
                  (Path(tmp) / "model.safetensors").read_bytes())
            write("json_files", f"{name}_config.json.in", bytes([index]), (Path(tmp) / "config.json").read_bytes())


def tokenizer_seeds() -> None:
    # Small models with the DeBERTa specials: unigram and BPE without a
    # normalisation table (nmt_nfkc's is 240 KB, past the fuzzer's input
    # size), and unigram with a one-rule table (A -> a), so that fuzzing
    # reaches the table's trie.
    with tempfile.TemporaryDirectory() as tmp:
        rule = Path(tmp) / "rule.tsv"
        rule.write_text("41\t61\n")
        for name, model_type, normalisation in (("unigram", "unigram", "--normalization_rule_name=identity"),
                                                ("bpe", "bpe", "--normalization_rule_name=identity"),
                                                ("unigram_rule", "unigram", f"--normalization_rule_tsv={rule}")):
            prefix = Path(tmp) / name
            subprocess.run(["spm_train", f"--input={DATA / 'spm_corpus.txt'}", f"--model_prefix={prefix}",
                            "--vocab_size=64", f"--model_type={model_type}", normalisation,
                            "--character_coverage=1.0", "--pad_id=0", "--pad_piece=[PAD]", "--bos_id=1",
                            "--bos_piece=[CLS]", "--eos_id=2", "--eos_piece=[SEP]", "--unk_id=3",
                            "--unk_piece=[UNK]", "--minloglevel=2"], check=True, capture_output=True)
            write("tokenizer_models", f"{name}.model", b"", prefix.with_suffix(".model").read_bytes())


def main() -> None:
    model_seeds()
    safetensors_seeds()
    json_seeds()
    image_seeds()
    dataset_seeds()
    tokenizer_seeds()


if __name__ == "__main__":
    main()
