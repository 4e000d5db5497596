"""Fixtures shared by the detector tests."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops after which a GPU waits for the device: a value read into Python (``item``, ``bool``, ``int``...),
# or an output whose shape depends on the data (the host must learn it to allocate).
_READING_OPS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "bincount",
                "repeat_interleave", "_unique", "_unique2", "unique_dim", "unique_consecutive"}
_INDEXING_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}  # read only with a boolean mask


class DeviceReads(TorchDispatchMode):
    """Records, by aten name, every op run inside it that would make a GPU step wait for the device. Runs on
    CPU tensors, so a test finds such a read without a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masked = name in _INDEXING_OPS and any(
            index is not None and index.dtype in (torch.bool, torch.uint8) for index in args[1])
        if name in _READING_OPS or masked:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def device_reads():
    """``with device_reads() as reads: ...`` then ``reads.ops``: the device reads of the code inside."""
    return DeviceReads


@contextlib.contextmanager
def _counting_host_reads():
    """Counts reads of a tensor's value into Python (``item``, ``float``, ``int``, ``bool``, ``tolist``,
    ``numpy``): on a GPU each waits for the device."""
    names = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    reads = []

    def counted(name):
        def read(tensor, *args, **kwargs):
            reads.append(name)
            return originals[name](tensor, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture
def host_reads():
    """``with host_reads() as reads: ...`` then ``reads``: the names of the value reads of the code inside
    (a lighter check than ``device_reads``: only what Python itself reads)."""
    return _counting_host_reads
