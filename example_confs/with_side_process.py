"""A side process of your own, supervised by gunicorn's arbiter beside the workers.

    gunicorn -c example_confs/with_side_process.py -b 127.0.0.1:8000 demos.chat.app:wsgi

The chat demo's announcer (demos/chat/announcer.py) posts an announcement to
every client of every worker every 30 s (CHAT_ANNOUNCE_EVERY), over this
instance's own bus. The arbiter starts it before the workers, restarts it
when it dies (with backoff), stops it on exit, and it dies with the arbiter;
HUP keeps it running (on_reload="keep"; "restart" would restart it); it runs
as gunicorn's user; its output goes to gunicorn's error log.
"""
import os

from gunicorn_barrel import hooks

workers = 4
worker_class = "gunicorn_barrel.workers.BarrelWorker"

HERE = os.path.dirname(os.path.abspath(__file__))

hooks.install(globals(), side_processes=[
    hooks.SideProcess(
        "announcer",
        module="demos.chat.announcer",  # run as `python -m`, from gunicorn's directory (--chdir)
        args=["--every", os.environ.get("CHAT_ANNOUNCE_EVERY", "30")],
        env={"CHAT_ANNOUNCEMENTS": os.path.join(HERE, "..", "demos", "chat", "announcements.txt")},
        on_reload="keep",
    ),
])
