"""Why a student works: how its layers relate to its teacher's, measured on held-out text.

- Linear CKA (Kornblith et al., 2019) between every student layer and every teacher layer
  (0 = the embedding output), over all non-padding tokens. CKA(X, Y) =
  ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc the column-centred (N, d) matrix:
  1 for representations equal up to rotation and scale, whatever their widths.
  `CKAStatistics` accumulates the sums it needs batch by batch, so the N tokens never sit
  in memory at once: X^T X, Y^T Y, Y^T X and the column sums.
- MiniLMv2 relation agreement: KL(teacher || student) of the Q-Q, K-K and V-V relations
  (`tadistill.losses.attention_relation_kl`, the training loss itself) for every layer pair.
- Attention-distribution agreement per head: the MiniLMv1 KL (`attention_kl`) of each
  head alone, for every layer pair.
Each KL is the mean over valid query tokens of all texts (a token-weighted mean of the
per-batch means).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tadistill.losses import attention_kl, attention_relation_kl

RELATIONS = ("qq", "kk", "vv")


class CKAStatistics:
    """Running sums for linear CKA between every layer of one model and every layer of another."""

    def __init__(self):
        self.count = 0
        self.sums: dict[str, list[Tensor]] = {}
        self.grams: dict[str, list[Tensor]] = {}
        self.cross: list[list[Tensor]] | None = None  # cross[i][j] = Y_j^T X_i, (d_y, d_x)

    def add(self, xs: list[Tensor], ys: list[Tensor]) -> None:
        """One batch: `xs` (the first model's layers) and `ys` (the other's), each (N, d), the same N tokens."""
        xs = [x.double() for x in xs]
        ys = [y.double() for y in ys]
        if self.cross is None:
            self.sums = {"x": [torch.zeros(x.shape[1], dtype=torch.float64) for x in xs],
                         "y": [torch.zeros(y.shape[1], dtype=torch.float64) for y in ys]}
            self.grams = {"x": [torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64) for x in xs],
                          "y": [torch.zeros(y.shape[1], y.shape[1], dtype=torch.float64) for y in ys]}
            self.cross = [[torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64) for y in ys] for x in xs]
        self.count += xs[0].shape[0]
        for side, tensors in (("x", xs), ("y", ys)):
            for k, t in enumerate(tensors):
                self.sums[side][k] += t.sum(0)
                self.grams[side][k] += t.T @ t  # (d, d)
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                self.cross[i][j] += y.T @ x  # (d_y, d_x)

    def matrix(self) -> list[list[float]]:
        """CKA[i][j] between layer i of the first model and layer j of the other."""
        n = self.count

        def centred(gram: Tensor, left: Tensor, right: Tensor) -> Tensor:
            return gram - torch.outer(left, right) / n  # A^T B - N mean_a mean_b^T = Ac^T Bc

        x_norms = [torch.linalg.matrix_norm(centred(g, s, s)) for g, s in zip(self.grams["x"], self.sums["x"])]
        y_norms = [torch.linalg.matrix_norm(centred(g, s, s)) for g, s in zip(self.grams["y"], self.sums["y"])]
        return [[(torch.linalg.matrix_norm(centred(self.cross[i][j], self.sums["y"][j], self.sums["x"][i])) ** 2
                  / (x_norms[i] * y_norms[j])).item() for j in range(len(y_norms))] for i in range(len(x_norms))]


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations (N, d_x) and (N, d_y) of the same N examples."""
    stats = CKAStatistics()
    stats.add([x], [y])
    return stats.matrix()[0][0]


class WeightedMean:
    """Token-weighted means of per-batch mean losses, keyed by anything."""

    def __init__(self):
        self.totals: dict = {}
        self.weights: dict = {}

    def add(self, key, value: Tensor, weight: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + float(value) * weight
        self.weights[key] = self.weights.get(key, 0.0) + weight

    def mean(self, key) -> float:
        return self.totals[key] / self.weights[key]


def relation_kls(student_qkv: dict[str, dict[int, Tensor]], teacher_qkv: dict[str, dict[int, Tensor]],
                 attention_mask: Tensor, relation_heads: int) -> dict[tuple[str, int, int], Tensor]:
    """(relation, student layer, teacher layer) -> KL of the teacher's relation to the student's,
    for every layer pair; `*_qkv[letter][layer]` are (B, n, d) projections."""
    return {(relation, s, t): attention_relation_kl(student=student_qkv[relation[0]][s], teacher=teacher_qkv[relation[0]][t],
                                                    attention_mask=attention_mask, relation_heads=relation_heads)
            for relation in RELATIONS for s in student_qkv[relation[0]] for t in teacher_qkv[relation[0]]}


def attention_kls_per_head(student_q: Tensor, student_k: Tensor, teacher_q: Tensor, teacher_k: Tensor,
                           attention_mask: Tensor, heads: int) -> list[Tensor]:
    """The MiniLMv1 attention KL of each of `heads` heads alone: head h of both models is the
    h-th slice of width d / heads of Q and K (B, n, d)."""
    s_width, t_width = student_q.shape[-1] // heads, teacher_q.shape[-1] // heads
    return [attention_kl(student_query=student_q[..., h * s_width:(h + 1) * s_width],
                         student_key=student_k[..., h * s_width:(h + 1) * s_width],
                         teacher_query=teacher_q[..., h * t_width:(h + 1) * t_width],
                         teacher_key=teacher_k[..., h * t_width:(h + 1) * t_width],
                         attention_mask=attention_mask, heads=1)
            for h in range(heads)]
