#!/usr/bin/env python3
"""Oracle for the example's regressor head (RobertaRegressor in
examples/roberta_regression/model/roberta_model.hpp): the article's `MyModel`,
a transformers RobertaModel with `regressor = nn.Linear(hidden, 1)` on its
pooler output, on given weights.

  ref_roberta_regressor.py --out DIR

Builds the notebook's model from a tiny random RobertaConfig (2 layers,
hidden 24, 3 heads; wide initializer so the pooler output is far from zero)
and a regressor with PyTorch's default nn.Linear init, its weight then
scaled by 8 so the predictions spread, seeded. The notebook calls the
encoder `roberta_model`; here it is `roberta`, the key prefix the example's
checkpoints use. Writes DIR/roberta_model/regressor_2x24_h3/ (beside
ref_roberta_model.py's models, so golden_compare.py's rules for those files
apply): config.json, model.safetensors (the whole state dict: roberta.* and
regressor.*), inputs.safetensors (a full row, a padded row, a row with only
<s> real) and expected.safetensors (`predictions` [3]: the head's output
squeezed as the notebook's loss reads it, eval mode, fp32, HF's eager
attention).
"""
import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import RobertaConfig, RobertaModel

TOKENS = 10


class MyModel(nn.Module):
    """The notebook's model: RoBERTa, then a linear regressor on the pooler output."""

    def __init__(self, config):
        super().__init__()
        self.roberta = RobertaModel(config)
        self.regressor = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask):
        raw_output = self.roberta(input_ids=input_ids, attention_mask=attention_mask,
                                  return_dict=True)
        pooler = raw_output["pooler_output"]  # [batch, hidden]
        return self.regressor(pooler)         # [batch, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(3100)
    config = RobertaConfig(vocab_size=90, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=3, intermediate_size=48,
                           max_position_embeddings=24, layer_norm_eps=1e-5,
                           initializer_range=0.2, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2, attn_implementation="eager")
    model = MyModel(config).eval()
    # A regressor whose output spans more than the default init's few hundredths.
    with torch.no_grad():
        model.regressor.weight.mul_(8.0)

    generator = torch.Generator().manual_seed(3200)
    ids = torch.randint(3, config.vocab_size, (3, TOKENS), generator=generator)
    ids[:, 0] = 0  # <s>
    mask = torch.ones(3, TOKENS, dtype=torch.long)
    mask[1, 6:] = 0  # a padded row
    mask[2, 1:] = 0  # only <s> is real
    ids[mask == 0] = 1  # <pad>
    with torch.no_grad():
        predictions = model(ids, mask).squeeze(-1)

    folder = args.out / "roberta_model" / "regressor_2x24_h3"
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    save_file({"input_ids": ids, "attention_mask": mask}, str(folder / "inputs.safetensors"))
    save_file({"predictions": predictions.contiguous()}, str(folder / "expected.safetensors"))


if __name__ == "__main__":
    main()
