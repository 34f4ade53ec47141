"""Hosts in a chain (a - b - c): each broadcaster linked to the next one only.

For hosts that cannot all reach each other (b sits between two networks).
A pair is a chain of two. One file for all the hosts; each runs it with its
own name:

    FEDERATION_NODE=b gunicorn -c example_confs/federation_chain.py -b 0.0.0.0:8000 app:wsgi

Keys: ``gunicorn-barrel-keys /etc/gunicorn-barrel/keys NAME`` on each host,
then each host's NAME.key into its neighbours' peers/ directory (and only
theirs: a listener keeps frames for every key there, expecting it to dial in).

Frames from a reach c through b: when b's broadcaster is killed, a keeps what
b had not acknowledged and the new b keeps, for c, what arrives before c's
link is back. Not covered: frames b had acknowledged but still held for a
link that was down at that moment (two failures at once). See "Multi-host"
in README.rst.
"""
import os

from gunicorn_barrel import hooks

# The chain, in order: name -> that host's federation endpoint.
HOSTS = dict(item.split("=", 1) for item in os.environ.get(
    "FEDERATION_HOSTS", "a=tcp://10.0.0.1:7001,b=tcp://10.0.0.2:7001,c=tcp://10.0.0.3:7001",
).split(","))
me = os.environ["FEDERATION_NODE"]
names = list(HOSTS)
previous = names[names.index(me) - 1] if names.index(me) > 0 else None

worker_class = "gunicorn_barrel.workers.BarrelWorker"
workers = 4
hooks.install(
    globals(),
    # Each host listens for the next one and dials the previous one.
    federation_listen=HOSTS[me] if me != names[-1] else "",
    federation_peers=f"{previous}={HOSTS[previous]}" if previous else "",
    federation_keys=os.environ.get("FEDERATION_KEYS", "/etc/gunicorn-barrel/keys"),
)
