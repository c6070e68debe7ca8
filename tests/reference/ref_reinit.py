#!/usr/bin/env python3
"""Oracle for include/finetune/reinit.hpp: Hugging Face's own
RobertaPreTrainedModel._init_weights, applied as the article's notebook
applies its re-initialization (the pooler first, then encoder.layer[-1],
layer[-2], ... each through nn.Module.apply, children before their parent),
to the real transformers modules of a small RobertaModel.

The notebook draws from the global generator; here torch.manual_seed(seed)
right before the first module makes that stream reproducible, which is what
ReinitTopLayersOptions::seed gives in C++ (a generator seeded with `seed`).
The modules are float64 and the values are written rounded to float32: a
float32 normal_ takes a vectorized path on AVX2 CPUs only, so its last bits
(and a float32 golden) would depend on the machine that wrote it.

Writes into --out DIR:
  reinit_roberta.json  the config, the parameter names and shapes of a
                       RobertaLayer, RobertaPooler and RobertaEmbeddings (the
                       C++ test mirrors them), and for each case the modules
                       _init_weights changed, in order, and every parameter of
                       the re-initialized modules afterwards.
"""
import argparse
import sys
from pathlib import Path

import torch
from transformers import RobertaConfig, RobertaModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ref_lr_schedule import write  # noqa: E402  (the golden writer)

torch.set_num_threads(1)

CONFIG = {"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 4, "num_attention_heads": 2,
          "intermediate_size": 32, "max_position_embeddings": 12, "type_vocab_size": 2,
          "pad_token_id": 1}

# name, number of top layers, seed, initializer_range, extra modules (in the
# order they are re-initialized), whether Embedding modules are re-initialized
CASES = [
    # The article: pooler and the top layers, Linear and LayerNorm only.
    ("article", 2, 1234, 0.02, ["pooler"], False),
    # HF's Embedding init too (padding rows zero), another initializer_range.
    ("embeddings", 1, 7, 0.05, ["pooler", "embeddings"], True),
]


def flat(t):
    return t.detach().float().reshape(-1).tolist()


def structure(module):
    return [[name, list(p.shape)] for name, p in module.named_parameters()]


def run_case(name, n, seed, std, extra, embeddings):
    config = RobertaConfig(**CONFIG, initializer_range=std)
    torch.manual_seed(0)
    model = RobertaModel(config).double()  # add_pooling_layer=True
    # "Pretrained" values everywhere, so that every reset shows as a change.
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5).add_(3.0)
    layers = model.encoder.layer
    targets = [(e, getattr(model, e)) for e in extra]
    targets += [(f"layer.{i}", layers[i]) for i in range(len(layers) - 1, len(layers) - n - 1, -1)]

    order = []

    def init(prefix, root):
        paths = {m: (f"{prefix}.{p}" if p else prefix) for p, m in root.named_modules()}

        def apply_one(module):
            own = {k: v.detach().clone() for k, v in module.named_parameters(recurse=False)}
            model._init_weights(module)  # HF's own initialization
            changed = any(not torch.equal(v, getattr(module, k)) for k, v in own.items())
            if changed:
                order.append([paths[module], type(module).__name__])
        return apply_one

    torch.manual_seed(seed)
    with torch.no_grad():
        for prefix, module in targets:
            module.apply(init(prefix, module))

    after = {}
    for prefix, module in targets:
        for k, v in module.named_parameters():
            after[f"{prefix}.{k}"] = flat(v)
    # HF's init really ran (a flag such as _is_hf_initialized would make it a
    # no-op): every Linear/Embedding/LayerNorm of the targets was changed.
    expected = sum(1 for _, m in targets for sub in m.modules()
                   if isinstance(sub, (torch.nn.Linear, torch.nn.LayerNorm))
                   or (embeddings and isinstance(sub, torch.nn.Embedding)))
    assert len(order) == expected, (name, len(order), expected)
    if not embeddings:
        assert not any(kind == "Embedding" for _, kind in order)
    return {"name": name, "n": n, "seed": seed, "initializer_range": std, "extra": extra,
            "reinit_embeddings": embeddings, "order": order, "after": after}


def golden():
    model = RobertaModel(RobertaConfig(**CONFIG))
    return {
        "config": CONFIG,
        "structure": {"layer": structure(model.encoder.layer[0]),
                      "pooler": structure(model.pooler),
                      "embeddings": structure(model.embeddings)},
        "cases": [run_case(*case) for case in CASES],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "reinit_roberta.json", golden())


if __name__ == "__main__":
    main()
