"""User-facing errors. The CLI prints these as one line and exits with code 2."""


class MelfusionInputError(ValueError):
    """Bad user input (file, prompt, length, model folder). The message names the problem and the fix."""
