"""Run directories: atomic writes, checkpoints, and loading a trained model back.

A run directory holds ``checkpoint.pt`` (weights, model name, dataset, config, optimizer/schedule/RNG state and
history, for ``--resume``), ``config.json``, ``history.csv`` and ``metrics.json``. Every file is written to a
temporary name and renamed, so a kill at any moment leaves the previous good file.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
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


PACKAGE_DIR = Path(__file__).resolve().parent


def source_sha256(package_dir=None) -> str:
    """SHA-256 of the package source that is running: every ``*.py`` under ``package_dir`` (default this package),
    relative path and bytes, in sorted order. Two results folders with the same hash were made by the same code,
    committed or not."""
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def git_state(package_dir=None) -> dict:
    """``{"git_commit", "git_dirty"}`` of the repository holding the package (None, None outside a git checkout,
    or without git). ``git_dirty``: the package source differs from that commit."""
    root = (Path(package_dir) if package_dir is not None else PACKAGE_DIR).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gmreg_lab"], cwd=root, capture_output=True,
                               text=True, timeout=10)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def provenance(device=None) -> dict:
    """What made a result: the git commit (and whether the package source differed from it), the source hash, the
    command line, the time (UTC), the device, what precision "auto" meant there, and the number of processes."""
    from .runtime import world

    return {**git_state(), "source_sha256": source_sha256(), "command": shlex.join(sys.argv),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device) if device is not None else None, "processes": world()[1]}


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
            "precision_auto": resolve_precision("auto", device if device is not None else "cpu"),
            **provenance(device)}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
