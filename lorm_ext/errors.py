"""The errors and warnings of lorm_ext."""


class LormInputError(ValueError):
    """An argument has the wrong shape, dtype, device or values; nothing was modified."""


class SelfCheckWarning(RuntimeWarning):
    """A compiled kernel disagreed with :mod:`lorm_ext.reference` in the self-check (or
    raised); the reference runs that op on the device for the rest of the process."""


class SelfCheckError(RuntimeError):
    """``LORM_CUDA_CHECK=strict``: a compiled kernel failed the self-check, so its op
    refuses to run on that device instead of falling back to the reference."""
