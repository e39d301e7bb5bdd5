"""Reading ``torch.distributed.checkpoint`` (DCP) directories without running code from them.

PyTorch's own reader unpickles a checkpoint's ``.metadata`` file with plain
``pickle.load`` and its default planner loads every non-tensor value (an
optimizer's learning rate, betas, step counts) with
``torch.load(weights_only=False)``: a planted ``.metadata`` or ``.distcp``
file runs code as soon as a run resumes from the directory. Everything ember
reads from a sharded checkpoint goes through this module instead:

- :func:`read_metadata` unpickles ``.metadata`` with an allow-list: the
  dataclasses and enums of ``torch.distributed.checkpoint.metadata``, the
  storage record of its file-system writer, ``torch.Size``, dtypes, layouts
  and paths. Anything else is refused before it is called.
- :class:`SafeFileSystemReader` and the planners load non-tensor values with
  ``torch.load(weights_only=True)``; tensors were already read that way.
- :func:`load` (``dcp.load`` into a prepared state dict, used by the ``fsdp``
  strategy) and :func:`load_full` (the whole checkpoint in one process, used
  by ``ember checkpoint consolidate``) check ``.metadata`` first, so a refused
  checkpoint fails the same way on every rank, with one line naming the file
  and the refused object: :class:`UntrustedCheckpointError`.
"""

from __future__ import annotations

import enum
import io
import os
import pathlib
import pickle
from dataclasses import is_dataclass
from typing import Any

import torch

METADATA_FILE = ".metadata"

_PATH_CLASSES = {
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib", "Path"),
}
_OTHER_ALLOWED = {
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("torch.serialization", "_get_layout"),  # maps a layout's name to the layout
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint file names an object that a checkpoint never holds; nothing from it was run."""


def _allowed(module: str, name: str) -> Any:
    """The object ``module.name`` if the metadata allow-list admits it, else ``None``."""
    import importlib

    if (module, name) in _PATH_CLASSES:
        return getattr(pathlib, name)
    if (module, name) in _OTHER_ALLOWED:
        return getattr(importlib.import_module(module), name)
    if module == "torch":
        obj = getattr(torch, name, None)
        return obj if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)) else None
    if module == _METADATA_MODULE:
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and (is_dataclass(obj) or issubclass(obj, enum.Enum)):
            return obj
    return None


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is None:
            raise UntrustedCheckpointError(
                f"{self.path}: refused to unpickle {module}.{name}, which is not part of a torch.distributed.checkpoint "
                "metadata file; nothing from it was run. The file was altered or written by other code: load this "
                "checkpoint only if you trust whoever wrote it, with torch.distributed.checkpoint directly."
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UntrustedCheckpointError(f"{self.path}: refused a persistent reference ({pid!r}) in checkpoint metadata.")


def read_metadata(checkpoint_dir: str | os.PathLike[str], filename: str = METADATA_FILE) -> Any:
    """``checkpoint_dir/.metadata`` as a ``Metadata`` object, unpickled with the allow-list."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = os.path.join(os.fspath(checkpoint_dir), filename)
    with open(path, "rb") as f:
        data = f.read()
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data), path).load()
    except UntrustedCheckpointError:
        raise
    except Exception as exc:
        raise UntrustedCheckpointError(
            f"{path}: not a readable torch.distributed.checkpoint metadata file ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(metadata, Metadata):
        raise UntrustedCheckpointError(f"{path}: holds a {type(metadata).__name__}, not torch.distributed.checkpoint metadata.")
    return metadata


def load_value(value: io.BytesIO, where: str) -> Any:
    """A non-tensor value of a checkpoint (an optimizer's ``lr``, ``betas``, ...), loaded weights-only."""
    try:
        return torch.load(value, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UntrustedCheckpointError(
            f"{where}: refused a non-tensor value that torch.load(weights_only=True) will not load ({first}); nothing from it was run. "
            "Load this checkpoint only if you trust whoever wrote it."
        ) from None


def _reader_class() -> type:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        """``FileSystemReader`` whose ``read_metadata`` uses the allow-list."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
            metadata = read_metadata(self.path, name)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader


def _safe_load_bytes(planner: Any, read_item: Any, value: io.BytesIO, where: str) -> None:
    from torch.distributed.checkpoint._nested_dict import set_element

    loaded = load_value(value, f"{where} ({read_item.dest_index.fqn})")
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


def _planner(base: type, where: str, **kwargs: Any) -> Any:
    class SafePlanner(base):  # type: ignore[misc, valid-type]
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            _safe_load_bytes(self, read_item, value, where)

    return SafePlanner(**kwargs)


def _unwrap_failure(exc: BaseException) -> None:
    """Re-raise the one-line :class:`UntrustedCheckpointError` that DCP wrapped in a ``CheckpointException``."""
    failures = getattr(exc, "failures", None) or {}
    for failure in failures.values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, UntrustedCheckpointError):
            raise UntrustedCheckpointError(str(inner)) from None


def load(state_dict: dict[str, Any], checkpoint_dir: str | os.PathLike[str], **kwargs: Any) -> None:
    """``torch.distributed.checkpoint.load`` into ``state_dict`` (in place), reading
    nothing with plain pickle. ``kwargs`` go to ``dcp.load`` (``process_group``, ``no_dist``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    checkpoint_dir = os.fspath(checkpoint_dir)
    read_metadata(checkpoint_dir)  # every rank refuses the same file before any collective
    try:
        dcp.load(state_dict, storage_reader=_reader_class()(checkpoint_dir), planner=_planner(DefaultLoadPlanner, checkpoint_dir), **kwargs)
    except CheckpointException as exc:
        _unwrap_failure(exc)
        raise


def load_full(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole checkpoint, rebuilt from its metadata in this one process (no
    process group): what ``dcp_to_torch_save`` gathers, without plain pickle."""
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    checkpoint_dir = os.fspath(checkpoint_dir)
    read_metadata(checkpoint_dir)
    state: dict[str, Any] = {}
    try:
        # As dcp_to_torch_save does (dcp.load would fill a copy of an empty dict, not this one).
        _load_state_dict(
            state,
            storage_reader=_reader_class()(checkpoint_dir),
            planner=_planner(_EmptyStateDictLoadPlanner, checkpoint_dir),
            no_dist=True,
        )
    except CheckpointException as exc:
        _unwrap_failure(exc)
        raise
    return state
