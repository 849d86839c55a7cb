"""From packed blocks to batches: a map-style dataset for the sampler and the collator.

Masking, when asked for, is transformers' `DataCollatorForLanguageModeling` (15% of tokens,
80% [MASK] / 10% random / 10% kept), or DistilBERT's frequency-smoothed draw
(`tadistill.data.masking`) when token weights are given. Three things are added around it:
- the tokens never selected are given explicitly: every special token of the tokenizer
  (the block frame, the document separators) and every padding position;
- the batch is cut to its longest block (its padding columns dropped;
  `data.group_by_length` batches blocks of similar length together, so more is dropped);
- its random generator is seeded per batch from the batch's mask keys (unique per epoch and
  position, see MixtureSampler), so the masks of a batch do not depend on how many batches
  were drawn before it: resuming mid-epoch reproduces them exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling

from tadistill.data.masking import FrequencySmoothedMasker


class PackedBlocks(torch.utils.data.Dataset):
    """Map-style view of the blocks, indexed by MixtureSampler's (block index, mask key) pairs."""

    def __init__(self, blocks):
        self.blocks = blocks.with_format("numpy")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        # One Arrow read for the whole batch; the DataLoader calls this instead of __getitem__.
        rows = self.blocks[[index for index, _ in keys]]
        return [
            {"input_ids": rows["input_ids"][i], "attention_mask": rows["attention_mask"][i], "mask_key": mask_key}
            for i, (_, mask_key) in enumerate(keys)
        ]


class BlockCollator:
    """Stacks blocks into input_ids / attention_mask; adds MLM masking and labels when asked."""

    def __init__(self, tokenizer, mlm_probability: float | None, seed: int, token_weights: torch.Tensor | None = None):
        """`token_weights` (V,) switches to frequency-smoothed masking (see tadistill.data.masking)."""
        self.seed = seed
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.masker = (
            None
            if mlm_probability is None
            else DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        )
        self.smoothed = (
            None
            if mlm_probability is None or token_weights is None
            else FrequencySmoothedMasker(token_weights, mlm_probability, tokenizer.mask_token_id)
        )

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = torch.as_tensor(np.stack([e["input_ids"] for e in examples]), dtype=torch.long)  # (B, n)
        attention_mask = torch.as_tensor(np.stack([e["attention_mask"] for e in examples]), dtype=torch.long)
        # blocks are right-padded: the columns after the longest block's last token are padding in
        # every row, and every loss leaves padding out, so the batch is cut there (same losses, less compute)
        length = int(attention_mask.any(0).nonzero().max()) + 1 if attention_mask.any() else attention_mask.shape[1]
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]  # (B, length)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.masker is None:
            return batch
        never_masked = torch.isin(input_ids, self.special_ids) | (attention_mask == 0)  # (B, n)
        # torch_mask_tokens draws every random choice from self.generator: seed it for this batch.
        generator = torch.Generator().manual_seed(self.batch_seed([e["mask_key"] for e in examples]))
        if self.smoothed is not None:
            batch["input_ids"], batch["labels"] = self.smoothed.mask(input_ids, never_masked, attention_mask, generator)
            return batch
        self.masker.generator = generator
        batch["input_ids"], batch["labels"] = self.masker.torch_mask_tokens(input_ids, special_tokens_mask=never_masked)
        return batch

    def batch_seed(self, mask_keys: list[int]) -> int:
        """A 63-bit seed that depends only on the run seed and the batch's mask keys."""
        state = np.random.SeedSequence([self.seed, *mask_keys]).generate_state(2, dtype=np.uint32)
        return (int(state[0]) << 31) ^ int(state[1])
