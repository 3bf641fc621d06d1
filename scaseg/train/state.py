"""A run's folder and its training state: what --resume accepts, which folders -o may be, how a state is checked
and read back into a run, one writer per folder.

A run folder is the folder holding a ``train_state.pt`` of this schema; that file is what marks a folder as a
scaseg-train run, and a run writes it before any other file. ``--resume`` takes a run folder (or the
``train_state.pt`` in one) and the run continues in that folder, resolved to an absolute path: the folder
recorded inside the state is only a note (the run may have been copied or moved since). A new run's ``-o`` must
be new or empty. The state file is untrusted input: loaded with ``weights_only=True`` and checked key by key.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from scaseg.checkpoint import check_weights
from scaseg.errors import ScasegError
from scaseg.fileio import check_dir_output, check_writable_dir, same_path
from scaseg.train.config import TrainConfig, config_problem

STATE_FILE = "train_state.pt"
STATE_FORMAT = "scaseg-train-state"
STATE_VERSION = 1
OUTPUT_FILES = ("last.pth", "best.pth", STATE_FILE, "metrics.json")


# -- which folder -----------------------------------------------------------------------------------------------

def run_folder(resume: str | os.PathLike[str]) -> Path:
    """The absolute run folder ``--resume`` names: that folder, or the one holding the train_state.pt named."""
    path = Path(resume).expanduser().absolute()
    if path.is_dir():
        if not (path / STATE_FILE).exists():
            raise ScasegError(f"cannot resume: {path} holds no {STATE_FILE}, so it is not a scaseg-train run folder")
        return path
    if not path.exists():
        raise ScasegError(f"cannot resume: {path} does not exist (pass a scaseg-train run folder or its {STATE_FILE})")
    if path.name != STATE_FILE:
        raise ScasegError(f"cannot resume from {path}: pass a scaseg-train run folder or the {STATE_FILE} in one "
                          "(the run continues in that folder)")
    return path.parent


def check_resume_output(folder: Path, out: Optional[str]) -> None:
    """A resumed run writes only its own folder: refuse an -o that names another one."""
    if out is not None and not same_path(out, folder):
        raise ScasegError(f"--resume continues the run in its own folder {folder}, and -o/--output {out} names "
                          "another; leave -o out (to branch a run, copy its folder and resume the copy)")
    check_writable_dir(folder / STATE_FILE)


def resumed_settings(resume: str, given: dict[str, Any], typed: set[str]) -> dict[str, Any]:
    """A resumed run's settings: those its state recorded, overridden by the ``typed`` ones of ``given``.

    The output folder is the run's own (-o may only repeat it; Trainer refuses another), never the recorded one.
    """
    folder = run_folder(resume)
    saved = load_state(folder)["config"]
    if "data" not in typed and not Path(saved["data"]).expanduser().exists():
        raise ScasegError(f"cannot resume: the run's dataset {saved['data']} (as its state records it) is not there; "
                          "pass --data DIR")
    if "threads" not in typed and isinstance(saved.get("threads"), int):  # typed ones were checked at the edge
        from scaseg.runtime.backends.threads import check_thread_count

        try:
            check_thread_count(saved["threads"], "--threads", zero="PyTorch's default")
        except ScasegError as exc:
            raise ScasegError(f"cannot resume with the run's recorded thread count: {exc}; pass --threads N") from None
    return {**saved, **{k: given[k] for k in typed}, "resume": str(folder),
            "out": given["out"] if "out" in typed else str(folder)}


def _our_temporary(name: str) -> bool:
    """A temporary name atomic_path gives one of a run's files (``.last.pth.<pid>-<host>.<random>.tmp.pth``)."""
    return any(name.startswith(f".{file}.") and ".tmp" in name for file in OUTPUT_FILES)


def check_new_output(out: Path) -> None:
    """A new run's -o: a new folder, an empty one, or one holding only a killed run's temporaries; else one sentence."""
    if out.exists() and not out.is_dir():
        raise ScasegError(f"the output {out} exists and is not a folder")
    if (out / STATE_FILE).exists():
        raise ScasegError(f"{out} already holds a training run; pass --resume {out} or choose another -o/--output")
    check_dir_output(out, owned=lambda p: all(_our_temporary(entry.name) for entry in p.iterdir()),
                     what="scaseg-train run")


# -- the state file ---------------------------------------------------------------------------------------------

