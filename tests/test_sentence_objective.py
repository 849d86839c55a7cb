"""The `sentence` objective against plain loops written here: mean-pooled (padding left out)
or first-token embeddings, 1 - cos per text and the MSE of the batch's off-diagonal cosine
matrices, through the learned projection; and `student.dropout`, used while distilling and
given back before the student is saved."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoConfig

from tadistill.taps import Tap
from test_method_options import MASK, STUDENT, TEACHER, build, linear, random_step


def plain_sentence_loss(student_states, teacher_states, mask, pooling, similarity_weight):
    def pool(states, b):
        if pooling == "cls":
            return states[b, 0]
        rows = [states[b, i] for i in range(states.shape[1]) if mask[b, i]]
        return torch.stack(rows).mean(0)

    batch = mask.shape[0]
    s = [pool(student_states, b) for b in range(batch)]
    t = [pool(teacher_states, b) for b in range(batch)]
    cos = lambda x, y: (x @ y) / (x.norm() * y.norm())  # noqa: E731
    cosine = sum(1 - cos(s[b], t[b]) for b in range(batch)) / batch
    pairs = [(i, j) for i in range(batch) for j in range(batch) if i != j]
    similarity = sum((cos(s[i], s[j]) - cos(t[i], t[j])) ** 2 for i, j in pairs) / len(pairs)
    return cosine + similarity_weight * similarity, cosine, similarity


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_sentence_loss_matches_plain_loops_through_the_projection(pooling):
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    step = random_step(mask=mask)
    objectives = build("sentence", {"pooling": pooling, "similarity_weight": 0.5})
    (objective,) = objectives.objectives
    loss = objective(step)
    student = linear(objective.projection, step.student[Tap("hidden", STUDENT.layers)])
    expected, cosine, similarity = plain_sentence_loss(student, step.teacher[Tap("hidden", TEACHER.layers)], mask,
                                                       pooling, 0.5)
    assert loss.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.parts["cosine"].item() == pytest.approx(cosine.item(), rel=1e-5)
    assert loss.parts["similarity"].item() == pytest.approx(similarity.item(), rel=1e-5, abs=1e-7)
    (grad,) = torch.autograd.grad(loss.total, step.student[Tap("hidden", STUDENT.layers)])
    assert grad[1, 3:].abs().max() == 0 if pooling == "mean" else grad[:, 1:].abs().max() == 0  # unread tokens


def test_padding_content_does_not_change_the_mean_pooled_loss():
    step = random_step()
    objectives = build("sentence", {})
    value = objectives.objectives[0](step).total
    step.student[Tap("hidden", STUDENT.layers)].data[1, 3:] = 1e3
    step.teacher[Tap("hidden", TEACHER.layers)][1, 3:] = -1e3
    assert objectives.objectives[0](step).total.item() == pytest.approx(value.item(), rel=1e-6)
    assert MASK[1, 3:].sum() == 0


def test_a_batch_of_one_has_no_similarity_term():
    step = random_step(mask=torch.ones(1, 4, dtype=torch.long))
    loss = build("sentence", {}).objectives[0](step)
    assert loss.parts["similarity"].item() == 0.0 and math.isfinite(loss.total.item())


def test_bad_sentence_options_are_reported():
    from tadistill.objectives import objective_problems
    from tiny import objective_configs

    for options, key in (({"pooling": "max"}, "pooling"), ({"similarity_weight": -1.0}, "similarity_weight")):
        (problem,) = objective_problems(objective_configs([("sentence", 1.0, options)]), teacher=TEACHER,
                                        student=STUDENT, teacher_has_lm_head=False)
        assert problem.key.endswith(key), problem


def test_student_dropout_is_used_while_distilling_and_restored_before_saving(bert_teacher):
    from tadistill.config import StudentConfig
    from tadistill.models import load_teacher, make_student, restore_dropout, student_problems

    teacher = load_teacher(str(bert_teacher)).model
    student = make_student(teacher, StudentConfig(layers=1, dropout=0.0), seed=0)
    assert student.config.hidden_dropout_prob == 0.0 and student.config.attention_probs_dropout_prob == 0.0
    assert all(m.p == 0.0 for m in student.modules() if isinstance(m, torch.nn.Dropout))
    restore_dropout(student, teacher)
    assert student.config.hidden_dropout_prob == AutoConfig.from_pretrained(bert_teacher).hidden_dropout_prob
    (problem,) = student_problems(StudentConfig(dropout=1.5), teacher.config)
    assert problem.key == "student.dropout" and "[0, 1)" in problem.message
