"""The one exception type users see for bad input."""


class MfifError(ValueError):
    """Bad input or an impossible request, with a one-sentence message for the user.

    The CLI prints the message as a single line (no traceback) and exits non-zero; the
    napari widget shows it as a notification.
    """
