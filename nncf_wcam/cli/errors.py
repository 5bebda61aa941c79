"""The command line's own error and exit codes."""

from nncf_wcam.errors import NncfWcamError

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UsageError(NncfWcamError):
    """A problem with the user's inputs: reported as one line, exit code 2."""
