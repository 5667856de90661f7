"""``DeviceRuntime``: memory and queue queries for one device, behind one small object.

The default drives any torch device module (``torch.get_device_module(type)``: the
CUDA-like API every accelerator build of torch registers, torch_npu and torch_mlu
included), so a plugin hands over a different module or overrides a method only
where its device differs.  ``CpuRuntime`` is the host: no queue, no allocator stats.

A device without an index means the device module's current device, for every call
(torch's calls disagree on whether an index-less device is accepted, so an ordinal
is always passed).
"""
from __future__ import annotations

import os

import torch

# KV cache budget on the CPU, in GiB (the host has no "free device memory" to size from).
CPU_KV_SPACE_ENV = "HALINFER_CPU_KVCACHE_GB"


def device_module(device_type: str):
    """torch's module for a device type (``torch.get_device_module`` where torch has it)."""
    get = getattr(torch, "get_device_module", None)
    return get(device_type) if get is not None else getattr(torch, device_type)


class DeviceRuntime:
    """One torch.device's runtime: set current, synchronize, memory, host buffers, events."""

    def __init__(self, device: torch.device, module=None):
        self.device = torch.device(device)
        self.module = module if module is not None else device_module(self.device.type)

    @property
    def index(self) -> int:
        return self.device.index if self.device.index is not None else int(self.module.current_device())

    def set_device(self) -> None:
        self.module.set_device(self.index)

    def synchronize(self) -> None:
        self.module.synchronize(self.index)

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        free, total = self.module.mem_get_info(self.index)
        return int(free), int(total)

    def memory_allocated(self) -> int:
        return int(self.module.memory_allocated(self.index))

    def max_memory_allocated(self) -> int:
        return int(self.module.max_memory_allocated(self.index))

    def reset_peak_memory(self) -> None:
        self.module.reset_peak_memory_stats(self.index)

    def empty_cache(self) -> None:
        self.module.empty_cache()

    def kv_cache_budget(self, utilization: float, in_use: int) -> int:
        """Bytes the KV cache may take: ``total * utilization - in_use`` (in_use: what the
        engine already holds: weights, a profiling step's activations, graphs), at most free."""
        free, total = self.mem_get_info()
        return max(0, min(free, int(total * utilization) - in_use))

    # ---- asynchronous steps ------------------------------------------------------------------
    @property
    def _has_queue(self) -> bool:
        # Tensors on the host run synchronously whatever module drives them (emulations).
        return self.device.type != "cpu"

    def host_buffer(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """Host memory a device->host copy may land in without blocking (pinned)."""
        return torch.empty(shape, dtype=dtype, pin_memory=self._has_queue)

    def record_event(self):
        """Mark the device queue after the work issued so far; None where there is no
        queue or the module has no events (wait_event then synchronizes)."""
        event_cls = getattr(self.module, "Event", None)
        if not self._has_queue or event_cls is None:
            return None
        ev = event_cls()
        ev.record(self.module.current_stream(self.index))
        return ev

    def wait_event(self, event) -> None:
        """Block the host until ``event`` (from record_event) has been reached."""
        if event is None:
            self.synchronize()
        else:
            event.synchronize()


class CpuRuntime(DeviceRuntime):
    """The host: nothing to synchronize, no allocator statistics (so no profiling pass)."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = torch.device(device)
        self.module = None

    @property
    def index(self) -> int:
        return 0

    def set_device(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def mem_get_info(self) -> tuple[int, int]:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_AVPHYS_PAGES"), page * os.sysconf("SC_PHYS_PAGES")

    def memory_allocated(self) -> int:
        return 0

    def max_memory_allocated(self) -> int:
        return 0

    def reset_peak_memory(self) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def kv_cache_budget(self, utilization: float, in_use: int) -> int:
        return int(float(os.environ.get(CPU_KV_SPACE_ENV, "1")) * (1 << 30))

    def record_event(self):
        return None
