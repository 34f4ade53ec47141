"""Finding a running instance's runtime directory: from a pid file, a directory, or the address it listens on.

The runtime directory is the way in: private (0700), so only the instance's
user (and root) can read what it holds. Its arbiter keeps the directory's
lock file open (``runtime.endpoints``), so ``/proc/<pid>/fd`` of the arbiter
(or of any of its workers, which inherit it) names the directory; reading it
needs the same rights. Everything here raises ``NotFound`` or
``AccessDenied`` with a message for the operator, never a bare OSError.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import tempfile

from gunicorn_barrel.metrics import procfs
from gunicorn_barrel.runtime import endpoints


class NotFound(Exception):
    """No running instance where the operator pointed."""


class AccessDenied(Exception):
    """The instance is there, but belongs to another user."""


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "another user"
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def denied(path: str) -> AccessDenied:
    return AccessDenied(f"access denied: {path} belongs to {_owner(path)}; run this command as that "
                        "user (or root)")


def from_pid(pid: int) -> str:
    """The runtime directory of the instance whose arbiter (or worker) is ``pid``."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        raise NotFound(f"no process {pid} is running") from None
    except PermissionError:
        raise denied(f"/proc/{pid}") from None
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        folder, name = os.path.split(target)
        if name == endpoints.LOCK_FILE and os.path.basename(folder).startswith(endpoints.PREFIX):
            return folder
    raise NotFound(f"process {pid} is not a gunicorn_barrel instance (it holds no barrel runtime directory)")


def from_pid_file(path: str) -> str:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        raise NotFound(f"no pid file {path}: is the instance running (gunicorn --pid {path})?") from None
    except PermissionError:
        raise denied(path) from None
    if not text.isdigit():
        raise NotFound(f"pid file {path} holds no pid ({text[:20]!r})")
    return from_pid(int(text))


def from_runtime_dir(path: str) -> str:
    """``path`` itself if it is an instance's directory, else the one live instance under it (a base)."""
    if os.path.exists(os.path.join(path, endpoints.LOCK_FILE)) or os.path.basename(
            os.path.normpath(path)).startswith(endpoints.PREFIX):
        if not os.access(path, os.R_OK | os.X_OK):
            raise denied(path)
        if not endpoints.is_live(path):
            raise NotFound(f"{path}: its instance is not running")
        return path
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        raise NotFound(f"no directory {path}") from None
    except PermissionError:
        raise denied(path) from None
    live, others = [], []
    for name in names:
        candidate = os.path.join(path, name)
        if not name.startswith(endpoints.PREFIX) or not os.path.isdir(candidate):
            continue
        if not os.access(candidate, os.R_OK | os.X_OK):
            others.append(candidate)
        elif endpoints.is_live(candidate):
            live.append(candidate)
    if len(live) == 1:
        return live[0]
    if live:
        raise NotFound(f"several instances run under {path}: {', '.join(live)}; "
                       "name one with --runtime-dir, --pid-file or --bind")
    if others:
        raise denied(others[0])
    raise NotFound(f"no running gunicorn_barrel instance under {path}")


def default_base() -> str:
    """Where instances make their directories by default (the runtime_dir setting's default)."""
    return os.environ.get("BARREL_RUNTIME_DIR") or tempfile.gettempdir()


def from_bind(address: str) -> str:
    """The instance listening on ``HOST:PORT`` (or ``unix:PATH``), found through /proc."""
    inodes, uid = _listening(address)
    if uid is not None and uid != os.geteuid() and os.geteuid() != 0:
        raise AccessDenied(f"access denied: {address} is served by uid {uid}; run this command as that "
                           "user (or root)")
    holders = _holders(inodes)
    if not holders:
        raise NotFound(f"no process of yours listens on {address}")
    # The arbiter is the holder whose parent does not hold the socket too.
    arbiters = [pid for pid, ppid in holders.items() if ppid not in holders]
    return from_pid(min(arbiters or holders))


def _listening(address: str) -> tuple[set[int], int | None]:
    """Inodes of the listening sockets on ``address``, and their owner's uid."""
    if address.startswith("unix:"):
        return _unix_listening(address.removeprefix("unix:").removeprefix("//"))
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise NotFound(f"expected HOST:PORT or unix:PATH, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        wanted = {ipaddress.ip_address(host)}
    except ValueError:  # a name
        try:
            wanted = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, ValueError):
            raise NotFound(f"cannot resolve {host!r}") from None
    inodes, uid = set(), None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for local, state, owner, inode in _rows(table):
            ip, port = _decode(local)
            if state == "0A" and port == int(port_text) and (ip in wanted or ip.is_unspecified):
                inodes.add(inode)
                uid = owner
    if not inodes:
        raise NotFound(f"nothing listens on {address}")
    return inodes, uid


def _rows(table: str) -> list[tuple[str, str, int, int]]:
    try:
        with open(table) as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return []
    rows = []
    for line in lines:
        fields = line.split()
        rows.append((fields[1], fields[3], int(fields[7]), int(fields[9])))
    return rows


def _decode(local: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    hex_ip, hex_port = local.split(":")
    raw = bytes.fromhex(hex_ip)
    # /proc prints the address as 32-bit words in host order (little-endian here).
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(hex_port, 16)


def _unix_listening(path: str) -> tuple[set[int], int | None]:
    inodes = set()
    try:
        with open("/proc/net/unix") as fh:
            for line in fh.read().splitlines()[1:]:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; flag 00010000 = listening
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    inodes.add(int(fields[6]))
    except OSError:
        pass
    if not inodes:
        raise NotFound(f"nothing listens on unix:{path}")
    try:
        uid: int | None = os.stat(path).st_uid
    except OSError:
        uid = None
    return inodes, uid


def _holders(inodes: set[int]) -> dict[int, int]:
    """pid -> parent pid of the processes (of ours) holding one of the sockets ``inodes``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    stat = procfs.stat(int(entry))
                    found[int(entry)] = stat.ppid if stat is not None else 0
                    break
            except OSError:
                continue
    return found

