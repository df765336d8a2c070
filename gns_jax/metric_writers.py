"""Metrics to TensorBoard (tensorboardX event files, no TensorFlow needed) and to a CSV file, side by side."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

from tensorboardX import SummaryWriter


class MetricWriter:
    """Writes scalar rows to ``<logdir>/events.*`` (TensorBoard) and ``<logdir>/<csv_name>``.

    A CSV row holds every scalar of one ``write`` call; columns come from the first row written to a file, and a
    resumed run appends to the same file. A row with a scalar the file has no column for (a run resumed by a newer
    version that logs more) widens the file: it is rewritten, atomically, with the new column appended and left
    empty in the earlier rows. Use as a context manager or call ``close``.
    """

    def __init__(self, logdir: str, csv_name: str = "metrics.csv"):
        os.makedirs(logdir, exist_ok=True)
        self.csv_path = os.path.join(logdir, csv_name)
        self._tb = SummaryWriter(logdir=logdir)
        self._columns: list[str] | None = None
        if os.path.exists(self.csv_path) and os.path.getsize(self.csv_path) > 0:
            with open(self.csv_path, newline="") as f:
                self._columns = next(csv.reader(f))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._tb.add_scalar(name, float(value), global_step=step)
        row = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        new_file = self._columns is None
        if new_file:
            self._columns = list(row)
        elif any(k not in self._columns for k in row):
            self._widen([k for k in row if k not in self._columns])
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def _widen(self, new_columns: list[str]) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._columns = self._columns + new_columns
        with open(self.csv_path + ".tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(self.csv_path + ".tmp", self.csv_path)

    def flush(self) -> None:
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
