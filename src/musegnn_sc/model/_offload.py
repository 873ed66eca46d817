"""File-backed memory for the per-dataset decoders of atlases: only the datasets in use are resident.

Each dataset of a MuSe-GNN model has its own MLP decoder, three ``n x n`` layers: 3 M parameters at 1,000 genes, and
with Adam's two moments and the copy that lets training fall back on the last complete epoch, 48 MB per dataset. A
training step uses one dataset's decoder (its own graph's; the partner graph is only encoded), so at a thousand
datasets holding every decoder in memory (48 GB) buys nothing. With ``offload=True`` the decoders, their Adam moments
and their saved copies live in a :class:`FileArena`: an unlinked temporary file mapped into memory (``MAP_SHARED``).
They are ordinary float32 tensors for torch, Lightning and the optimiser, so training does the same arithmetic, bit
for bit; after each step the pages of the dataset just trained are dropped from the process
(``madvise(MADV_DONTNEED)``: the operating system writes them back to the file and reads them in again when that
decoder is next used), and the next dataset's pages are requested ahead (``MADV_WILLNEED``). Resident memory then
holds the decoders of the step at hand, whatever the number of datasets; the file grows with it instead (48 MB per
1,000-gene dataset, on the disk of ``offload_dir``).

The file is unlinked as soon as it is mapped: its space returns to the file system when the model is garbage
collected or the process ends, even after a crash, and no stray file is left behind.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import tempfile
from pathlib import Path

import torch

_PAGE = mmap.PAGESIZE
_FLOAT = 4  # bytes of a float32


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class FileArena:
    """Float32 tensors carved out of one memory-mapped, unlinked temporary file.

    Parameters
    ----------
    n_floats
        Capacity in float32 values (each tensor starts on a page boundary; :func:`arena_floats` sizes an arena for a
        list of tensor sizes).
    directory
        Folder of the temporary file (default: the system's temporary folder, ``TMPDIR``).
    what
        What the arena holds, for error messages.
    """

    def __init__(self, n_floats: int, directory: str | os.PathLike | None = None, *, what: str = "decoders"):
        folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        if not folder.is_dir():
            msg = f"`offload_dir` {str(folder)!r} is not a directory. Create it, or pass an existing folder."
            raise FileNotFoundError(msg)
        self.nbytes = max(_round_up(int(n_floats) * _FLOAT, _PAGE), _PAGE)
        free = shutil.disk_usage(folder).free
        if free < self.nbytes:
            msg = (
                f"Offloading the {what} needs {self.nbytes / 1e9:.1f} GB of disk in {folder}, which has "
                f"{free / 1e9:.1f} GB free. Pass `offload_dir=` a folder on a larger disk."
            )
            raise OSError(msg)
        fd, name = tempfile.mkstemp(prefix="musegnn-offload-", suffix=".bin", dir=folder)
        try:
            _reserve(fd, self.nbytes, folder, what)
            self._map = mmap.mmap(fd, self.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(name)
        self._fd = fd  # kept for :meth:`write`; closed with the arena
        self.directory = folder
        self._base = _address(self._map)
        self._next = 0  # byte offset of the next free page

    def tensor(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """A new zero-filled float32 tensor of ``shape`` backed by the file (page-aligned)."""
        count = 1
        for s in shape:
            count *= int(s)
        nbytes = _round_up(max(count, 1) * _FLOAT, _PAGE)
        if self._next + nbytes > self.nbytes:
            msg = "FileArena is full (internal error: it was sized for fewer tensors); please report it."
            raise RuntimeError(msg)
        out = torch.frombuffer(self._map, dtype=torch.float32, count=count, offset=self._next).view(*shape)
        self._next += nbytes
        return out

    def _span(self, t: torch.Tensor) -> tuple[int, int] | None:
        start = t.data_ptr() - self._base
        if not 0 <= start < self.nbytes:
            return None
        lo = start - start % _PAGE
        hi = min(_round_up(start + t.numel() * _FLOAT, _PAGE), self.nbytes)
        return lo, hi - lo

    def write(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Copy ``src`` into the arena tensor ``dst`` with ``pwrite``, without faulting ``dst``'s pages in.

        A store through the mapping would first read every page it touches from the file (a page fault per 4 kB);
        writing whole pages through the file descriptor lets the kernel replace them in its page cache without reading
        them, and the mapping sees the new values.
        """
        span = self._span(dst)
        if span is None or not dst.is_contiguous() or dst.shape != src.shape:
            msg = "FileArena.write takes a contiguous tensor of this arena and a source of its shape (internal error)."
            raise ValueError(msg)
        data = memoryview(src.detach().to("cpu", torch.float32).contiguous().numpy()).cast("B")
        offset, done = dst.data_ptr() - self._base, 0
        while done < len(data):  # pwrite may write less than asked (at most about 2 GB per call on Linux)
            done += os.pwrite(self._fd, data[done:], offset + done)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            self._fd = None

    def release(self, tensors) -> None:
        """Drop the pages of ``tensors`` from this process (their contents stay in the file)."""
        self._advise(tensors, mmap.MADV_DONTNEED)

    def prefetch(self, tensors) -> None:
        """Ask the operating system to read the pages of ``tensors`` in ahead of their use."""
        self._advise(tensors, mmap.MADV_WILLNEED)

    def _advise(self, tensors, advice: int) -> None:
        for t in tensors:
            span = self._span(t)
            if span is not None and span[1] > 0:
                self._map.madvise(advice, *span)

    def owns(self, t: torch.Tensor) -> bool:
        """Whether ``t`` lies in this arena."""
        return self._span(t) is not None


def _reserve(fd: int, nbytes: int, folder: Path, what: str) -> None:
    """Give the file ``nbytes`` of allocated disk now: a full disk is an error here, not a crash in training.

    Pages of a memory-mapped file whose disk blocks cannot be allocated when first written kill the process
    (``SIGBUS``); ``posix_fallocate`` allocates them up front. Where the file system cannot (``EOPNOTSUPP``), the
    file is only sized, as a sparse file.
    """
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.ftruncate(fd, nbytes)
            return
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            msg = (
                f"Offloading the {what} needs {nbytes / 1e9:.1f} GB of disk in {folder}, which does not have it "
                f"({err.strerror}). Pass `offload_dir=` a folder on a larger disk."
            )
            raise OSError(err.errno, msg) from None
        raise


def _address(buffer: mmap.mmap) -> int:
    """Address of the first byte of a memory map."""
    import ctypes

    view = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # release the buffer export at once


def arena_floats(sizes) -> int:
    """Capacity (in float32 values) of an arena holding tensors of ``sizes`` elements, each page-aligned."""
    return sum(_round_up(max(int(n), 1) * _FLOAT, _PAGE) for n in sizes) // _FLOAT


#: Bytes per decoder parameter while training: the weight, Adam's two moments and the saved copy, float32 each.
TRAINING_BYTES_PER_PARAMETER = 16


def mlp_decoder_parameters(n_genes) -> int:
    """Parameters of the MLP decoders of graphs of ``n_genes`` genes (three ``Linear(n, n)`` layers each)."""
    return sum(3 * (n * n + n) for n in n_genes)


def available_memory() -> int | None:
    """Memory the system can give without swapping (``MemAvailable`` of ``/proc/meminfo``), or ``None``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def should_offload(offload, n_genes, decoder: str) -> bool:
    """Resolve the ``offload`` option of :class:`~musegnn_sc.model.MuSeGNN` for graphs of ``n_genes`` genes.

    ``'auto'`` offloads MLP decoders when their training state would take more than half of the available memory.
    """
    if decoder != "mlp":
        return False
    if offload == "auto":
        avail = available_memory()
        need = TRAINING_BYTES_PER_PARAMETER * mlp_decoder_parameters(n_genes)
        return avail is not None and need > avail / 2
    return bool(offload)


def resident_bytes(arena: FileArena) -> int:
    """Bytes of ``arena`` resident in this process (``Rss`` of its mapping in ``/proc/self/smaps``; 0 if unknown)."""
    start = arena._base
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0
    inside = False
    for line in lines:
        head = line.split(maxsplit=1)[0] if line else ""
        if "-" in head and ":" not in head:
            lo = int(head.split("-")[0], 16)
            inside = lo == start
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    return 0
