"""Tests of gns_jax.metric_writers: the CSV beside the TensorBoard events across a resumed run."""

import csv
import os

from gns_jax.metric_writers import MetricWriter


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resumed_writer_appends_under_the_same_header(tmp_path):
    with MetricWriter(str(tmp_path), csv_name="episodes.csv") as w:
        w.write(0, {"return": 0.5, "val": 0.8})
    with MetricWriter(str(tmp_path), csv_name="episodes.csv") as w:
        w.write(1, {"return": 0.25, "val": 0.9})
    rows = _rows(tmp_path / "episodes.csv")
    assert [r["step"] for r in rows] == ["0", "1"]
    assert [float(r["val"]) for r in rows] == [0.8, 0.9]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


def test_a_new_metric_after_resume_widens_the_csv_and_keeps_every_row(tmp_path):
    with MetricWriter(str(tmp_path), csv_name="episodes.csv") as w:
        w.write(0, {"return": 0.5})
        w.write(1, {"return": 0.6})
    with MetricWriter(str(tmp_path), csv_name="episodes.csv") as w:  # a newer version logs one more scalar
        w.write(2, {"return": 0.7, "ppo_steps_taken": 3.0})
        w.write(3, {"return": 0.8, "ppo_steps_taken": 4.0})
    with open(tmp_path / "episodes.csv", newline="") as f:
        assert next(csv.reader(f)) == ["step", "return", "ppo_steps_taken"]
    rows = _rows(tmp_path / "episodes.csv")
    assert [float(r["return"]) for r in rows] == [0.5, 0.6, 0.7, 0.8]
    assert [r["ppo_steps_taken"] for r in rows] == ["", "", "3.0", "4.0"]
    assert not os.path.exists(tmp_path / "episodes.csv.tmp")
