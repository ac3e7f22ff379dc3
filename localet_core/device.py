"""Where to compute, and how much memory a slab may take."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import numpy as np

from localet_core.errors import FieldError

if TYPE_CHECKING:
    import torch


def cpu_without_torch(spec: Union[str, "torch.device", None] = "auto") -> bool:
    """Whether ``spec`` resolves to the CPU, decided without importing torch: ``cpu``, or
    ``auto`` where no CUDA device can exist (the installed torch is a CPU build, or this machine
    has no NVIDIA driver). ``False`` means "ask torch" (:func:`resolve_device`), not "CUDA"."""
    if spec is None or isinstance(spec, str):
        text = (spec or "auto").strip().lower()
        if text == "cpu":
            return True
        if text != "auto":
            return False
        return not _cuda_possible()
    return getattr(spec, "type", None) == "cpu"


def _cuda_possible() -> bool:
    """False when CUDA surely is unavailable: the installed torch is a CPU build (its
    ``version.py`` has ``cuda`` and ``hip`` None), or this machine has no NVIDIA or AMD GPU
    driver. Read from files: torch is not imported."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return True
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            with open(os.path.join(folder, "version.py"), encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            continue
        builds = re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", text, flags=re.MULTILINE)
        if len(builds) == 2 and all(value == "None" for _, value in builds):
            return False
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


def resolve_device(spec: Union[str, "torch.device", None] = "auto") -> "torch.device":
    """``auto`` (CUDA if present, else CPU; under torchrun ``cuda:LOCAL_RANK``), ``cpu``,
    ``cuda`` or ``cuda:N``."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process takes its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise FieldError("device", f"unknown device {spec!r}; use auto, cpu or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FieldError("device", f"{spec} asked for, but no CUDA device is available")
        index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise FieldError("device", f"{spec} asked for, but only {torch.cuda.device_count()} "
                                         "CUDA device(s) exist")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise FieldError("device", f"unsupported device {spec!r}; use auto, cpu or cuda:N")
    return device


def empty(shape: Sequence[int], dtype: "Optional[torch.dtype]" = None,
          device: "Union[str, torch.device]" = "cpu") -> "torch.Tensor":
    """``torch.empty`` (default float32), but on the CPU backed by numpy's allocator, which asks
    Linux for huge pages on large arrays: filling a fresh 32 MB buffer then costs about a third
    of what torch's 4 kB page faults do (measured on the reference machine's VM)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    _NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int32: np.int32,
                     torch.int64: np.int64, torch.complex64: np.complex64}
    if torch.device(device).type != "cpu" or dtype not in _NUMPY_DTYPES:
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    return torch.from_numpy(np.empty(tuple(shape), dtype=_NUMPY_DTYPES[dtype]))


#: Default cap of the working set: beyond a few hundred MB per slab nothing gets faster, and
#: smaller slabs keep a 1024 x 1024 x 256 volume from ever sitting whole in memory.
DEFAULT_BUDGET_CAP = 1 << 30


def memory_budget(device: "Union[str, torch.device]", budget_bytes: Optional[int] = None, fraction: float = 0.5,
                  cap: Optional[int] = DEFAULT_BUDGET_CAP) -> int:
    """Bytes a reconstruction may use for its working set: ``budget_bytes`` when given, else a
    ``fraction`` of the free memory of ``device`` (available RAM, or free VRAM), at most ``cap``."""
    if budget_bytes is not None:
        if budget_bytes <= 0:
            raise FieldError("memory_budget", f"must be positive, got {budget_bytes} bytes")
        return int(budget_bytes)
    if getattr(device, "type", device) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_ram()
    budget = int(free * fraction)
    return budget if cap is None else min(budget, cap)


def available_ram() -> int:
    """Bytes of RAM available to a new allocation without swapping: Linux's ``MemAvailable``
    (read from /proc/meminfo, which is what psutil reports there, without psutil's 20 ms import),
    else psutil's ``virtual_memory().available``."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def parse_memory(text: Optional[str]) -> Optional[int]:
    """'4G', '512M', '2000000' -> bytes (None passes through)."""
    if text is None:
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(float(t))
    except ValueError:
        raise FieldError("memory_budget", f"cannot read {text!r} as a size such as 4G or 512M") from None


def distributed_context(device: "Optional[torch.device]" = None) -> Tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` for a single process; under torchrun (``WORLD_SIZE``
    > 1) the process group is started on first use (NCCL for CUDA devices, gloo otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()
