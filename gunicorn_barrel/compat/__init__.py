"""Every patch of another library's internals, applied in one documented order at worker start.

``apply.apply_patches`` checks the installed versions and each target's
shape (``versions``, ``shapes``), then patches; the order and the reasons
are in ``apply``'s docstring. On a mismatch it raises
``IncompatibleLibrary`` and the worker refuses to start.

Nothing is imported here: a gunicorn config file may import
``gunicorn_barrel.compat.versions`` in the arbiter without pulling in gevent
or engine.io.
"""
