"""Optional TensorBoard event files of a job's training, for people who live in TensorBoard.

With ``GAN_TENSORBOARD=1`` the worker writes, at each progress report, to
``<artifacts_dir>/jobs/<id>/tensorboard/``: the losses (``loss/d``, ``loss/g``), D's mean logits
(``logits/d_real``, ``logits/d_fake``), the gradient norms (``grad_norm/d``, ``grad_norm/g``),
the throughput (``speed/images_per_sec``), each evaluation's metrics (``eval/fid``, …) at its
step, and at each new checkpoint a grid of 64 samples of it (``samples``, seed 0, so the same
digits form over the steps). ``tensorboard --logdir var/artifacts/jobs`` shows every job.

With an object store as the artifact store (``GAN_ARTIFACTS_URL=s3://…``) the files are written
in the worker's copy of that folder (``GAN_CACHE_DIR``) and each one is put in the store whole
(one PUT) at every new checkpoint and at the run's end: an event file is appended to, which an
object store cannot do, so the store's copy is at most a checkpoint interval behind. TensorBoard
reads them there (``tensorboard --logdir s3://bucket/prefix/jobs``, with its S3 support) or from
a copy (``aws s3 sync``).

It needs the ``tensorboard`` package (``pip install 'gan-service[tensorboard]'``); without it
the job's log says so once and training goes on. Nothing here can fail a job: an error writing
the files is logged and the files are left for the rest of the run.
"""

from __future__ import annotations

import atexit
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from gan.checkpoint import checkpoint_path
from gan.progress import Progress
from worker.artifacts import job_key
from worker.settings import Settings

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

SAMPLES = 64  # the grid drawn at each checkpoint: 8x8, seed 0
INSTALL_HINT = "pip install 'gan-service[tensorboard]' (or pip install tensorboard)"


def log_dir(settings: Settings, job_id: str) -> Path:
    return settings.job_dir(job_id) / "tensorboard"


class JobBoard:
    """The event file writer of one job's run in this worker."""

    def __init__(self, job_id: str, writer: SummaryWriter) -> None:
        self.job_id, self.writer = job_id, writer
        self.metrics_step: int | None = None
        self.checkpoint_step: int | None = None

    def write(self, p: Progress, checkpoint_dir: Path) -> None:
        scalars = {
            "loss/d": p.d_loss,
            "loss/g": p.g_loss,
            "logits/d_real": p.d_real,
            "logits/d_fake": p.d_fake,
            "grad_norm/d": p.d_grad_norm,
            "grad_norm/g": p.g_grad_norm,
            "speed/images_per_sec": p.images_per_sec,
        }
        for tag, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, p.step)
        if p.metrics_step is not None and p.metrics_step != self.metrics_step:
            self.metrics_step = p.metrics_step
            for name, value in p.metrics.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"eval/{name}", value, p.metrics_step)
        if p.checkpoint_step is not None and p.checkpoint_step != self.checkpoint_step:
            self.checkpoint_step = p.checkpoint_step
            self._samples(checkpoint_path(checkpoint_dir, p.checkpoint_step), p.checkpoint_step)
        self.writer.flush()  # readable by TensorBoard at once, and nothing lost on a kill

    def _samples(self, path: Path, step: int) -> None:
        """The checkpoint's sample grid (a scatter plot for 2D points), as an image."""
        from gan.sample import generate, image_grid, read_generator, scatter_image

        if not path.is_file():  # pruned already (keep_checkpoints): nothing to draw
            return
        loaded = read_generator(path)
        samples = generate(loaded.generator, SAMPLES, seed=0)
        if samples.ndim == 2:  # points
            picture = scatter_image(samples)
        else:
            picture = image_grid(samples, math.ceil(math.sqrt(SAMPLES)))
        layout = "HW" if picture.ndim == 2 else "HWC"  # grey, or colour channels last
        self.writer.add_image("samples", picture, step, dataformats=layout)

    def close(self) -> None:
        self.writer.close()


_board: JobBoard | None = None  # a worker trains one job at a time (solo pool)
_failed: set[str] = set()  # jobs whose files could not be written: not tried again


def record(settings: Settings, job_id: str, p: Progress) -> None:
    """Write progress report ``p`` of job ``job_id`` to its event files, when
    ``settings.tensorboard`` is on. Never raises: training must not depend on it."""
    global _board
    if not settings.tensorboard or job_id in _failed:
        return
    try:
        if _board is None or _board.job_id != job_id:
            close()
            _board = _open(settings, job_id, p.step)
        if _board is not None:
            published = _board.checkpoint_step
            _board.write(p, settings.checkpoint_dir(job_id))
            if _board.checkpoint_step != published or p.step >= p.total_steps:
                publish(settings, job_id)
    except Exception as e:  # a full disk, a bad checkpoint: training goes on without it
        _failed.add(job_id)
        log.warning(
            "job %s: stopped writing TensorBoard files: %s: %s", job_id, type(e).__name__, e
        )
        close()


def _open(settings: Settings, job_id: str, step: int) -> JobBoard | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _failed.add(job_id)
        log.warning(
            "job %s: GAN_TENSORBOARD is on, but the tensorboard package is not installed, so no "
            "TensorBoard files are written (training goes on): %s",
            job_id,
            INSTALL_HINT,
        )
        return None
    directory = log_dir(settings, job_id)
    resumed = directory.is_dir() and any(directory.iterdir())
    # A resumed run retrains from its checkpoint: TensorBoard drops what an earlier run logged at
    # this step and after, so the curves show the run that went on.
    writer = SummaryWriter(str(directory), purge_step=step if resumed else None)
    log.info("job %s: writing TensorBoard files to %s", job_id, directory)
    return JobBoard(job_id, writer)


def publish(settings: Settings, job_id: str) -> None:
    """Put the job's event files in an object store, each whole (nothing to do in a folder)."""
    store = settings.artifacts()
    directory = log_dir(settings, job_id)
    if store.remote and directory.is_dir():
        for path in directory.iterdir():
            if path.is_file():
                store.write_bytes(f"{job_key(job_id)}/tensorboard/{path.name}", path.read_bytes())


def close() -> None:
    """Close the open event file, if any (the next job's first report, or the process's end)."""
    global _board
    if _board is not None:
        board, _board = _board, None
        board.close()


atexit.register(close)
