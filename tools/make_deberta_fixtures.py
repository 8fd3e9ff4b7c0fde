#!/usr/bin/env python3
"""Writes the DeBERTa-v2/v3 reference fixtures under tests/data/ from Hugging Face
transformers and PEFT (run with tools/.venv/bin/python from the repository root).

  spm_tiny.model          a 160-piece SentencePiece unigram model trained on
                          tests/data/spm_corpus.txt with DeBERTa-v3's special ids
                          ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3); only with --train-spm
  spm_tiny_tokens.json    transformers' DebertaV2Tokenizer ids for single texts and
                          pairs, with and without truncation
  deberta_<name>.safetensors  small random DeBERTa-v2 models (see MODEL_CASES): the
                          checkpoint tensors plus inputs, logits, hidden states, loss
                          and LoRA / head gradients, all under "ref." names
  deberta_<name>.json     the model's config.json
"""
import argparse
import json
import pathlib
import shutil
import tempfile

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"


def train_spm():
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(DATA / "spm_corpus.txt"), model_prefix=str(DATA / "spm_tiny"), vocab_size=160,
        model_type="unigram", character_coverage=1.0, pad_id=0, pad_piece="[PAD]", bos_id=1,
        bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]", unk_id=3, unk_piece="[UNK]")
    (DATA / "spm_tiny.vocab").unlink()


# Texts where transformers' normalisation (NFC + whitespace folding) and spm's
# own (nmt_nfkc) agree; full-width letters are the known exception (tokenizer.hpp).
SINGLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Sparse masks keep only some rows and columns of each adapter.",
    "Hello  world,\twith tabs\nand newlines   and trailing spaces   ",
    "  leading spaces and an unknown symbol: 中文 ✓",
    "Numbers like 42, 3.14 and 2025!",
    "",
    "zzzz qqq xyzzy",
]
PAIRS = [
    ("Is the second sentence a paraphrase of the first one?", "The cat sat on the mat."),
    ("The premise entails the hypothesis.", "Nobody expected the ending, which made the story memorable."),
    ("A", "B"),
    ("The cat sat on the mat.", "The cat sat on the mat."),  # equal lengths: the tie rule
]  # No empty second text: transformers drops an empty pair in single calls but not in batches.
MAX_LENGTHS = [64, 12, 9, 8, 5]


def make_token_fixture():
    from transformers import DebertaV2Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(DATA / "spm_tiny.model", pathlib.Path(tmp) / "spm.model")
        tok = DebertaV2Tokenizer.from_pretrained(tmp)
    cases = []
    for max_length in MAX_LENGTHS:
        for a in SINGLES:
            if max_length < 3:
                continue
            enc = tok(a, truncation=True, max_length=max_length)
            cases.append({"a": a, "max_length": max_length, "input_ids": enc["input_ids"],
                          "token_type_ids": enc["token_type_ids"]})
        for a, b in PAIRS:
            enc = tok(a, b, truncation="longest_first", max_length=max_length)
            cases.append({"a": a, "b": b, "max_length": max_length, "input_ids": enc["input_ids"],
                          "token_type_ids": enc["token_type_ids"]})
    # A padded batch exactly as transformers builds it.
    batch = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], truncation=True, max_length=16, padding="longest")
    fixture = {"generator": "tools/make_deberta_fixtures.py", "tokenizer": type(tok).__name__,
               "vocab_size": tok.vocab_size, "cls": tok.cls_token_id, "sep": tok.sep_token_id,
               "pad": tok.pad_token_id, "unk": tok.unk_token_id, "cases": cases,
               "batch": {"max_length": 16, "input_ids": batch["input_ids"],
                         "token_type_ids": batch["token_type_ids"], "attention_mask": batch["attention_mask"]}}
    (DATA / "spm_tiny_tokens.json").write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")


