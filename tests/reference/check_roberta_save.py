#!/usr/bin/env python3
"""Test-time oracle for save_pretrained (tests/test_roberta_model.cpp):

  check_roberta_save.py SAVED_DIR INPUTS EXPECTED

Loads SAVED_DIR (written by the C++ save_pretrained) with
transformers.AutoModel.from_pretrained, runs it on INPUTS and exits 0 when its
last_hidden_state and pooler_output match EXPECTED to 1e-5, 1 otherwise.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModel
from transformers.utils import logging as hf_logging


def main() -> int:
    saved, inputs_path, expected_path = sys.argv[1:4]
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(saved, attn_implementation="eager").eval()
    inputs = load_file(inputs_path)
    expected = load_file(expected_path)
    with torch.no_grad():
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    worst = max((out.last_hidden_state - expected["last_hidden_state"]).abs().max().item(),
                (out.pooler_output - expected["pooler_output"]).abs().max().item())
    print(f"check_roberta_save: {type(model).__name__} from {saved}, max |diff| {worst:.3g}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
