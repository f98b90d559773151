"""Peak-memory helpers for the benchmark scripts (Linux /proc)."""


def status_mb(field: str) -> float:
    """VmRSS / VmHWM (current / peak resident memory) of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> float:
    """Resets the peak (VmHWM) to the current RSS and returns that RSS: what follows is
    measured alone."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")
