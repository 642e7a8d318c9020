"""The error every check raises for a config that cannot work."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""
