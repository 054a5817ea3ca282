"""Conditions at their boundaries: epochs and steps count from 1."""

import pytest

from apt.plugins import (
    Condition,
    after_epoch,
    after_step,
    all_of,
    any_of,
    before_epoch,
    before_step,
    every_n_epochs,
    every_n_steps,
)


def fired(cond, key="epoch", upto=12):
    return [i for i in range(1, upto + 1) if cond(**{key: i})]


def test_every_n_epochs_fires_at_multiples_from_n():
    assert fired(every_n_epochs(5)) == [5, 10]
    assert fired(every_n_epochs(1), upto=3) == [1, 2, 3]
    assert not every_n_epochs(5)(epoch=0)


def test_after_and_before_epoch_boundaries():
    assert fired(after_epoch(10)) == [10, 11, 12]
    assert fired(before_epoch(3)) == [1, 2]
    assert fired(after_epoch(0), upto=2) == [1, 2]
    assert fired(before_epoch(1), upto=3) == []


def test_step_conditions():
    assert fired(every_n_steps(4), key="step") == [4, 8, 12]
    assert fired(after_step(11), key="step") == [11, 12]
    assert fired(before_step(2), key="step") == [1]


def test_missing_keyword_is_false_and_extra_keywords_are_ignored():
    assert not every_n_epochs(1)(step=5)
    assert not after_epoch(0)()
    assert every_n_epochs(2)(epoch=2, step=7, trainer=None, model=object())


def test_composition_operators():
    both = after_epoch(2) & every_n_epochs(2)
    assert fired(both, upto=6) == [2, 4, 6]
    either = before_epoch(2) | every_n_epochs(5)
    assert fired(either, upto=10) == [1, 5, 10]
    assert fired(~before_epoch(11)) == [11, 12]
    assert "after_epoch(2)" in repr(both) and "&" in repr(both)


def test_plain_callables_compose_on_either_side():
    is_odd = lambda epoch=None, **_: epoch % 2 == 1  # noqa: E731
    assert fired(after_epoch(8) & is_odd) == [9, 11]
    assert fired(is_odd & after_epoch(8)) == [9, 11]
    assert fired(any_of(is_odd, every_n_epochs(4)), upto=8) == [1, 3, 4, 5, 7, 8]
    assert fired(all_of(is_odd, before_epoch(4), Condition(lambda **kw: True))) == [1, 3]


@pytest.mark.parametrize("factory", [every_n_epochs, every_n_steps])
@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_periodic_conditions_reject_non_positive(factory, bad):
    with pytest.raises(ValueError, match=repr(bad)):
        factory(bad)


def test_thresholds_reject_negative():
    with pytest.raises(ValueError, match="after_epoch"):
        after_epoch(-1)
    with pytest.raises(TypeError):
        Condition(42)
