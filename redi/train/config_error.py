"""``ConfigError``: a recipe or override that does not fit ``TrainConfig``. Its own module
so that the modules ``redi.train.config`` calls (``model_spec``) can raise it without
importing ``config`` back; ``redi.train.config`` re-exports it."""


class ConfigError(ValueError):
    """A recipe or override that does not fit TrainConfig."""
