"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class RistrettoError(Exception):
    """Bad input or an impossible request. The message names the file and place.

    Raise it with a complete sentence such as
    ``RistrettoError("lenet.prototxt:12:3: expected '}'")``; the CLI prints
    ``ristretto: error: <message>`` and exits with status 2.
    """
