"""The slab pipeline every reconstruction method shares: row ranges -> slabs -> volume or file.

A reconstruction is produced as *slabs* of output rows along Y (the tilt axis): ``(y0, y1,
slab)`` with ``slab`` a float32 numpy array ``(nz, y1 - y0, nx)``, yielded in increasing ``y0``
and covering ``0..ny`` exactly once. Slabs can be gathered in memory (:func:`assemble_slabs`),
streamed into an MRC file (:func:`write_slabs`, atomic: the file appears only once complete) or
shared among torchrun processes (:func:`distribute_slabs`: rank 0 receives every slab in order).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from localet_core.errors import PathLike

if TYPE_CHECKING:
    from localet_core.reconstruction.geometry import TiltGeometry

#: ``(y0, y1, slab (nz, y1 - y0, nx) float32)``
Slab = Tuple[int, int, np.ndarray]


def slab_ranges(ny: int, rows: int) -> List[Tuple[int, int]]:
    """``[(y0, y1), ...]`` covering ``0..ny`` in steps of ``rows`` (at least 1)."""
    return [(y0, min(ny, y0 + rows)) for y0 in range(0, ny, max(1, rows))]


def assemble_slabs(shape: Tuple[int, int, int], slabs: Iterable[Slab],
                   on_slab: Optional[Callable[[int, int], None]] = None,
                   description: str = "reconstructing") -> np.ndarray:
    """Gather slabs into one ``shape`` ``(nz, ny, nx)`` float32 volume; ``on_slab(y0, y1)`` is
    called after each. Inside a command the rows are reported as a stage of its progress
    (lines only, no bar: :mod:`localet_core.progress`)."""
    from localet_core.progress import stage

    volume = np.empty(shape, dtype=np.float32)
    with stage(shape[1], description, unit="row", bar=False) as rows:
        for y0, y1, slab in slabs:
            volume[:, y0:y1] = slab
            rows.advance(y1 - y0)
            if on_slab is not None:
                on_slab(y0, y1)
    return volume


def write_slabs(
    path: PathLike,
    geometry: "TiltGeometry",
    slabs: Iterable[Slab],
    progress: Optional[bool] = None,
    description: str = "reconstructing",
    label: Union[None, str, Sequence[str]] = None,
    background: bool = True,
) -> None:
    """Stream slabs covering ``geometry.output_shape`` ``(nz, ny, nx)`` into the MRC file
    ``path`` with the output voxel size; the file appears only once every slab is written.

    Args:
        progress: show a progress bar with ETA on stderr (default: when stderr is a terminal);
            inside a command its mode applies (:func:`localet_core.progress.command_progress`:
            progress lines in a log).
        label: the header label(s) (:class:`localet_core.io.VolumeWriter`).
        background: write each slab (header statistics, the write itself) in a second thread
            while the next one is computed (:class:`SlabWriterThread`); at most two finished
            slabs wait for it. ``False`` writes each slab before computing the next.
    """
    from localet_core.io import VolumeWriter
    from localet_core.progress import stage

    shape = geometry.output_shape
    with VolumeWriter(path, shape=shape, voxel_size=geometry.voxel_size, label=label) as writer, \
            stage(shape[1], description, unit="row", progress=progress, leave=False) as rows:
        if not background:
            for y0, y1, slab in slabs:
                writer[:, y0:y1, :] = slab
                rows.advance(y1 - y0)
            return
        with SlabWriterThread(writer) as thread:
            for y0, y1, slab in slabs:
                thread.put(y0, y1, slab)
                rows.advance(y1 - y0)


class SlabWriterThread:
    """Write slabs into a :class:`~localet_core.io.VolumeWriter` from a second thread.

    ``put(y0, y1, slab)`` copies the slab into one of the thread's own buffers (recycled:
    one or two slabs' worth), queues it and returns at once while a slot is free (one slab
    waits; the thread writes another), so computing the next slab overlaps with the statistics
    and the write of the last one (numpy and the system calls release the GIL). The copy lets
    the producer free or reuse its slab at once, exactly when it would without the thread:
    holding producers' slabs across the next slab's temporaries fragmented the heap (the
    network's 512^3 reconstruction grew 0.4 GB). The first error of the thread is raised by
    the next ``put`` or on leaving the ``with`` block; an error in the block stops the thread
    (the remaining slabs are dropped) and propagates, so the writer discards its temporary file.
    """

    def __init__(self, writer: Any, depth: int = 1) -> None:
        import queue
        import threading

        self.writer = writer
        self._queue: "queue.Queue[Optional[Slab]]" = queue.Queue(maxsize=depth)
        self._free: "queue.SimpleQueue[np.ndarray]" = queue.SimpleQueue()  # written buffers
        self._error: Optional[BaseException] = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="localet-slab-writer", daemon=True)

    def __enter__(self) -> "SlabWriterThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            y0, y1, slab = item
            if self._error is None and not self._abort:
                try:
                    self.writer[:, y0:y1, :] = slab
                except BaseException as exc:  # handed to the main thread
                    self._error = exc
            self._free.put(slab.base if slab.base is not None else slab)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _buffer(self, size: int) -> np.ndarray:
        """A flat float32 buffer of at least ``size`` values: a written one, else a new one."""
        import queue

        while True:
            try:
                buffer = self._free.get_nowait()
            except queue.Empty:
                return np.empty(size, dtype=np.float32)
            if buffer.size >= size:
                return buffer

    def put(self, y0: int, y1: int, slab: Any) -> None:
        """Queue a copy of rows ``y0:y1`` (``(nz, y1 - y0, nx)``, numpy or torch, converted to
        float32); raises the thread's error, if any."""
        self._raise()
        if hasattr(slab, "detach") and hasattr(slab, "cpu"):
            slab = slab.detach().cpu().numpy()
        slab = np.asarray(slab)
        copy = self._buffer(slab.size)[:slab.size].reshape(slab.shape)
        np.copyto(copy, slab, casting="unsafe")
        self._queue.put((y0, y1, copy))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort = True
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise()


def distribute_slabs(
    ranges: Sequence[Tuple[int, int]],
    compute: Callable[[int, int], np.ndarray],
    shape: Tuple[int, int, int],
    device=None,
) -> Iterator[Slab]:
    """Compute ``compute(y0, y1) -> (nz, y1 - y0, nx)`` over ``ranges``, shared among torchrun
    processes: slab ``i`` is computed by rank ``i % world``; rank 0 receives the others' slabs
    and yields every slab in order, the other ranks yield nothing. A single process simply
    computes and yields each slab. Every rank must iterate the result to the end.

    Args:
        shape: the whole output ``(nz, ny, nx)`` (for the receive buffers).
        device: where the slabs are sent from (NCCL needs CUDA tensors; gloo uses the CPU).
    """
    from localet_core.device import distributed_context

    rank, world = distributed_context()
    if world == 1:
        for y0, y1 in ranges:
            yield y0, y1, compute(y0, y1)
        return
    import torch
    import torch.distributed as dist

    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for i, (y0, y1) in enumerate(ranges):
        owner = i % world
        if owner == rank:
            slab = compute(y0, y1)
            if rank == 0:
                yield y0, y1, slab
            else:
                dist.send(torch.from_numpy(slab).to(comm_device), dst=0)
        elif rank == 0:
            buf = torch.empty((shape[0], y1 - y0, shape[2]), dtype=torch.float32, device=comm_device)
            dist.recv(buf, src=owner)
            yield y0, y1, buf.cpu().numpy()


def is_writer() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    from localet_core.device import distributed_context

    return distributed_context()[0] == 0
