"""align plugin: loss arithmetic, EMA, a teacher that follows the student (MoE, temperature), resume."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import yaml

from apt.plugins.builtin.align import AlignOptions, AlignPlugin, alignment_loss
from apt.plugins.builtin.moe import MoEPlugin
from apt.schedule import Schedule
from tests.helpers import CONF

from ._helpers import RecordingTrainer, batch, tiny_model


def test_conf_file_lists_every_option_with_its_default():
    section = yaml.safe_load((CONF / "plugin" / "align.yaml").read_text())["align"]
    assert section.pop("_target_") == "apt.plugins.builtin.align.AlignPlugin"
    assert section == asdict(AlignOptions())


@pytest.mark.parametrize("metric", ["kl", "cosine", "l2"])
def test_alignment_loss_is_zero_when_student_equals_teacher(metric):
    logits = torch.randn(2, 5, 11)
    assert float(alignment_loss(logits, logits.clone(), metric=metric, tau=2.0)) == pytest.approx(0.0, abs=1e-6)
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
    plugin.on_batch_end(batch=(x, y), outputs=(logits, loss), trainer=trainer, model=model, schedule=schedule,
                        step=step)
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
    teacher = plugin.teacher.module
    for t, p0, p1 in zip(teacher.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * p0 + 0.1 * p1.detach())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
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


def test_teacher_is_built_from_a_student_holding_graph_tensors_without_its_hooks():
    """An upcycled student after a training forward, a layer keeping a non-leaf tensor, a
    forward hook of another plugin: none of it may break or leak into the teacher."""
    model = tiny_model()
    MoEPlugin({"num_experts": 2, "top_k": 2}).upcycle(model)
    x, y = batch()
    logits, loss = model(x, y)  # training forward: routers' outputs are part of the graph
    model.blocks[0].attn.last_scores = logits * 2  # a third-party layer keeping a graph tensor
    calls = []
    model.norm_f.register_forward_hook(lambda *a: calls.append(1))
    plugin = AlignPlugin({})
    plugin.on_batch_begin(model=model, step=1)
    teacher = plugin.teacher.module
    assert set(teacher.state_dict()) == set(model.state_dict())
    assert not teacher.blocks[0].attn.last_scores.requires_grad
    teacher(x)
    assert calls == []
    loss.backward()  # the student's graph is intact


def test_upcycling_after_align_started_keeps_the_ema_of_unchanged_tensors():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({"beta": 0.5})
    x, y = batch()
    for s in (1, 2):
        _step(plugin, model, opt, trainer, x, y, step=s)
    ema_wte = plugin.teacher.module.wte.weight.clone()
    assert not torch.equal(ema_wte, model.wte.weight)
    MoEPlugin({"num_experts": 2, "top_k": 2}).upcycle(model, opt)
    plugin.on_batch_begin(model=model, step=3)  # the next batch sees the new layout
    teacher = plugin.teacher.module
    assert set(teacher.state_dict()) == set(model.state_dict())
    assert torch.equal(teacher.wte.weight, ema_wte)  # unchanged tensors keep their EMA
    expert = teacher.blocks[0].ffn.experts[1]
    assert torch.equal(expert.c_fc.weight, model.blocks[0].ffn.experts[1].c_fc.weight)  # new ones: the student's
    _step(plugin, model, opt, trainer, x, y, step=3)
    assert trainer.losses["align"].item() > 0


def _moe_student():
    model = tiny_model()
    moe = MoEPlugin({"num_experts": 2, "top_k": 2, "temperature_from": "route_temp"})
    moe.upcycle(model)
    return model, moe


def test_teacher_routers_follow_the_students_temperature_and_it_is_checkpointed():
    model, moe = _moe_student()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({})
    x, y = batch()
    _step(plugin, model, opt, trainer, x, y, step=1)
    sched = Schedule({"route_temp": {"start": 2.0, "end": 0.5, "by": "step"}}, max_steps=4)
    sched.step = 4
    moe.on_step_begin(model=model, schedule=sched, step=4)  # the student anneals to 0.5
    _step(plugin, model, opt, trainer, x, y, step=2)
    routers = [b.ffn.router for b in plugin.teacher.module.blocks]
    assert [r.temperature for r in routers] == pytest.approx([0.5, 0.5])
    teacher_state = plugin.state_dict()["teacher"]
    assert teacher_state["blocks.0.ffn.router.temp"].item() == pytest.approx(0.5)


def test_a_resumed_teacher_equals_the_uninterrupted_one():
    model, moe = _moe_student()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = RecordingTrainer(model, opt)
    plugin = AlignPlugin({"beta": 0.5})
    x, y = batch()
    for s in (1, 2, 3):
        for r in (b.ffn.router for b in model.blocks):
            r.temperature = 1.0 + s  # annealed by a schedule, say
        _step(plugin, model, opt, trainer, x, y, step=s)
    state = plugin.state_dict()
    resumed = AlignPlugin({"beta": 0.5})
    resumed.load_state_dict(state)
    assert resumed.teacher is None and resumed.updates == 3
    copy_of_student = tiny_model(seed=9)
    MoEPlugin({"num_experts": 2, "top_k": 2}).upcycle(copy_of_student)
    copy_of_student.load_state_dict(model.state_dict())
    trainer2 = RecordingTrainer(copy_of_student, opt)
    logits, loss = copy_of_student(x, y)
    resumed.on_batch_end(batch=(x, y), outputs=(logits, loss), trainer=trainer2, model=copy_of_student, step=4)
    logits, loss = model(x, y)
    plugin.on_batch_end(batch=(x, y), outputs=(logits, loss), trainer=trainer, model=model, step=4)
    torch.testing.assert_close(trainer2.losses["align"], trainer.losses["align"])
    for a, b in zip(resumed.teacher.module.state_dict().values(), plugin.teacher.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"beta": 1.0}, "beta"),
        ({"alpha": -1}, "alpha"),
        ({"tau_align": 0}, "tau_align"),
        ({"metric": "js"}, "metric='js'"),
        ({"outputs": "attn"}, "outputs='attn'"),
        ({"tau": 2.0}, "unknown option 'tau'"),
    ],
)
def test_config_errors(cfg, needle):
    with pytest.raises(ValueError, match=needle):
        AlignPlugin(cfg).validate_config()
