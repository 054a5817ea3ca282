"""``mlflow`` and ``wandb`` in real runs of the app, read back from what the tracker stored.

MLflow: local stores (sqlite, and the file store) read back through ``MlflowClient``.
W&B: offline mode, no network; the run's files and its ``.wandb`` log are read back.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from apt.app import new_plugin_manager
from apt.checks.plugins import load_plugins
from tests.helpers import compose_cfg, read_csv, train

BASE = ["optim.warmup_steps=1", "trainer.max_steps=6",
        "trainer.log_every=2", "trainer.eval_every=4", "trainer.eval_batches=1", "data.num_tokens=4000",
        "trainer.plot=true"]


def _train(tmp_path: Path, *overrides: str, strict: bool = True) -> tuple[float, Path]:
    out = tmp_path / "run"
    return train(compose_cfg(*BASE, *overrides, cache_dir=tmp_path / "cache"), out, strict=strict), out


def _metrics(out: Path) -> list[dict[str, str]]:
    return read_csv(out / "metrics.csv")


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_records_params_metrics_and_artifacts(tmp_path, monkeypatch, store):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'apt[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's artifact root (./mlruns) is relative to the cwd
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else (tmp_path / "mlruns").as_uri()
    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it behind a switch
    _, out = _train(tmp_path, "plugin=[mlflow]", f"plugin.mlflow.tracking_uri={uri}",
                    "plugin.mlflow.experiment=exp", "plugin.mlflow.run_name=first")
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert r.info.run_name == "first" and r.info.status == "FINISHED"
    assert r.data.params["model.d_model"] == "32" and r.data.params["trainer.max_steps"] == "6"
    assert r.data.params["provider.attention.name"] == "sdpa"
    assert r.data.tags["apt.run_dir"] == str(out)
    rows = _metrics(out)
    train = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train_loss")]
    assert train == [(int(x["step"]), pytest.approx(float(x["train_loss"]), rel=1e-5)) for x in rows]
    val = [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")]
    assert val == [int(x["step"]) for x in rows if x["val_loss"]] == [4, 6]
    assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"loss.png", "summary.json"}
    summary = json.loads(Path(client.download_artifacts(r.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["step"] == 6 and summary == json.loads((out / "summary.json").read_text())


def test_mlflow_resumed_run_continues_the_same_tracker_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'apt[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opts = ["plugin=[mlflow]", f"plugin.mlflow.tracking_uri={uri}", "trainer.checkpoint_every=2"]
    _train(tmp_path, *opts, "trainer.max_steps=4")
    _train(tmp_path, *opts, "trainer.max_steps=6", "trainer.resume=true")
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("apt").experiment_id])
    assert r.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [2, 4, 6]


def test_a_tracker_that_cannot_start_fails_the_run_before_training(tmp_path, monkeypatch):
    """Not trained untracked, and not a success either: the summary says why, the run fails
    (train.py: exit status 1), even under trainer.on_plugin_error=warn (no hook was disabled:
    the plugin itself cannot do what the run asked of it)."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'apt[mlflow]')")
    from apt.app import RunFailed

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses ./mlruns then
    with pytest.raises(RunFailed, match="the run failed at step 0: mlflow: could not start a run:"):
        _train(tmp_path, "plugin=[mlflow]", f"plugin.mlflow.tracking_uri={tmp_path / 'mlruns'}",
               "trainer.on_plugin_error=warn", strict=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 0 and summary["failed"].startswith("mlflow: could not start a run:")
    assert summary["checkpoint"] is None and summary["val_loss"] is None


def test_selecting_a_tracker_without_its_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "wandb") else real(name, *a))
    problems = load_plugins(new_plugin_manager(), {"mlflow": {}, "wandb": {}})
    assert len(problems) == 2
    assert "plugin 'mlflow' needs the mlflow package: pip install 'apt[mlflow]'" in problems[0]
    assert "plugin 'wandb' needs the wandb package: pip install 'apt[wandb]'" in problems[1]


def _wandb_records(path: Path):
    """Records of a ``.wandb`` file: a 7-byte header, then LevelDB-log framed protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, parts = path.read_bytes(), 7, []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            return
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_offline_records_config_metrics_and_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'apt[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    _, out = _train(tmp_path, "plugin=[wandb]", "plugin.wandb.project=apt-test")
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert (run_dir / "files" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "files" / "summary.json").read_text())["step"] == 6
    log = next(run_dir.glob("run-*.wandb"))
    for _ in range(300):  # wandb's service may still be flushing the log after finish() returned
        records = list(_wandb_records(log))
        if records and records[-1].WhichOneof("record_type") == "exit":
            break
        time.sleep(0.1)
    config, history, summary = {}, {}, {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            assert rec.run.project == "apt-test"
            config.update(_items(rec.run.config.update))
        elif kind == "history":
            item = _items(rec.history.item)
            history[item["_step"]] = item
        elif kind == "summary":
            summary.update(_items(rec.summary.update))
    assert config["model.d_model"] == 32 and config["provider.attention.name"] == "sdpa"
    rows = _metrics(out)
    assert sorted(history) == [int(r["step"]) for r in rows]
    for r in rows:
        assert history[int(r["step"])]["train_loss"] == pytest.approx(float(r["train_loss"]), rel=1e-5)
    assert summary["best_val_loss"] == pytest.approx(json.loads((out / "summary.json").read_text())["best_val_loss"])
