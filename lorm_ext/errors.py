"""The error every op raises for bad input."""


class LormInputError(ValueError):
    """An argument has the wrong shape, dtype, device or values; nothing was modified."""
