"""The one exception type users see: a refusal that names the option to change."""


class PeftbenchError(Exception):
    """A configuration or input problem found before (or instead of) training.

    ``option`` names the config key to change, so the message can say it.
    """

    def __init__(self, message: str, option: str | None = None):
        self.option = option
        super().__init__(f"[{option}] {message}" if option else message)


class ConfigError(PeftbenchError):
    """Invalid combination or value in the composed config."""


class DataError(PeftbenchError):
    """A dataset file that is missing, empty or malformed."""
