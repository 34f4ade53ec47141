"""Metrics of every barrel process of an instance: declared once, recorded per process, read together.

``catalog`` declares every metric; each process counts into its ``recorder``
and writes a ``snapshots`` file a second into the runtime directory; the
readers merge the live ones: the Prometheus exposition (``exposition``,
served by the workers on ``metrics_path`` and by the ``exporter`` side
process on ``metrics_listen``), ``statsd``, and ``gunicorn-barrel status``
(``status``). The bottom of the package's layers: it imports nothing of
barrel above config and runtime, and prometheus_client only in
``exposition`` and ``exporter``, never in the arbiter.
"""
