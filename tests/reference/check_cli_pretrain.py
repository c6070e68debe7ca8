#!/usr/bin/env python3
"""Test-time oracle for `roberta_regression pretrain`'s output folder
(tests/test_roberta_cli.cpp):

  check_cli_pretrain.py OUT_DIR

Loads OUT_DIR as a user would: transformers' RobertaForMaskedLM.from_pretrained
(no tensor missing or unexpected, the decoder tied to the word embeddings) and
RobertaTokenizerFast.from_pretrained (its vocab.json and merges.txt), encodes a
sentence, masks one token and runs the model. Prints one JSON object: the
loaded config's sizes, the loading report, the vocabulary size, the logits'
shape and whether they are finite; exits 1 when loading reports a problem.
"""
import json
import sys

import torch
from transformers import RobertaForMaskedLM, RobertaTokenizerFast
from transformers.utils import logging as hf_logging


def main() -> int:
    out = sys.argv[1]
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, info = RobertaForMaskedLM.from_pretrained(out, output_loading_info=True,
                                                     attn_implementation="eager")
    model.eval()
    tokenizer = RobertaTokenizerFast.from_pretrained(out)
    enc = tokenizer("Fellow-Citizens of the Senate and House of Representatives",
                    return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[0, 2] = tokenizer.mask_token_id
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=enc["attention_mask"]).logits
    c = model.config
    report = {
        "hidden_size": c.hidden_size, "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings, "vocab_size": c.vocab_size,
        "tokenizer_vocab_size": len(tokenizer),
        "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [str(m) for m in info.get("mismatched_keys", [])],
        "decoder_tied": model.lm_head.decoder.weight.data_ptr()
        == model.roberta.embeddings.word_embeddings.weight.data_ptr(),
        "logits_shape": list(logits.shape), "finite": bool(torch.isfinite(logits).all()),
    }
    print(json.dumps(report))
    ok = not report["missing"] and not report["unexpected"] and not report["mismatched"]
    return 0 if ok and report["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
