"""Run directories: atomic writes, checkpoints, and loading a trained model back.

A run directory holds ``checkpoint.pt`` (weights, model name, dataset, config, optimizer/schedule/RNG state and
history, for ``--resume``), ``config.json``, ``history.csv`` and ``metrics.json``. Every file is written to a
temporary name and renamed, so a kill at any moment leaves the previous good file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .errors import GmregError
from .runtime import cpu_description, resolve_precision

CHECKPOINT = "checkpoint.pt"
FORMAT = "gmreg-lab/1"


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GmregError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GmregError(f"{path} is not valid JSON ({e})") from None


def write_csv(path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def checkpoint_path(path) -> Path:
    p = Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def load_checkpoint(path, map_location="cpu") -> dict:
    p = checkpoint_path(path)
    if not p.is_file():
        raise GmregError(f"no checkpoint at {p} (expected a run directory holding {CHECKPOINT}, or the file itself)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle errors, random bytes...
        raise GmregError(f"checkpoint {p} is corrupt or unreadable ({type(e).__name__}); retrain or restore it") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise GmregError(f"{p} is not a gmreg-lab checkpoint")
    return ckpt


def load_model(path, *, which: str = "best", device="cpu", dataset: str | None = None,
               arch: str | None = None) -> torch.nn.Module:
    """The trained model of a run directory (or checkpoint file), in eval mode, taking [0, 1] pixels.

    ``which="best"`` returns the epoch with the best validation I-FGSM-3 accuracy when the run kept one (the paper's
    model-selection rule), else the last epoch; ``which="last"`` always the last; ``which="iter:N"`` the snapshot
    taken after iteration N (``train(..., snapshot_at=(N,))``). ``dataset`` / ``arch``, if given, must match.
    """
    from .models import build

    if which not in ("best", "last") and not str(which).startswith("iter:"):
        raise GmregError(f"unknown checkpoint choice {which!r}; valid: best, last, iter:N")
    ckpt = load_checkpoint(path)
    if dataset is not None and ckpt["dataset"] != dataset:
        raise GmregError(f"checkpoint {checkpoint_path(path)} is a {ckpt['dataset']} model, not {dataset}")
    if arch is not None and ckpt["arch"] != arch:
        raise GmregError(f"checkpoint {checkpoint_path(path)} holds model {ckpt['arch']!r}, not {arch!r}")
    state = ckpt.get("best_model") if which == "best" and ckpt.get("best_model") is not None else ckpt["model"]
    if str(which).startswith("iter:"):
        snaps = ckpt.get("snapshots") or {}
        try:
            state = snaps[int(which[5:])]
        except (KeyError, ValueError):
            raise GmregError(f"checkpoint {checkpoint_path(path)} has no snapshot {which!r}; it has: "
                             f"{', '.join(f'iter:{k}' for k in sorted(snaps)) or 'none'}") from None
    model = build(ckpt["arch"], ckpt["dataset"], normalize="normalize.mean" in state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise GmregError(f"checkpoint {checkpoint_path(path)} does not fit model {ckpt['arch']!r}: "
                         f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def log_rows(history) -> list:
    """The periodic ``"log"`` rows of a run's history (the probe measurements), without its "epoch" rows; rows
    without an ``event`` key count as log rows."""
    return [r for r in history if r.get("event", "log") == "log"]


def environment_info(device=None) -> dict:
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torchvision": version("torchvision"), "gmreg_lab": version("gmreg-lab"),
            "torch_threads": torch.get_num_threads(), "cpu": cpu_description(),
            "precision_auto": resolve_precision("auto", device if device is not None else "cpu")}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
