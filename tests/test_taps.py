"""Taps capture exactly the requested tensors, stop the forward early and clean up after themselves."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES
from torch.utils.flop_counter import FlopCounterMode

from tadistill import attention
from tadistill.arch import adapter_for
from tadistill.attention import MATMUL, set_attention
from tadistill.errors import ModelError
from tadistill.taps import Tap, capture, forward_taps

FAMILY_NAMES = list(FAMILIES)


def tiny_model(family: str, layers: int = 4, hidden: int = 64, heads: int = 4):
    config_cls, model_cls, _ = FAMILIES[family]
    config = config_cls(
        vocab_size=120,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    return model_cls(config).eval()


def tiny_batch(batch: int = 3, tokens: int = 10) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 120, (batch, tokens), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _hook_count(model) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_captured_qkv_and_hidden_equal_a_full_forward_by_hand(family):
    model, batch = tiny_model(family), tiny_batch()
    adapter = adapter_for(model)
    taps = [Tap(kind, 2) for kind in ("query", "key", "value")] + [Tap("hidden", 0), Tap("hidden", 3)]
    with torch.no_grad():
        captured = forward_taps(model, taps, batch)
        hidden_states = model.base_model(**batch, output_hidden_states=True).hidden_states
        # the projections of block 2 read block 1's output: all heads concatenated, (B, n, d)
        by_hand = [projection(hidden_states[1]) for projection in adapter.qkv(model, 2)]  # query, key, value
    for tap, expected in zip(taps, [*by_hand, hidden_states[0], hidden_states[3]]):
        assert captured[tap].shape == (3, 10, 64)
        torch.testing.assert_close(captured[tap], expected)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_stopped_forward_gives_the_tensors_of_a_full_forward(family):
    model, batch = tiny_model(family), tiny_batch()
    taps = {Tap("query", 2), Tap("key", 2), Tap("hidden", 1)}
    with torch.inference_mode():
        stopped = forward_taps(model, taps, batch)
        with capture(model, taps, stop_early=False) as full:
            model.base_model(**batch)
    assert stopped.keys() == full.keys() == taps
    for tap in taps:
        torch.testing.assert_close(stopped[tap], full[tap], rtol=0, atol=0)


def test_forward_stops_after_the_last_tapped_tensor_on_sdpa(monkeypatch):
    model, batch = tiny_model("bert"), tiny_batch()
    sdpa_calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: sdpa_calls.append(1) or real_sdpa(*a, **k)
    )
    ran = []
    for i, block in enumerate(adapter_for(model).layer_list(model), start=1):
        block.register_forward_hook(lambda *args, i=i: ran.append(i))
    model.cls.register_forward_hook(lambda *args: ran.append("lm head"))
    with torch.inference_mode():
        forward_taps(model, [Tap("value", 3)], batch)
    assert model.config._attn_implementation == "sdpa"
    assert ran == [1, 2]  # block 3 stops at its value projection, before its attention runs
    assert len(sdpa_calls) == 2
    ran.clear()
    with torch.inference_mode():
        forward_taps(model, [Tap("hidden", 4)], batch)
    assert ran == [1, 2, 3, 4]  # the last block, never the LM head


def test_hooks_are_removed_after_a_stop_and_after_an_error():
    model, batch = tiny_model("roberta"), tiny_batch()
    before = _hook_count(model)
    forward_taps(model, [Tap("hidden", 2), Tap("key", 1)], batch)
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, [Tap("hidden", 2)]):
            assert _hook_count(model) == before + 1
            raise RuntimeError("boom")
    assert _hook_count(model) == before


def test_a_tap_outside_the_model_is_an_error_and_leaves_no_hook():
    model, batch = tiny_model("bert"), tiny_batch()
    before = _hook_count(model)
    with pytest.raises(ModelError, match="layer 5 does not exist"):
        forward_taps(model, [Tap("hidden", 1), Tap("query", 5)], batch)
    assert _hook_count(model) == before
    with pytest.raises(ValueError, match="attention"):
        Tap("attention", 1)


def test_base_model_without_lm_head_is_tapped_the_same_way():
    masked_lm = tiny_model("xlm-roberta")
    base = masked_lm.base_model
    batch = tiny_batch()
    with torch.no_grad():
        from_masked_lm = forward_taps(masked_lm, [Tap("value", 4)], batch)
        from_base = forward_taps(base, [Tap("value", 4)], batch)
    torch.testing.assert_close(from_masked_lm[Tap("value", 4)], from_base[Tap("value", 4)])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_scores_are_the_kernels_own_on_matmul_and_formed_from_qk_elsewhere(family):
    """Q K^T / sqrt(d_head) per head, (B, A, n, n), before the padding mask, on either kernel."""
    model, batch = tiny_model(family), tiny_batch()
    taps = [Tap("scores", 2), Tap("query", 2), Tap("key", 2)]
    with torch.no_grad():
        on_sdpa = forward_taps(model, taps, batch)
        set_attention(model, MATMUL)
        on_matmul = forward_taps(model, taps, batch)
    q, k = (on_sdpa[Tap(kind, 2)].view(3, 10, 4, 16).transpose(1, 2) for kind in ("query", "key"))  # (B, A, n, d)
    by_hand = q @ k.transpose(-1, -2) / 4.0  # sqrt(16)
    assert on_sdpa[Tap("scores", 2)].shape == (3, 4, 10, 10)
    torch.testing.assert_close(on_sdpa[Tap("scores", 2)], by_hand)
    torch.testing.assert_close(on_matmul[Tap("scores", 2)], by_hand)
    assert _hook_count(model) == 0 and not attention._score_listeners  # nothing left behind


def test_on_matmul_a_scores_tap_costs_no_product():
    model, batch = tiny_model("bert"), tiny_batch()
    set_attention(model, MATMUL)

    def flops(taps) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward_taps(model, taps, batch)
        return counter.get_total_flops()

    plain = flops([Tap("hidden", 3)])
    assert flops([Tap("scores", 2), Tap("scores", 3), Tap("hidden", 3)]) == plain
    set_attention(model, "sdpa")  # no scores to hand over: they are formed from Q/K, which the counter sees
    assert flops([Tap("scores", 2), Tap("hidden", 3)]) == flops([Tap("hidden", 3)]) + 2 * 3 * 4 * 10 * 10 * 16


def test_one_module_cannot_hand_its_scores_to_two_captures_at_once():
    model = tiny_model("bert")
    set_attention(model, MATMUL)
    with capture(model, [Tap("scores", 1)]):
        with pytest.raises(ModelError, match="already being captured"):
            with capture(model, [Tap("scores", 1)]):
                pass
    assert not attention._score_listeners
