#!/usr/bin/env python3
"""Oracle for the example's RoBERTa (examples/roberta_regression/model/roberta_model.hpp).

  ref_roberta_model.py --out DIR

Builds transformers.RobertaModel (with pooler) from tiny random RobertaConfigs
(2-3 layers, hidden 32-40, 2/4/3 heads, different layer_norm_eps) and one
RobertaForMaskedLM, saves each with save_pretrained (config.json +
model.safetensors, exactly what users download) under DIR/roberta_model/<name>/,
and writes there inputs.safetensors (input_ids, attention_mask: one full row,
one padded row, one row with only its first token real) and
expected.safetensors (last_hidden_state and pooler_output, or the MLM logits,
in eval mode, fp32, HF's eager attention).
"""
import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel
from transformers.utils import logging as hf_logging

CONFIGS = {
    "tiny_2x32_h2": dict(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=40, layer_norm_eps=1e-5),
    "tiny_3x40_h4": dict(vocab_size=160, hidden_size=40, num_hidden_layers=3,
                         num_attention_heads=4, intermediate_size=80,
                         max_position_embeddings=40, layer_norm_eps=1e-7),
    "tiny_2x36_h3": dict(vocab_size=200, hidden_size=36, num_hidden_layers=2,
                         num_attention_heads=3, intermediate_size=72,
                         max_position_embeddings=34, layer_norm_eps=1e-12),
}
MLM = "mlm_2x32_h2"
TOKENS = 12


def inputs_for(vocab_size, generator):
    ids = torch.randint(3, vocab_size, (3, TOKENS), generator=generator)
    ids[:, 0] = 0  # <s>
    mask = torch.ones(3, TOKENS, dtype=torch.long)
    mask[1, 7:] = 0  # a padded row
    mask[2, 1:] = 0  # only <s> is real
    ids[mask == 0] = 1  # <pad>
    return ids, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    root = args.out / "roberta_model"

    for i, (name, fields) in enumerate(list(CONFIGS.items()) + [(MLM, CONFIGS["tiny_2x32_h2"])]):
        torch.manual_seed(1000 + i)
        # A wide initializer: attention far from uniform, so masks and
        # positions matter to the outputs.
        config = RobertaConfig(**fields, initializer_range=0.2, type_vocab_size=1,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2,
                               attn_implementation="eager")
        model = (RobertaForMaskedLM if name == MLM else RobertaModel)(config).eval()
        folder = root / name
        model.save_pretrained(folder, safe_serialization=True)
        generator = torch.Generator().manual_seed(2000 + i)
        ids, mask = inputs_for(config.vocab_size, generator)
        save_file({"input_ids": ids, "attention_mask": mask}, str(folder / "inputs.safetensors"))
        with torch.no_grad():
            if name == MLM:
                expected = {"logits": model(input_ids=ids, attention_mask=mask).logits}
            else:
                out = model(input_ids=ids, attention_mask=mask)
                expected = {"last_hidden_state": out.last_hidden_state,
                            "pooler_output": out.pooler_output}
        save_file({k: v.contiguous() for k, v in expected.items()},
                  str(folder / "expected.safetensors"))


if __name__ == "__main__":
    main()
