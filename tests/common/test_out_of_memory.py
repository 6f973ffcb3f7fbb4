"""common/out_of_memory.py tells running out of memory from other errors, in each framework's words."""

import pytest

from common.out_of_memory import out_of_memory_line


class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name and base, without torch
    pass


@pytest.mark.parametrize(("error", "line"), [
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 31637062272 bytes.\nBufferAssignment"),
     "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 31637062272 bytes."),
    (RuntimeError("RESOURCE_EXHAUSTED: Failed to allocate request for 2.00GiB (2147483648B) on device ordinal 0"),
     "RESOURCE_EXHAUSTED: Failed to allocate request for 2.00GiB (2147483648B) on device ordinal 0"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)"),
     "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 9007199254740992 bytes. Error code 12 (Cannot allocate memory)"),
     "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
     "9007199254740992 bytes. Error code 12 (Cannot allocate memory)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:73] DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 8 bytes."),
     "[enforce fail at alloc_cpu.cpp:73] DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes."),
    (MemoryError("Unable to allocate 8.00 PiB for an array with shape (2**50,) and data type float64"),
     "Unable to allocate 8.00 PiB for an array with shape (2**50,) and data type float64"),
    (MemoryError(), "MemoryError"),
    (OutOfMemoryError(""), "OutOfMemoryError"),
])
def test_each_frameworks_out_of_memory_is_told_by_its_line(error, line):
    assert out_of_memory_line(error) == line


@pytest.mark.parametrize("error", [
    RuntimeError("a bug"),
    RuntimeError("RESOURCE_EXHAUSTED: the coordination service's barrier timed out"),  # gRPC, not memory
    ValueError("memory layout of the batch is not contiguous"),
])
def test_other_errors_are_not_out_of_memory(error):
    assert out_of_memory_line(error) is None
