"""Whole-split evaluation: window layout, standard error, bits per byte, and a trained model
scored by hand against the trainer's final val loss and ``python -m apt.evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apt.app import ConfigProblems, run
from apt.checks import check_run
from apt.training.evaluation import (
    Evaluator,
    WindowLosses,
    eval_windows,
    parse_eval_tokens,
)

REPO = Path(__file__).resolve().parents[2]

# A hand-made corpus with 1-, 2-, 3- and 4-byte characters, so bits per byte differ from
# nats / ln 2 per token.
WORDS = ["the", "café", "costs", "3€", "—", "naïve", "cat", "sat", "on", "😀", "mat", "and", "a", "dog"]
_rng = np.random.default_rng(0)
CORPUS = "\n".join(" ".join(_rng.choice(WORDS, size=9)) for _ in range(220)) + "\n"


# -- windows and statistics -----------------------------------------------------------------
def test_whole_split_windows_score_every_target_once():
    w = eval_windows(100, 8)
    assert len(w) == 13 and w.tokens == 99  # 12 full windows and the last 3 targets
    assert list(w.lengths[-2:]) == [8, 3] and w.starts[-1] == 96
    covered = np.concatenate([np.arange(s + 1, s + 1 + n) for s, n in zip(w.starts, w.lengths, strict=True)])
    np.testing.assert_array_equal(np.sort(covered), np.arange(1, 100))
    short = eval_windows(5, 8)  # a split shorter than one block: one short window
    assert list(short.starts) == [0] and list(short.lengths) == [4]
    with pytest.raises(ValueError, match="nothing to score"):
        eval_windows(1, 8)


def test_token_budget_and_periodic_subset_are_evenly_spread_and_nested():
    w = eval_windows(100, 8, max_tokens=40)
    assert list(w.starts) == [0, 16, 32, 56, 72] and set(w.lengths) == {8}  # 5 of 12, spread
    assert eval_windows(100, 8, max_tokens=3).tokens == 8  # at least one window
    assert eval_windows(100, 8, max_tokens=99).tokens == 99  # the whole split
    full = eval_windows(100, 8)
    index = full.subset_index(4)
    assert list(full.starts[index]) == [0, 24, 48, 72]  # full windows only, never the short one
    assert full.subset_index(13) is None and len(full.take(None)) == 13


def test_parse_eval_tokens():
    assert parse_eval_tokens("all") is None and parse_eval_tokens(5000) == 5000
    for bad in (0, -3, "some", 1.5, True):
        with pytest.raises(ValueError, match="'all' or a positive token count"):
            parse_eval_tokens(bad)


def test_standard_error_is_over_contiguous_blocks_of_windows():
    # 40 equal windows: 20 blocks of 2 neighbours, the standard error of the mean of block means
    rng = np.random.default_rng(3)
    nll = rng.uniform(100, 200, size=40)
    res = WindowLosses(nll, np.full(40, 64), None).result()
    blocks = nll.reshape(20, 2).sum(1) / 128
    assert res.loss == pytest.approx(nll.sum() / (40 * 64))
    assert res.se == pytest.approx(blocks.std(ddof=1) / math.sqrt(20))
    # 45 windows: blocks of 3, 3, 3, 3, 3, then 2 (np.array_split), by the ratio formula
    nll = rng.uniform(100, 200, size=45)
    sizes = [3] * 5 + [2] * 15
    edges = np.cumsum([0, *sizes])
    L = np.array([nll[a:b].sum() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    n = np.array(sizes) * 64.0
    loss = nll.sum() / (45 * 64)
    expected = math.sqrt(20 / 19 * ((L - loss * n) ** 2).sum()) / (45 * 64)
    assert WindowLosses(nll, np.full(45, 64), None).result().se == pytest.approx(expected)
    # up to 20 windows: one block each; equal windows give std(window means) / sqrt(W)
    nll = np.array([8.0, 12.0, 10.0, 6.0])
    res = WindowLosses(nll, np.full(4, 4), np.full(4, 6)).result()
    means = nll / 4
    assert res.loss == pytest.approx(means.mean())
    assert res.se == pytest.approx(means.std(ddof=1) / 2)
    assert res.bpb == pytest.approx(nll.sum() / math.log(2) / 24)
    assert (res.tokens, res.windows) == (16, 4)
    # a short last window: the ratio estimator, by hand
    nll, n = np.array([8.0, 12.0, 3.0]), np.array([4, 4, 2])
    res = WindowLosses(nll, n, None).result()
    loss = 23.0 / 10
    resid = nll - loss * n
    assert res.loss == pytest.approx(loss)
    assert res.se == pytest.approx(math.sqrt(3 / 2 * (resid ** 2).sum()) / 10)
    assert res.bpb is None
    one = WindowLosses(np.array([2.0]), np.array([4]), None).result()
    assert one.se is None  # no spread from a single window
    sub = WindowLosses(np.array([8.0, 12.0, 10.0]), np.full(3, 4), None).result(np.array([0, 2]))
    assert sub.loss == pytest.approx(18.0 / 8) and sub.tokens == 8


def test_evaluator_matches_a_uniform_model_and_is_batch_independent():
    V = 7
    tokens = np.random.default_rng(1).integers(0, V, size=203).astype(np.uint16)

    def uniform(x, y):  # logits (B, T, V) all equal: every target costs ln V
        return torch.zeros(*x.shape, V), None

    res = Evaluator(tokens, block_size=16, batch_size=5, token_bytes=np.full(V, 2)).run(
        uniform, eval_windows(203, 16)).result()
    assert res.loss == pytest.approx(math.log(V)) and res.tokens == 202
    assert res.bpb == pytest.approx(math.log(V) / math.log(2) / 2)

    model = torch.nn.Sequential(torch.nn.Embedding(V, 8), torch.nn.Linear(8, V))
    forward = lambda x, y: (model(x), None)  # noqa: E731
    a = Evaluator(tokens, block_size=16, batch_size=1).run(forward, eval_windows(203, 16))
    b = Evaluator(tokens, block_size=16, batch_size=6).run(forward, eval_windows(203, 16))
    np.testing.assert_allclose(a.nll, b.nll, rtol=1e-6)


# -- a trained model, scored by hand ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from apt.compose import compose

    tmp = tmp_path_factory.mktemp("evaluation")
    path = tmp / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    cfg = compose(["model=tiny", "trainer=debug", "optim.warmup_steps=2", "data=text", f"data.path={path}",
                   "data.tokenizer=char", f"data.cache_dir={tmp / 'cache'}", "data.block_size=32",
                   "data.batch_size=4", "data.test_fraction=0.05", "trainer.eval_test=true",
                   "trainer.max_steps=40", "trainer.eval_every=20", "trainer.eval_batches=2",
                   "optim.optimizer.lr=3e-3"])
    out = tmp / "run"
    val = run(cfg, out_dir=out)
    summary = json.loads((out / "summary.json").read_text())
    return {"path": path, "out": out, "val": val, "summary": summary,
            "ckpt": out / "checkpoints" / "step-00000040.pt"}


def _by_hand(ckpt: Path, text: str) -> dict[str, float]:
    """Every window of a text, one at a time: total NLL, targets, bytes, window sums."""
    from apt.loading import load_model

    model, tok, _ = load_model(str(ckpt))
    ids = torch.tensor(tok.encode(text).astype(np.int64))
    T, nlls, counts = 32, [], []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            chunk = ids[start:start + T + 1]
            logits, _ = model(chunk[None, :-1])
            logp = torch.log_softmax(logits[0].double(), dim=-1)
            nll = -sum(float(logp[i, chunk[i + 1]]) for i in range(len(chunk) - 1))
            nlls.append(nll)
            counts.append(len(chunk) - 1)
    return {"nll": np.array(nlls), "n": np.array(counts), "bytes": len(text[1:].encode("utf-8"))}


def _val_and_test_text() -> tuple[str, str]:
    n = len(CORPUS)  # char tokenizer: one id per character
    n_val, n_test = int(n * 0.1), int(n * 0.05)
    return CORPUS[n - n_test - n_val:n - n_test], CORPUS[n - n_test:]


def test_final_val_loss_is_the_whole_split_scored_by_hand(trained):
    val_text, _ = _val_and_test_text()
    hand = _by_hand(trained["ckpt"], val_text)
    loss = hand["nll"].sum() / hand["n"].sum()
    s = trained["summary"]
    assert s["val_loss"] == pytest.approx(loss, abs=1e-4) and trained["val"] == s["val_loss"]
    assert s["val_tokens"] == len(val_text) - 1 == hand["n"].sum()
    assert s["val_bpb"] == pytest.approx(hand["nll"].sum() / math.log(2) / hand["bytes"], abs=1e-4)
    assert s["val_bpb"] < loss / math.log(2)  # multi-byte characters: fewer bits per byte than per token
    # batch means: the windows in order, in 20 contiguous blocks
    blocks = np.array_split(np.arange(len(hand["n"])), 20)
    resid = np.array([hand["nll"][b].sum() - loss * hand["n"][b].sum() for b in blocks])
    assert len(hand["n"]) > 20 and s["val_loss_se"] == pytest.approx(
        math.sqrt(20 / 19 * (resid ** 2).sum()) / hand["n"].sum(), rel=1e-3)


def test_periodic_evaluations_use_a_fixed_subset_and_the_final_one_the_whole_split(trained):
    import csv

    with (trained["out"] / "metrics.csv").open() as fh:
        rows = {int(r["step"]): r for r in csv.DictReader(fh) if r["val_loss"]}
    # eval_every=20 divides max_steps=40: step 40 still gets the whole-split evaluation
    assert sorted(rows) == [20, 40]
    assert int(rows[20]["val_tokens"]) == 2 * 4 * 32  # eval_batches x batch_size windows
    assert int(rows[40]["val_tokens"]) == trained["summary"]["val_tokens"]
    assert float(rows[40]["val_loss_se"]) == pytest.approx(trained["summary"]["val_loss_se"], rel=1e-5)
    s = trained["summary"]
    assert s["best_val_tokens"] == 256 and s["best_step"] == 40  # the best is tracked on the subset
    assert s["final_eval_time_s"] > 0 and s["eval_time_s"] >= s["final_eval_time_s"]


def test_test_split_is_scored_on_request(trained):
    _, test_text = _val_and_test_text()
    hand = _by_hand(trained["ckpt"], test_text)
    s = trained["summary"]
    assert s["test_tokens"] == len(test_text) - 1
    assert s["test_loss"] == pytest.approx(hand["nll"].sum() / hand["n"].sum(), abs=1e-4)


def test_evaluate_cli_prints_the_runs_loss_as_one_json_line(trained, capsys):
    from apt.evaluate import main

    assert main([f"ckpt={trained['ckpt']}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    line = json.loads(out[0])
    s = trained["summary"]
    assert list(line) == ["loss", "se", "tokens", "bpb", "split"] and line["split"] == "val"
    assert line["loss"] == pytest.approx(s["val_loss"], abs=1e-6) and line["tokens"] == s["val_tokens"]
    assert line["se"] == pytest.approx(s["val_loss_se"], rel=1e-5)
    assert line["bpb"] == pytest.approx(s["val_bpb"], rel=1e-5)
    assert main([f"ckpt={trained['ckpt']}", "split=test", "eval_tokens=64"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["split"] == "test" and test["tokens"] == 64


@pytest.mark.parametrize(("args", "status", "message"), [
    (["split=train"], 2, "unknown split 'train'; valid: ['val', 'test']"),
    (["data.test_fraction=0.2"], 2, "re-splits the run's own data"),
    (["data.colour=red"], 2, "unknown data option(s) ['colour']"),
    (["colour=red"], 2, "unknown option(s) ['colour']"),
    (["eval_tokens=some"], 2, "trainer.eval_tokens must be 'all' or a positive token count"),
])
def test_evaluate_cli_rejects_bad_options(trained, capsys, args, status, message):
    from apt.evaluate import main

    assert main([f"ckpt={trained['ckpt']}", *args]) == status
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == \
        [line for line in captured.err.splitlines() if "error" in line][:1]


def test_evaluate_cli_rejects_missing_and_foreign_checkpoints(tmp_path, capsys):
    from apt.evaluate import main

    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for path, message in ((tmp_path / "nope.pt", "does not exist"), (tmp_path / "other.pt", "not an APT checkpoint")):
        assert main([f"ckpt={path}"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("error: ") and message in captured.err


def test_evaluate_cli_refuses_a_test_split_the_run_never_held_out(tmp_path, capsys, cfg_factory):
    from apt.evaluate import main

    out = tmp_path / "run"
    run(cfg_factory("trainer.max_steps=2"), out_dir=out)
    assert main([f"ckpt={out / 'checkpoints' / 'step-00000002.pt'}", "split=test"]) == 2
    captured = capsys.readouterr()
    assert "the run had data.test_fraction=0" in captured.err and captured.out == ""


def validate(cfg) -> list[str]:
    """The config check's problems (none: the run's plugins are torn down again)."""
    try:
        check_run(cfg).plugins.teardown_all()
    except ConfigProblems as exc:
        return exc.problems
    return []


def test_config_checks_name_the_new_options(cfg_factory):
    problems = validate(cfg_factory("trainer.eval_tokens=lots", "trainer.eval_test=true", "data.test_fraction=0.95"))
    text = "\n".join(problems)
    assert "trainer.eval_tokens must be 'all' or a positive token count, got 'lots'" in text
    assert "data.test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got 0.95" in text
    assert validate(cfg_factory("trainer.eval_test=true")) == [
        "trainer.eval_test=true needs a test split: set data.test_fraction (e.g. 0.1)"]
    assert validate(cfg_factory("trainer.eval_tokens=4096", "trainer.eval_batches=null")) == []


def test_help_of_the_checkpoint_commands_is_usage_and_exit_0(capsys):
    from apt.evaluate import main as evaluate_main
    from apt.export.__main__ import main as export_main

    for main, usage in ((evaluate_main, "usage: python -m apt evaluate ckpt=<path>"),
                        (export_main, "usage: python -m apt export ckpt=<path>")):
        assert main(["--help"]) == 0
        assert capsys.readouterr().out.startswith(usage)
