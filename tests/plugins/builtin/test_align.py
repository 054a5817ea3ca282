"""align plugin: zero loss for identical models, EMA arithmetic, metrics, teacher in checkpoints."""

from __future__ import annotations

import pytest
import torch

from apt.plugins.builtin.align import AlignPlugin, alignment_loss
from apt.plugins.builtin.moe import upcycle_model
from apt.providers.router import TopKRouter
from apt.schedule import Schedule

from ._helpers import RecordingTrainer, batch, tiny_model


@pytest.mark.parametrize("metric", ["kl", "cosine", "l2"])
def test_alignment_loss_is_zero_when_student_equals_teacher(metric):
    logits = torch.randn(2, 5, 11)
    assert float(alignment_loss(logits, logits.clone(), metric=metric, tau=2.0)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(alignment_loss(logits, torch.randn(2, 5, 11), metric=metric)) > 1e-3


def test_kl_matches_its_definition():
    s, t, tau = torch.randn(3, 4, 7), torch.randn(3, 4, 7), 2.0
    p_t = torch.softmax(t / tau, -1)
    ref = (p_t * (p_t.log() - torch.log_softmax(s / tau, -1))).sum(-1).mean() * tau**2
    torch.testing.assert_close(alignment_loss(s, t, metric="kl", tau=tau), ref)


def _step(plugin, model, opt, trainer, x, y, schedule=None, step=1):
    opt.zero_grad()
    plugin.on_batch_begin(batch=(x, y), model=model, step=step)
    logits, loss = model(x, y)
    trainer.losses.clear()
    plugin.on_batch_end(
        batch=(x, y),
        outputs=(logits, loss),
        trainer=trainer,
        model=model,
        schedule=schedule,
        step=step,
    )
    (loss + sum(trainer.losses.values())).backward()
    opt.step()
    plugin.on_optimizer_step(model=model)


def test_first_step_loss_is_zero_and_teacher_follows_by_ema():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({"beta": 0.9, "alpha": 0.5})
    assert plugin.validate_config()
    x, y = batch()
    before = [p.detach().clone() for p in model.parameters()]
    _step(plugin, model, opt, trainer, x, y)
    assert trainer.losses["align"].item() == pytest.approx(0.0, abs=1e-6)  # teacher == student
    for t, p0, p1 in zip(plugin.teacher.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * p0 + 0.1 * p1.detach())
    assert not any(p.requires_grad for p in plugin.teacher.parameters())
    _step(plugin, model, opt, trainer, x, y, step=2)
    assert trainer.losses["align"].item() > 0  # the student moved away from the EMA
    plugin.on_epoch_end(trainer=trainer)
    assert trainer.metrics["align/alpha"] == 0.5 and trainer.metrics["align/loss"] > 0


def test_alpha_follows_the_schedule_and_hidden_metric_works():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    sched = Schedule({"align_alpha": {"start": 0.0, "end": 1.0, "by": "step"}}, max_steps=3)
    sched.step = 2
    plugin = AlignPlugin({"outputs": "hidden", "metric": "cosine"})
    x, y = batch()
    _step(plugin, model, opt, trainer, x, y, schedule=sched)
    _step(plugin, model, opt, trainer, x, y, schedule=sched)
    assert plugin.current_alpha(sched) == 0.5
    assert trainer.losses["align"].item() > 0
    plugin.teardown()


def test_teacher_is_retaken_when_the_layout_changes():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({})
    x, y = batch()
    _step(plugin, model, opt, trainer, x, y)
    upcycle_model(
        model,
        lambda d, e, k: TopKRouter(d, e, top_k=k),
        num_experts=2,
        top_k=2,
        capacity_factor=4.0,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _step(plugin, model, opt, trainer, x, y, step=2)
    assert set(plugin.teacher.state_dict()) == set(model.state_dict())


def test_teacher_weights_survive_a_checkpoint():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({"beta": 0.5})
    x, y = batch()
    for s in (1, 2, 3):
        _step(plugin, model, opt, trainer, x, y, step=s)
    state = plugin.state_dict()
    resumed = AlignPlugin({"beta": 0.5})
    resumed.load_state_dict(state)
    assert resumed.teacher is None and resumed.updates == 3
    trainer2 = RecordingTrainer(model, opt)
    model_copy = tiny_model(seed=9)
    model_copy.load_state_dict(model.state_dict())
    logits, loss = model_copy(x, y)
    resumed.on_batch_end(
        batch=(x, y), outputs=(logits, loss), trainer=trainer2, model=model_copy, step=4
    )
    logits, loss = model(x, y)
    plugin.on_batch_end(batch=(x, y), outputs=(logits, loss), trainer=trainer, model=model, step=4)
    torch.testing.assert_close(trainer2.losses["align"], trainer.losses["align"])


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"beta": 1.0}, "beta"),
        ({"alpha": -1}, "alpha"),
        ({"tau_align": 0}, "tau_align"),
        ({"metric": "js"}, "metric='js'"),
        ({"outputs": "attn"}, "outputs='attn'"),
    ],
)
def test_config_errors(cfg, needle):
    with pytest.raises(ValueError, match=needle):
        AlignPlugin(cfg).validate_config()
