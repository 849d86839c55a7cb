"""The optimiser every recipe builds (`training.adamw`, torch's fused AdamW) against the plain
foreach AdamW: the same parameters after several steps, with and without weight decay."""

from __future__ import annotations

import torch
from torch import nn

from tadistill.training import adamw, parameter_groups


def test_fused_adamw_takes_the_plain_adamw_steps():
    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(50, 16), nn.LayerNorm(16), nn.Linear(16, 8))

    fused, plain = model(), model()
    optimizers = [adamw(parameter_groups(fused, 0.01), lr=1e-2, betas=(0.9, 0.98), eps=1e-6),
                  torch.optim.AdamW(parameter_groups(plain, 0.01), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=True)]
    assert optimizers[0].defaults["fused"] and not optimizers[1].defaults["fused"]
    tokens = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for net, optimizer in zip((fused, plain), optimizers):
            optimizer.zero_grad()
            net(tokens).pow(2).mean().backward()
            optimizer.step()
    moved = [(a - b).abs().max().item() for a, b in zip(fused.parameters(), model().parameters())]
    assert min(moved) > 1e-3  # every parameter was updated
    for a, b in zip(fused.parameters(), plain.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
