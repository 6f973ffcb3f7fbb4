"""Whether an error is a framework running out of memory, told from its type and text alone (no
framework imported), for the commands that answer it with one line instead of a traceback.

    XLA (CPU, GPU)   XlaRuntimeError "RESOURCE_EXHAUSTED: Out of memory while trying to allocate ..."
                     or, from the GPU's BFC allocator, "... Failed to allocate request for 2.00GiB"
    torch, CUDA      torch.OutOfMemoryError "CUDA out of memory. Tried to allocate ..."
    torch, CPU       RuntimeError "... DefaultCPUAllocator: can't allocate memory: you tried to
                     allocate N bytes" (Linux), "... not enough memory" (Windows)
    numpy, Python    MemoryError
"""

from __future__ import annotations

_MARKS = ("out of memory", "failed to allocate", "can't allocate memory", "cannot allocate memory",
          "not enough memory")


def out_of_memory_line(error: BaseException) -> str | None:
    """The line of `error` that says memory ran out (its first line for a MemoryError or an
    OutOfMemoryError whose text says nothing), or None for any other error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if any(mark in line.lower() for mark in _MARKS):
            return line
    typed = isinstance(error, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)
    if typed:
        return lines[0] if lines else type(error).__name__
    return None