# Small random DeBERTa-v2 models. "rel": v3-style (relative attention, log
# buckets, c2p|p2c, shared keys), LoRA on query/key/value_proj, 3 labels.
# "abs": absolute positions, token types, embed_proj, no buckets (clamped
# spans), separate pos_key_proj / pos_query_proj, regression head (num_labels 1).
MODEL_CASES = {
    "rel": dict(config=dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=64, relative_attention=True,
                            position_buckets=8, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                            share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                            type_vocab_size=0, layer_norm_eps=1e-7, num_labels=3, hidden_act="gelu",
                            pooler_hidden_act="gelu", pooler_dropout=0.0, pooler_hidden_size=32),
                targets=["query_proj", "key_proj", "value_proj"], lengths=[20, 13, 7], extra_heads=True),
    "abs": dict(config=dict(vocab_size=61, hidden_size=24, embedding_size=16, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=40, max_position_embeddings=32,
                            relative_attention=True, position_buckets=-1, max_relative_positions=6,
                            pos_att_type=["c2p", "p2c"], share_att_key=False, norm_rel_ebd="layer_norm",
                            position_biased_input=True, type_vocab_size=2, layer_norm_eps=1e-7, num_labels=1,
                            hidden_act="gelu", pooler_hidden_act="gelu", pooler_dropout=0.0,
                            pooler_hidden_size=24),
                targets=["query_proj", "value_proj", "pos_key_proj"], lengths=[11, 16], extra_heads=False),
}


def make_model_fixture(name, case):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    torch.manual_seed(1234 + len(name))
    config = DebertaV2Config(**case["config"])
    model = DebertaV2ForSequenceClassification(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for key, p in model.named_parameters():
            if key.endswith("LayerNorm.weight"):
                p.uniform_(0.5, 1.5)
            elif key.endswith(".bias") or "embeddings" in key:
                p.normal_(0.0, 0.5 if "embeddings" in key else 0.1)
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if case["extra_heads"]:  # ignored by the loader, as in a Hub checkpoint
        tensors["lm_predictions.lm_head.bias"] = torch.randn(config.vocab_size)

    lengths = case["lengths"]
    n, t = len(lengths), max(lengths)
    ids = torch.randint(4, config.vocab_size, (n, t))
    mask = torch.zeros(n, t, dtype=torch.long)
    types = torch.zeros(n, t, dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
        ids[i, length:] = 0
        types[i, length // 2:length] = 1 if config.type_vocab_size > 0 else 0
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if config.num_labels == 1:
        labels = torch.rand(n) * 5.0
    else:
        labels = torch.randint(0, config.num_labels, (n,))

    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    ref = {"ref.input_ids": ids, "ref.attention_mask": mask, "ref.token_type_ids": types, "ref.labels": labels,
           "ref.logits": out.logits}
    for i, h in enumerate(out.hidden_states):
        ref[f"ref.hidden.{i}"] = h.reshape(n * t, -1)
    rel = torch.arange(-511, 512)
    ref["ref.buckets_v3"] = make_log_bucket_position(rel, 256, 512).to(torch.int64)  # v3-base table, r = -511..511

    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=case["targets"],
                             modules_to_save=["pooler", "classifier"])
    peft_model = get_peft_model(model, peft_config).eval()
    with torch.no_grad():
        for key, p in peft_model.named_parameters():
            if "lora_A" in key or "lora_B" in key:
                p.normal_(0.0, 0.3)
    out = peft_model(**inputs, labels=labels)
    out.loss.backward()
    ref["ref.logits_lora"] = out.logits.detach()
    ref["ref.loss_lora"] = out.loss.detach().reshape(1)
    for key, p in peft_model.named_parameters():
        if not p.requires_grad:
            continue
        # base_model.model.<site>.lora_A.default.weight -> <site>.lora_A
        # base_model.model.classifier.modules_to_save.default.weight -> classifier.weight
        short = key.removeprefix("base_model.model.").replace(".default", "").replace(".modules_to_save", "")
        short = short.removesuffix(".weight") if ("lora_A" in short or "lora_B" in short) else short
        ref["lora." + short] = p.detach().clone()
        ref["grad." + short] = p.grad.detach().clone()
    tensors.update({k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
                    for k, v in ref.items()})
    save_file(tensors, str(DATA / f"deberta_{name}.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["lora_targets"] = case["targets"]
    (DATA / f"deberta_{name}.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-spm", action="store_true", help="retrain tests/data/spm_tiny.model")
    args = parser.parse_args()
    if args.train_spm or not (DATA / "spm_tiny.model").exists():
        train_spm()
    make_token_fixture()
    for name, case in MODEL_CASES.items():
        make_model_fixture(name, case)


if __name__ == "__main__":
    main()
