"""Several hosts in a full mesh: every broadcaster linked to every other one.

One file for all the hosts; each host runs it with its own name:

    FEDERATION_NODE=a gunicorn -c example_confs/federation_mesh.py -b 0.0.0.0:8000 app:wsgi

Keys, once per host, then copy each host's NAME.key into every other host's
/etc/gunicorn-barrel/keys/peers/:

    gunicorn-barrel-keys /etc/gunicorn-barrel/keys a      # on host a; b and c likewise

A frame crosses one link to reach any host, so a broadcaster that crashes
takes nothing with it that other hosts had not already received directly.
"""
import os

from gunicorn_barrel import hooks

# name -> that host's federation endpoint (FEDERATION_HOSTS overrides, e.g. in tests)
HOSTS = dict(item.split("=", 1) for item in os.environ.get(
    "FEDERATION_HOSTS", "a=tcp://10.0.0.1:7001,b=tcp://10.0.0.2:7001,c=tcp://10.0.0.3:7001",
).split(","))
me = os.environ["FEDERATION_NODE"]
names = sorted(HOSTS)
# Each link is configured on one side only: a host dials the hosts after it.
dial = names[names.index(me) + 1:]

worker_class = "gunicorn_barrel.workers.BarrelWorker"
workers = 4
hooks.install(
    globals(),
    federation_listen=HOSTS[me],
    federation_peers=",".join(f"{name}={HOSTS[name]}" for name in dial),
    federation_keys=os.environ.get("FEDERATION_KEYS", "/etc/gunicorn-barrel/keys"),
)