def load_state(folder: Path) -> dict[str, Any]:
    """The checked training state of a run folder; one sentence when it is missing, unreadable or malformed."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise ScasegError(f"cannot resume from {path}: it is not a regular file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: any unpickling error means "not our state"
        raise ScasegError(f"cannot resume from {path}: not a readable training state ({type(exc).__name__})") from None
    problem = state_problem(state)
    if problem:
        raise ScasegError(f"cannot resume from {path}: {problem}")
    return state


def state_problem(state: Any) -> Optional[str]:
    """Why ``state`` is not a training state this trainer can continue from, or None."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return "it is not a scaseg-train state file"
    if state.get("version") != STATE_VERSION:
        return f"it is state version {state.get('version')!r}; this scaseg reads version {STATE_VERSION}"
    for key, low in (("iteration", 0), ("samples", 0), ("num_classes", 1)):
        value = state.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            return f"its {key!r} is {value!r:.40}, not a whole number of at least {low}"
    checks = (
        ("config", lambda v: config_problem(v) is None),
        ("model", lambda v: isinstance(v, dict) and bool(v) and all(isinstance(k, str) and isinstance(t, Tensor)
                                                                    for k, t in v.items())),
        ("optimizer", lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
         and isinstance(v.get("param_groups"), list)),
        ("scaler", lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values())),
        ("rng", lambda v: isinstance(v, list) and bool(v) and all(_rng_fits(r) for r in v)),
        ("best_miou", _is_number),
        ("history", lambda v: isinstance(v, list) and all(_record_fits(r) for r in v)),
        ("logit_adjustment", lambda v: v is None or (isinstance(v, dict) and _is_number(v.get("alpha")) and _plain(v))),
        ("classes", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)),
        ("model_config", lambda v: isinstance(v, dict) and _plain(v)),
    )
    for key, fits in checks:
        if key not in state and key in ("logit_adjustment", "classes", "model_config"):  # written by later versions
            continue
        if not fits(state.get(key)):
            return config_problem(state.get(key)) if key == "config" else f"its {key!r} is damaged"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any) -> bool:
    """JSON's values only (metrics.json is written from the history)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


def _record_fits(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("iteration"), int) and _is_number(record.get("miou"))
            and _plain(record))


def _rng_fits(rng: Any) -> bool:
    size = torch.get_rng_state().numel()

    def byte_state(t: Any) -> bool:
        return isinstance(t, Tensor) and t.dtype == torch.uint8 and t.dim() == 1

    return (isinstance(rng, dict) and byte_state(rng.get("cpu")) and rng["cpu"].numel() == size
            and (rng.get("cuda") is None or byte_state(rng.get("cuda"))))


# -- reading it back into a run -----------------------------------------------------------------------------

def check_same_run(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Settings a run cannot change midway (the model it builds, the labels it reads), before any data is read."""
    for key in ("variant", "dataset", "distill_weight", "distill_temperature"):
        if saved.get(key, getattr(TrainConfig, key)) != getattr(cfg, key):
            flag = "--" + key.replace("_", "-")
            raise ScasegError(f"cannot resume: the run used {flag} {saved.get(key)}, not {getattr(cfg, key)}")
    for key in ("init", "distill"):  # the model a run started from and its teacher: files, compared as files
        was, now = saved.get(key), getattr(cfg, key)
        if (was is None) != (now is None) or (was and now and not same_path(was, now)):
            raise ScasegError(f"cannot resume: the run used --{key} {was or '(none)'}, not {now or '(none)'}")
    if saved.get("model_kwargs", {}) != cfg.model_kwargs:
        raise ScasegError(f"cannot resume: the run used --model-opt {_model_opts(saved.get('model_kwargs', {}))}, "
                          f"not {_model_opts(cfg.model_kwargs)}")


def _model_opts(kwargs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) or "(none)"


def check_classes(state: dict[str, Any], classes: list[str], data: str) -> None:
    """The run's classes (count, and names in order where the state has them) are those of the data it continues on."""
    if state["num_classes"] != len(classes):
        raise ScasegError(f"cannot resume: the run had {state['num_classes']} classes, this data has {len(classes)}")
    if "classes" in state and state["classes"] != classes:
        i = next(i for i, (a, b) in enumerate(zip(state["classes"], classes)) if a != b)
        raise ScasegError(f"cannot resume: the run was trained on other classes than those of {data} "
                          f"(class {i} is {state['classes'][i]!r} in the run, {classes[i]!r} here)")


def restore_model(model: nn.Module, weights: dict[str, Tensor], source: Path, variant: str) -> None:
    """Load a state's weights: every tensor of this model, of its shape, finite; else one sentence."""
    own = model.state_dict()
    wrong = sorted(set(own) ^ set(weights)) or [k for k in own if own[k].shape != weights[k].shape]
    if wrong:
        raise ScasegError(f"cannot resume from {source}: its model weights do not fit {variant} "
                          f"({len(wrong)} tensor(s) missing, extra or of another shape, first: {wrong[0]})")
    check_weights(weights, source)
    model.load_state_dict(weights)


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], source: Path) -> None:
    """Load AdamW's state, checked against the model's parameters: a damaged one would fail at the first step."""
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    damaged = f"cannot resume from {source}: its optimizer state does not fit this model"
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError):
        raise ScasegError(damaged) from None
    # Keys another PyTorch version adds or drops are its own business; those the loop reads must be there.
    needed = {"lr", "lr_mult", "betas", "eps", "weight_decay"}
    for group, before in zip(optimizer.param_groups, fresh):
        if not needed <= set(group) or not all(_same_kind(group[k], v) for k, v in before.items() if k in group):
            raise ScasegError(damaged)
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                fits = isinstance(value, Tensor) and (value.numel() == 1 if name == "step" else value.shape == p.shape)
                if not fits:
                    raise ScasegError(damaged)


def _same_kind(value: Any, like: Any) -> bool:
    """Whether an optimizer setting read back has the kind of the fresh one (a number, a flag, a pair...)."""
    if like is None or isinstance(like, bool):
        return value is None or isinstance(value, bool)
    if isinstance(like, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(like) and all(map(_same_kind, value, like))
    return isinstance(value, type(like))


# -- one writer per folder --------------------------------------------------------------------------------------

class FolderLock:
    """An exclusive flock on a run folder, held while a run writes it; the kernel drops it when the process ends.

    A file system without flock on folders (some network mounts) runs unlocked rather than not at all.
    """

    def __init__(self, folder: Path) -> None:
        self.folder, self.fd = folder, -1
        self._close = os.close  # __del__ may run at interpreter exit, after the os module is torn down

    def acquire(self) -> None:
        if self.fd >= 0:
            return
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            return
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:  # a folder we may write but not read: nothing to lock it by
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ScasegError(f"another scaseg-train is writing {self.folder}; wait for it to end or choose "
                                  "another folder") from None
            return
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            self._close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.release()
