"""Hosts in a star around a standalone hub: every broadcaster dials the hub only.

Run the hub (any host the others reach; it needs no gunicorn):

    gunicorn-barrel-keys /etc/gunicorn-barrel/hub-keys hub
    gunicorn-barrel-hub --listen tcp://0.0.0.0:7000 --keys /etc/gunicorn-barrel/hub-keys

and on every gunicorn host (the same file everywhere, no listener needed):

    gunicorn-barrel-keys /etc/gunicorn-barrel/keys NAME
    gunicorn -c example_confs/federation_star.py -b 0.0.0.0:8000 app:wsgi

Copy each host's NAME.key into the hub's peers/ and hub.key into each host's
peers/. Emitters (cron jobs, gunicorn_barrel.sio.emitter.Emitter) dial the hub
too: their keys go into the hub's emitters/.
"""
import os

from gunicorn_barrel import hooks

HUB = os.environ.get("FEDERATION_HUB", "tcp://10.0.0.100:7000")

worker_class = "gunicorn_barrel.workers.BarrelWorker"
workers = 4
hooks.install(
    globals(),
    federation_peers=f"hub={HUB}",
    federation_keys=os.environ.get("FEDERATION_KEYS", "/etc/gunicorn-barrel/keys"),
)
