"""Where a run's scalars go besides metrics.jsonl: TensorBoard, and optionally Weights & Biases.

- TensorBoard (tensorboardX, on by default): event files in `RUN/tensorboard/`; every
  metric of every meta-iteration as a scalar (`seed_<s>/<metric>` with several seeds),
  the adaptation curves at the end (`adaptation/<curve>` over adaptation steps or
  episodes) and the returns plot as an image. `tensorboard --logdir runs/` shows them.
- Weights & Biases (`pip install 'jaxmeta[wandb]'`, `--wandb PROJECT`): the same scalars
  and the final table, with the run's settings as the W&B config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TENSORBOARD_DIR = "tensorboard"


def _tag(row: dict, key: str, num_seeds: int) -> str:
    return key if num_seeds == 1 else f"seed_{row['seed']}/{key}"


class TensorBoardLogger:
    def __init__(self, run_dir: Path, num_seeds: int):
        from tensorboardX import SummaryWriter

        self.num_seeds = num_seeds
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=30)

    def rows(self, rows: list[dict]) -> None:
        for row in rows:
            for k, v in row.items():
                if k not in ("iteration", "seed"):
                    self.writer.add_scalar(_tag(row, k, self.num_seeds), v, row["iteration"])

    def finish(self, curves: dict, plot: Path | None, table: tuple) -> None:
        for name, curve in curves.items():
            returns = np.asarray(curve.returns)
            returns = returns.mean(axis=0) if returns.ndim == 2 else returns  # mean over seeds
            for k, r in enumerate(returns):
                self.writer.add_scalar(f"adaptation/{name}", float(r), k)
        if plot is not None and plot.exists():
            import matplotlib.image

            image = matplotlib.image.imread(str(plot))[..., :3]  # [H, W, 3] floats in [0, 1]
            self.writer.add_image("returns", image, dataformats="HWC")
        header, rows = table
        self.writer.add_text("final_table", "\n".join(["| " + " | ".join(map(str, header)) + " |"]
                                                      + ["| " + " | ".join(map(str, r)) + " |" for r in rows]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, project: str, settings_json: dict):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("--wandb needs the wandb extra: pip install 'jaxmeta[wandb]'") from e
        self.wandb = wandb
        self.run = wandb.init(project=project, dir=str(run_dir), name=Path(run_dir).name, config=settings_json,
                              resume="allow", id=Path(run_dir).name)

    def rows(self, rows: list[dict]) -> None:
        for row in rows:
            self.run.log({f"seed_{row['seed']}/{k}" if len(rows) > 1 else k: v for k, v in row.items()
                          if k not in ("iteration", "seed")}, step=row["iteration"])

    def finish(self, curves: dict, plot: Path | None, table: tuple) -> None:
        header, rows = table
        self.run.log({"final_table": self.wandb.Table(columns=[str(h) for h in header], data=rows)})
        if plot is not None and plot.exists():
            self.run.log({"returns": self.wandb.Image(str(plot))})

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Every logger of a run, called together; none when nothing is written."""

    def __init__(self, loggers: list[Any]):
        self.loggers = loggers

    def rows(self, rows: list[dict]) -> None:
        for lg in self.loggers:
            lg.rows(rows)

    def finish(self, curves: dict, plot: Path | None, table: tuple) -> None:
        for lg in self.loggers:
            lg.finish(curves, plot, table)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
