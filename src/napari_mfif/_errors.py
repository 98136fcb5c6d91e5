"""The one exception type users see for bad input."""


class MfifError(ValueError):
    """Bad input or an impossible request, with a one-sentence message for the user.

    The CLI prints the message as a single line (no traceback) and exits non-zero; the
    napari widget shows it as a notification.
    """


class FusionCancelled(Exception):
    """Raised through :func:`napari_mfif.fuse` when the run was cancelled.

    A ``progress`` callback cancels a run by raising it (the napari widget's Cancel button
    does this); :func:`~napari_mfif.fuse` stops at its next progress step, frees what it
    held on the GPU and re-raises. Nothing is returned and nothing is written.
    """
