"""Training checkpoints: model + optimiser variables + loop state in one atomically written npz.

One file per checkpoint, written to a temporary name and renamed, so a process killed at any
moment leaves either the previous checkpoint or the new one, never half of each.
"""

import json
import os
import zipfile
from pathlib import Path

import numpy as np


class CorruptCheckpoint(ValueError):
    """The checkpoint file cannot be read (truncated or damaged on disk)."""


def _open(path):
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CorruptCheckpoint(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from None


def read_state(path):
    """The loop state saved in a checkpoint, without restoring anything."""
    with _open(path) as data:
        try:
            return json.loads(str(data["state"]))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
            raise CorruptCheckpoint(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from None


def _variables(model, optimizer, average=None):
    groups = {"model": list(model.variables), "optimizer": list(optimizer.variables) if optimizer else []}
    if average is not None:
        groups["average"] = list(average.variables)
    return groups


def save(path, model, optimizer, state, average=None):
    """Write every model and optimiser variable (and the weight average's, if given) and the
    JSON-able `state` dict to `path`."""
    path = Path(path)
    arrays = {"state": np.array(json.dumps(state))}
    for group, variables in _variables(model, optimizer, average).items():
        arrays[f"{group}_paths"] = np.array([v.path for v in variables])
        for i, v in enumerate(variables):
            arrays[f"{group}/{i}"] = np.asarray(v.numpy())
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path, model, optimizer, average=None):
    """Restore the variables saved by `save` (optimiser must be built) and return the state dict."""
    state = read_state(path)     # first: a damaged file fails before any variable changes
    with _open(path) as data:
        for group, variables in _variables(model, optimizer, average).items():
            if f"{group}_paths" not in data:
                raise ValueError(f"checkpoint {path} holds no {group} variables; it was written by a "
                                 f"different configuration")
            paths = list(data[f"{group}_paths"])
            if len(paths) != len(variables):
                raise ValueError(f"checkpoint {path}: {len(paths)} {group} variables saved, the current "
                                 f"{group} has {len(variables)}; it was written by a different configuration")
            for i, v in enumerate(variables):
                try:
                    value = data[f"{group}/{i}"]
                except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
                    raise CorruptCheckpoint(f"checkpoint {path} is corrupt ({type(e).__name__}: {e})") from None
                if tuple(value.shape) != tuple(v.shape):
                    raise ValueError(f"checkpoint {path}: {group} variable {paths[i]} has shape "
                                     f"{value.shape}, expected {tuple(v.shape)}")
                v.assign(value)
    return state
