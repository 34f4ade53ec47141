"""Checks that a patched or relied-on target still has the shape barrel expects.

Each raises IncompatibleLibrary naming the library, its installed version and
what changed, so that a worker refuses to start instead of running with an
optimisation silently switched off or packets left unsent.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any

from gunicorn_barrel.compat.versions import IncompatibleLibrary


def attribute(dist: str, owner: Any, name: str, where: str) -> Any:
    """``owner.name``, or IncompatibleLibrary saying that ``where`` is gone."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise IncompatibleLibrary(dist, f"{where} is gone") from None


def has_attributes(dist: str, obj: Any, names: tuple[str, ...], what: str) -> None:
    """Require the attributes barrel reads on ``obj`` (a fresh instance of ``what``)."""
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise IncompatibleLibrary(dist, f"{what} has no attribute {', '.join(missing)}")


def parameters(dist: str, func: Any, where: str) -> list[str]:
    """The parameter names of callable ``func``."""
    if not callable(func):
        raise IncompatibleLibrary(dist, f"{where} is no longer callable")
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        raise IncompatibleLibrary(dist, f"{where} has no inspectable signature") from None


def signature(dist: str, owner: Any, name: str, where: str, expected: tuple[str, ...]) -> None:
    """Require ``owner.name`` to take exactly the parameters ``expected`` (a target barrel replaces)."""
    found = parameters(dist, attribute(dist, owner, name, where), where)
    if tuple(found) != expected:
        raise IncompatibleLibrary(dist, f"{where} takes ({', '.join(found)}), "
                                        f"expected ({', '.join(expected)})")


def accepts(dist: str, owner: Any, name: str, where: str, used: tuple[str, ...]) -> None:
    """Require ``owner.name`` to be callable with the parameters barrel passes (``used``, in order)."""
    found = parameters(dist, attribute(dist, owner, name, where), where)
    if found[:len(used)] != list(used):
        raise IncompatibleLibrary(dist, f"{where} takes ({', '.join(found)}), "
                                        f"barrel calls it with ({', '.join(used)})")


def fresh_engineio_socket() -> Any:
    """A new engine.io gevent server's Socket, to check the attributes barrel reads on one."""
    import engineio
    from engineio.socket import Socket

    # An explicit logger: engine.io would configure its default one as a side effect.
    server = engineio.Server(async_mode="gevent", monitor_clients=False,
                             logger=logging.getLogger("gunicorn_barrel.compat"))
    return Socket(server, "barrel-compat-check")
