"""The two MiniLMv2 relation-KL kernels side by side: same loss and gradients, time and peak
memory of forward + backward, on the device given (the tests check equality on CPU; this
checks it where `auto` picks the blocked kernel, on a GPU).

    python benchmarks/relation_kernels.py --device cuda --batch 256

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tadistill.allocator import tune_cpu_allocator
from tadistill.losses import attention_relation_kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--heads", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tune_cpu_allocator()  # as a tadistill command runs
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(args.batch, args.seq, 384, generator=g).to(device).requires_grad_() for _ in range(3)]
    teacher = [torch.randn(args.batch, args.seq, 768, generator=g).to(device) for _ in range(3)]
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch, 1), generator=g)
    mask = (torch.arange(args.seq) < lengths).long().to(device)  # (B, n)

    def run(kernel: str):
        loss = sum(attention_relation_kl(student=s, teacher=t, attention_mask=mask, relation_heads=args.heads, kernel=kernel)
                   for s, t in zip(student, teacher))
        grads = torch.autograd.grad(loss, student)
        return loss.detach(), grads

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    results, outputs = {}, {}
    for kernel in ("reference", "blocked"):
        outputs[kernel] = run(kernel)  # warm-up, and the values compared below
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            run(kernel)
            sync()
            best = min(best, time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        results[kernel] = {"seconds": round(best, 4), "peak_mib": round(peak) if peak else None}
    (loss_r, grads_r), (loss_b, grads_b) = outputs["reference"], outputs["blocked"]
    loss_diff = abs(loss_r - loss_b).item()
    grad_diff = max((a - b).abs().max().item() for a, b in zip(grads_r, grads_b))
    print(f"{'kernel':<10}{'s':>9}{'peak MiB':>10}")
    for kernel, row in results.items():
        print(f"{kernel:<10}{row['seconds']:>9.4f}{row['peak_mib'] or '-':>10}")
    print(f"max |loss difference| {loss_diff:.2e}, max |gradient difference| {grad_diff:.2e}")
    print(json.dumps({"benchmark": "relation_kernels", "device": args.device, "batch": args.batch, "seq": args.seq,
                      "heads": args.heads, "results": results, "loss_diff": loss_diff, "grad_diff": grad_diff}))


if __name__ == "__main__":
    main()
