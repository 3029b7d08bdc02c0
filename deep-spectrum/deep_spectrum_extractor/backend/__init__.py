"""Images -> features: frozen TensorFlow graphs behind a small interface.

Nothing outside this package imports TensorFlow, so the CLI's ``-h``, chunking,
rendering and writing never pay for it.
"""
