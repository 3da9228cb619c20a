"""One registration point, so every layer serialises under the `mail_tf>` package prefix, and the
defaults a config saved before an option existed was built with."""

import keras

PACKAGE = "mail_tf"


def register(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def saved_before(renamed=None, **options):
    """Class decorator: a config without `options` (saved before they existed) loads with these
    values, the behaviour it was trained with, not today's defaults; `renamed` maps old keys to
    their new names."""

    def decorate(cls):
        from_config = cls.from_config.__func__

        @classmethod
        def with_old_defaults(klass, config):
            old = [k for k in config if k in (renamed or {})]
            if old:
                from mail_tf.layers.defense import warn_renamed

                warn_renamed(klass.__name__, old)
            config = {(renamed or {}).get(k, k): v for k, v in config.items()}
            return from_config(klass, {**options, **config})

        cls.from_config = with_old_defaults
        return cls

    return decorate
