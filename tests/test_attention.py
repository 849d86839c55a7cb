"""train.attention: the matmul kernel against SDPA and a plain softmax(QK^T)V, and how the recipe applies it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface, AutoModel, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from tadistill.attention import MATMUL, matmul_attention, resolve_attention, restore_attention, set_attention, use_attention
from tadistill.cli import main
from tadistill.config import ObjectiveConfig
from tadistill.models import shape_of
from tadistill.objectives import build_objectives
from tadistill.errors import ModelError
from tiny import make_sentences

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def tiny_bert(dropout: float = 0.0) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=dropout)
    return BertModel(config).eval()


def padded_batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    input_ids = torch.randint(5, 120, (3, 9))
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 5:] = 0
    attention_mask[2, 2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def reference_attention(q, k, v, keep):
    """softmax(q k^T / sqrt(d)) v with padded keys left out, per sequence and head; (B, H, n, d) in."""
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        n_real = int(keep[b].sum())
        for h in range(q.shape[1]):
            scores = q[b, h] @ k[b, h, :n_real].T / q.shape[-1] ** 0.5  # (n, n_real)
            out[b, h] = torch.softmax(scores, dim=-1) @ v[b, h, :n_real]
    return out


def test_the_kernel_equals_a_plain_softmax_attention_with_padding():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, dtype=torch.float64) for _ in range(3))
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    mask = keep[:, None, None, :].expand(2, 1, 6, 6)  # SDPA's boolean mask, (B, 1, n_q, n_k)
    out, probs = matmul_attention(torch.nn.Identity().eval(), q, k, v, mask)
    assert out.shape == (2, 6, 3, 4)  # (B, n, H, d), as transformers' attention functions return
    torch.testing.assert_close(out.transpose(1, 2), reference_attention(q, k, v, keep), rtol=0, atol=1e-12)
    assert probs[1, :, :, 3:].abs().max() == 0  # padded keys get no weight


def test_an_all_masked_row_stays_finite():
    q, k, v = (torch.randn(1, 2, 4, 4) for _ in range(3))
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)  # a sequence with no real token
    out, _ = matmul_attention(torch.nn.Identity().eval(), q, k, v, mask)
    assert torch.isfinite(out).all()


def test_an_additive_mask_is_added():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 4, dtype=torch.float64) for _ in range(3))
    keep = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    additive = torch.zeros(1, 1, 4, 4, dtype=torch.float64).masked_fill(~keep[:, None, None, :], -1e9)
    out, _ = matmul_attention(torch.nn.Identity().eval(), q, k, v, additive)
    torch.testing.assert_close(out.transpose(1, 2), reference_attention(q, k, v, keep), rtol=0, atol=1e-12)


def test_a_model_on_the_kernel_equals_sdpa_in_float64_with_gradients():
    batch = padded_batch()
    keep = batch["attention_mask"].bool()
    outputs, grads = {}, {}
    for implementation in ("sdpa", MATMUL):
        model = tiny_bert().double()  # float64: the two kernels differ by rounding only
        set_attention(model, implementation)
        hidden = model(**batch).last_hidden_state  # (B, n, h)
        hidden[keep].pow(2).sum().backward()
        outputs[implementation] = hidden[keep].detach()
        grads[implementation] = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outputs[MATMUL], outputs["sdpa"], rtol=0, atol=1e-12)
    assert grads[MATMUL].keys() == grads["sdpa"].keys()
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grads[MATMUL][name], grad, rtol=0, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_under_bf16_autocast_the_kernel_stays_close_to_fp32():
    batch = padded_batch()
    keep = batch["attention_mask"].bool()
    model = tiny_bert()
    reference = model(**batch).last_hidden_state[keep]
    set_attention(model, MATMUL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(**batch).last_hidden_state[keep]
    assert (hidden.float() - reference).abs().max() < 5e-2


def test_attention_dropout_applies_in_training_only():
    batch = padded_batch()
    model = tiny_bert(dropout=0.5)
    set_attention(model, MATMUL)
    first, second = (model(**batch).last_hidden_state for _ in range(2))
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    first = model(**batch).last_hidden_state
    torch.manual_seed(1)
    assert not torch.allclose(first, model(**batch).last_hidden_state)


def test_distilbert_switches_too():
    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64)).eval()
    batch = padded_batch()
    reference = model(**batch).last_hidden_state
    assert set_attention(model, MATMUL) == "sdpa"
    keep = batch["attention_mask"].bool()
    torch.testing.assert_close(model(**batch).last_hidden_state[keep], reference[keep], rtol=0, atol=1e-6)


def test_auto_picks_matmul_on_cpu_in_bf16_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_attention("auto", cpu, "bf16") == MATMUL
    assert resolve_attention("auto", cpu, "no") is None
    assert resolve_attention("auto", cuda, "bf16") is None
    assert resolve_attention("matmul", cuda, "no") == MATMUL
    assert resolve_attention("sdpa", cpu, "bf16") == "sdpa"


def test_set_and_restore_round_trip():
    model = tiny_bert()
    previous = set_attention(model, MATMUL)
    assert (previous, model.config._attn_implementation) == ("sdpa", MATMUL)
    assert set_attention(model, None) == MATMUL  # None leaves the model as it is
    restore_attention(model, previous)
    assert model.config._attn_implementation == "sdpa"


def test_a_model_that_cannot_switch_gets_a_clear_error():
    class Fixed(torch.nn.Module):
        config = BertConfig()

        def set_attn_implementation(self, implementation):  # as transformers does for such models: a warning
            pass

    with pytest.raises(ModelError, match="train.attention"):
        set_attention(Fixed(), MATMUL)
    fixed = Fixed()
    own = fixed.config._attn_implementation
    assert set_attention(fixed, MATMUL, strict=False) == own  # auto: it keeps its own kernel, no error
    assert fixed.config._attn_implementation == own


def test_the_switched_model_runs_the_kernel_in_every_layer():
    calls = []

    def counting(module, *args, **kwargs):
        calls.append(module)
        return matmul_attention(module, *args, **kwargs)

    model = tiny_bert()
    set_attention(model, MATMUL)
    AttentionInterface.register(MATMUL, counting)
    try:
        model(**padded_batch())
    finally:
        AttentionInterface.register(MATMUL, matmul_attention)
    assert calls == [layer.attention.self for layer in model.encoder.layer]


def test_an_unknown_choice_is_refused_before_any_compute(bert_teacher, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(20, seed=0)) + "\n")
    code = main(["distill", str(CONFIGS / "minilmv2.yaml"), "--output", str(tmp_path / "run"),
                 "--set", f"teacher.path={bert_teacher}", "--set", f"data.sources.0.path={corpus}",
                 "--set", "train.attention=matmal"])
    assert code != 0
    err = capsys.readouterr().err
    assert "train.attention" in err and "matmal" in err and "matmul" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_recipe_trains_on_the_chosen_kernel_and_saves_the_student_on_its_own(bert_teacher, tmp_path):
    """bf16 on CPU: sdpa and matmul are different roundings of the same step, so the two students
    differ a little: the key took effect, on the same training."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(60, seed=0, min_words=6, max_words=30)) + "\n")
    students = {}
    for choice in ("sdpa", "matmul"):
        run = tmp_path / choice
        assert main(["distill", str(CONFIGS / "minilmv2.yaml"), "--output", str(run),
                     "--set", f"teacher.path={bert_teacher}", "--set", f"data.sources.0.path={corpus}",
                     "--set", "train.max_steps=3", "--set", "train.warmup_steps=0",
                     "--set", "train.mixed_precision=bf16", "--set", f"train.attention={choice}"]) == 0
        students[choice] = AutoModel.from_pretrained(run / "student")
    differences = [
        (a - b).abs().max().item()
        for a, b in zip(students["sdpa"].state_dict().values(), students["matmul"].state_dict().values())
    ]
    assert 0 < max(differences) < 0.05


def test_tinybert_reads_the_kernels_scores_once_the_models_run_matmul():
    """The distill recipe switches the kernels, then builds the objectives from the models' shapes:
    on matmul (auto's pick on CPU in bf16) tinybert's auto kernel reads the kernel's scores."""
    teacher, student = tiny_bert(), tiny_bert()
    config = [ObjectiveConfig("tinybert", 1.0, {})]

    def kernel() -> str:
        (tinybert,) = build_objectives(config, teacher=shape_of(teacher), student=shape_of(student)).objectives
        return tinybert.kernel

    assert kernel() == "fused"  # SDPA forms no scores to hand over
    for model in (teacher, student):
        use_attention(model, "auto", torch.device("cpu"), "bf16")
    assert shape_of(student).kernel_scores and kernel() == "scores"
