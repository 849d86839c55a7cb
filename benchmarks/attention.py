"""One attention layer's forward, and forward + backward, on each kernel `train.attention` offers.

SDPA (`torch.nn.functional.scaled_dot_product_attention`, the models' default kernel) against
`tadistill.attention.matmul_attention` (`train.attention: matmul`), on (B, H, n, d) inputs with
a padding mask as transformers builds it (real lengths between n/2 and n), in fp32 and in bf16.
`auto` picks matmul where it is faster: on CPU in bf16.

    python benchmarks/attention.py
    python benchmarks/attention.py --batch 8 --seq 64 --head-dim 64 --iters 5

Prints a table (median ms of --iters runs after two warm-up runs), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from tadistill.attention import matmul_attention


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--seq", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--head-dim", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def median_ms(run, iters: int, device: str) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1e3


def cell(batch: int, heads: int, seq: int, head_dim: int, dtype: torch.dtype, args) -> dict:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq, head_dim, generator=generator).to(args.device, dtype).requires_grad_()
               for _ in range(3))
    lengths = torch.randint(seq // 2, seq + 1, (batch, 1), generator=generator)
    keep = (torch.arange(seq) < lengths).to(args.device)  # (B, n)
    mask = keep[:, None, None, :].expand(batch, 1, seq, seq)  # (B, 1, n_q, n_k), True = attend
    grad = torch.randn(batch, heads, seq, head_dim, generator=generator).to(args.device, dtype)
    module = nn.Identity().eval()
    kernels = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),  # (B, H, n, d)
        "matmul": lambda: matmul_attention(module, q, k, v, mask)[0].transpose(1, 2),  # (B, H, n, d)
    }
    row = {"seq": seq, "head_dim": head_dim, "dtype": str(dtype).removeprefix("torch.")}
    for name, kernel in kernels.items():
        with torch.no_grad():
            row[f"{name}_forward_ms"] = median_ms(kernel, args.iters, args.device)
        row[f"{name}_train_ms"] = median_ms(lambda: kernel().backward(grad), args.iters, args.device)
    return row


def main() -> None:
    args = parse_args()
    rows = [
        cell(args.batch, args.heads, seq, head_dim, dtype, args)
        for dtype in (torch.float32, torch.bfloat16)
        for seq in args.seq
        for head_dim in args.head_dim
    ]
    print(f"batch {args.batch}, {args.heads} heads, {args.device}, {torch.get_num_threads()} threads; median ms")
    print("| dtype | n | d | sdpa fwd | matmul fwd | sdpa fwd+bwd | matmul fwd+bwd | fwd+bwd speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dtype']} | {row['seq']} | {row['head_dim']} | {row['sdpa_forward_ms']:.1f} | "
              f"{row['matmul_forward_ms']:.1f} | {row['sdpa_train_ms']:.1f} | {row['matmul_train_ms']:.1f} | "
              f"{row['sdpa_train_ms'] / row['matmul_train_ms']:.2f}x |")
    print(json.dumps({"benchmark": "attention", "device": args.device, "batch": args.batch, "heads": args.heads,
                      "threads": torch.get_num_threads(), "results": [{k: round(v, 2) if isinstance(v, float) else v
                                                                       for k, v in row.items()} for row in rows]}))


if __name__ == "__main__":
    main()
