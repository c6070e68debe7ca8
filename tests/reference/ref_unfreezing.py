#!/usr/bin/env python3
"""Oracle for include/finetune/unfreezing.hpp (GradualUnfreezing) together
with layer-wise LR groups that include frozen parameters.

ULMFiT's gradual unfreezing (Howard & Ruder 2018, section 3.3) done by hand in
PyTorch: the head trains from the start, the blocks (embeddings, layer 0..2)
are frozen through requires_grad; after every `EVERY` optimizer steps the
highest frozen block is unfrozen. The optimizer is torch.optim.AdamW over the
notebook's layer-wise LLRD groups (ref_lr_schedule.roberta_base_AdamW_LLRD,
which lists every parameter, frozen or not), rates x1000 so that steps move
the weights visibly. What PyTorch decides and the test compares: frozen
parameters get no gradient and are not touched, not even by weight decay; a
block's AdamW state starts at its first gradient (bias correction from step 1).

Writes DIR/unfreezing.json: the initial weights, the batches, and after every
step the number of unfrozen blocks and every parameter. In float64 (the test
too), so that the golden hardly depends on the CPU's matmul kernels
(tests/reference/README.md).
"""
import argparse
import json
from pathlib import Path

import torch
from torch import nn

from ref_lr_schedule import roberta_base_AdamW_LLRD

torch.set_num_threads(1)

HIDDEN, LAYERS, IN, BATCH = 6, 3, 5, 4
EVERY, STEPS, LR_SCALE = 3, 15, 1000.0


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(HIDDEN, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN)

    def forward(self, h):
        return self.LayerNorm(h + torch.tanh(self.dense(h)))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([Layer() for _ in range(LAYERS)])


class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(IN, HIDDEN)


class Model(nn.Module):
    """Parameter names as HF's (embeddings., encoder.layer.N., regressor.):
    tests/test_unfreezing.cpp builds the same module."""

    def __init__(self):
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder()
        self.regressor = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        h = self.embeddings.dense(x)
        for layer in self.encoder.layer:
            h = layer(h)
        return self.regressor(h).squeeze(-1)


def flat(t):
    return t.detach().reshape(-1).tolist()


def weights(model):
    return {n: flat(p) for n, p in model.named_parameters()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    torch.manual_seed(7)
    model = Model().double()
    initial = weights(model)
    blocks = [model.embeddings] + list(model.encoder.layer)  # bottom to top
    groups, _ = roberta_base_AdamW_LLRD(model, num_layers=LAYERS)
    for g in groups:
        g["lr"] *= LR_SCALE
    optimizer = torch.optim.AdamW(groups, lr=3.5e-6 * LR_SCALE)

    def set_unfrozen(n):
        for i, block in enumerate(blocks):
            block.requires_grad_(i >= len(blocks) - n)

    unfrozen = 0
    set_unfrozen(unfrozen)
    batches, after = [], []
    for step in range(1, STEPS + 1):
        x = torch.randn(BATCH, IN, dtype=torch.float64)
        y = torch.randn(BATCH, dtype=torch.float64)
        batches.append({"x": flat(x), "y": flat(y)})
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if step % EVERY == 0 and unfrozen < len(blocks):
            unfrozen += 1
            set_unfrozen(unfrozen)
        after.append({"unfrozen": unfrozen, "weights": weights(model)})
    golden = {"hidden": HIDDEN, "layers": LAYERS, "in": IN, "batch": BATCH, "every": EVERY,
              "lr_scale": int(LR_SCALE), "initial": initial, "batches": batches, "after": after}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "unfreezing.json", "w") as f:
        json.dump(golden, f)
        f.write("\n")


if __name__ == "__main__":
    main()
