"""One registration point, so every layer serialises under the `mail_tf>` package prefix."""

import keras

PACKAGE = "mail_tf"


def register(cls):
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
