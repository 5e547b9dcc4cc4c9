"""One kept SSH connection to a submit host (and its SFTP session), through paramiko: how it is made and checked.

Shared by the transports of every queue that names the same (host, port, user, key, known_hosts, jump host), with
keepalives; one that dropped is made again on the next call. Host keys are always checked against
``known_hosts``: an unknown host is refused unless the queue opted in with ``transport.accept_unknown_host`` (then
its key is recorded there on first use); a changed key is always refused. A connection that cannot be made raises
one of three distinct errors: :class:`HostUnreachable`, :class:`AuthenticationFailed`, :class:`UnknownHostKey`
(and :class:`HostKeyChanged`).
"""
import dataclasses
import getpass
import logging
import os
import socket
import threading

import paramiko

from harvester.transport.base import TransportError

log = logging.getLogger(__name__)
_KEEPALIVE_S = 30


class SshError(TransportError):
    """The SSH connection could not be made."""


class HostUnreachable(SshError):
    """No TCP connection / SSH handshake with the host (down, wrong port, firewall, timeout)."""


class AuthenticationFailed(SshError):
    """The host refused our key (or we have no usable key)."""


class UnknownHostKey(SshError):
    """The host's key is not in known_hosts and the queue did not opt in to trusting new hosts."""


class HostKeyChanged(SshError):
    """The host presented a key other than the one known_hosts holds for it."""


@dataclasses.dataclass(frozen=True)
class SshSettings:
    """Where and how to connect (from a queue's ``transport`` section)."""

    host: str
    port: int = 22
    user: str = ""
    key_file: str = ""
    known_hosts: str = ""
    jump_host: str = ""
    jump_port: int = 22
    jump_user: str = ""
    connect_timeout: float = 30
    command_timeout: float = 300
    accept_unknown_host: bool = False
    python: str = "python3"

    @classmethod
    def from_queue(cls, section):
        expand = lambda p: os.path.expanduser(p) if p else ""  # noqa: E731
        user = section.user or getpass.getuser()
        return cls(host=section.host, port=section.port, user=user, key_file=expand(section.key_file),
                   known_hosts=expand(section.known_hosts or "~/.ssh/known_hosts"),
                   jump_host=section.jump_host or "", jump_port=section.jump_port,
                   jump_user=section.jump_user or user, connect_timeout=section.connect_timeout,
                   command_timeout=section.command_timeout,
                   accept_unknown_host=getattr(section, "accept_unknown_host", False),
                   python=getattr(section, "python", None) or "python3")

    @property
    def where(self):
        return f"{self.user}@{self.host}:{self.port}" + (f" via {self.jump_user}@{self.jump_host}:{self.jump_port}"
                                                         if self.jump_host else "")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse a host missing from known_hosts, or (opted in) record its key there and go on."""

    def __init__(self, settings):
        self.settings = settings

    def missing_host_key(self, client, hostname, key):
        known = self.settings.known_hosts
        fingerprint = f"{key.get_name()} SHA256:{_fingerprint(key)}"
        if not self.settings.accept_unknown_host:
            raise UnknownHostKey(
                f"ssh {hostname}: host key {fingerprint} is not in {known}{'' if os.path.exists(known) else ' (no such file)'}"
                f": refused. Check the fingerprint with the host's admin and add it (ssh-keyscan -p PORT HOST >> "
                f"{known}), or set transport.accept_unknown_host: true to trust a new host on first use")
        folder = os.path.dirname(known)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(known, "a", encoding="ascii") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("ssh %s: unknown host key %s trusted on first use (transport.accept_unknown_host) and recorded "
                    "in %s", hostname, fingerprint, known)


def _fingerprint(key):
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class Connection:
    """One SSH connection (and its SFTP session), shared by the transports of every queue on that host."""

    def __init__(self, settings):
        self.settings = settings
        self.users = 0
        self.client = self.jump = self.sftp = None
        self.lock = threading.RLock()  # connect/reconnect
        self.sftp_lock = threading.Lock()  # one SFTP request at a time
        self.helper = None  # the kept-open file helper (:class:`FileHelper`) on this connection
        self.helper_lock = threading.Lock()  # one batch of file operations at a time

    def active(self):
        transport = self.client.get_transport() if self.client else None
        return transport is not None and transport.is_active()

    def transport(self):
        """The live paramiko transport, connecting first when needed."""
        with self.lock:
            if not self.active():
                self.drop()
                self.connect()
            return self.client.get_transport()

    def sftp_client(self):
        with self.lock:
            transport = self.transport()
            if self.sftp is None or self.sftp.get_channel() is None or self.sftp.get_channel().closed:
                self.sftp = paramiko.SFTPClient.from_transport(transport)
            return self.sftp

    def connect(self):
        s = self.settings
        sock = None
        if s.jump_host:
            self.jump = self._client(s.jump_host, s.jump_port, s.jump_user)
            try:
                sock = self.jump.get_transport().open_channel("direct-tcpip", (s.host, s.port), ("127.0.0.1", 0),
                                                              timeout=s.connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise HostUnreachable(f"ssh {s.where}: the jump host could not reach {s.host}:{s.port}: "
                                      f"{reason(exc)}") from None
        self.client = self._client(s.host, s.port, s.user, sock)
        log.info("ssh %s: connected", s.where)

    def _client(self, host, port, user, sock=None):
        s = self.settings
        if s.key_file and not os.path.isfile(s.key_file):
            raise AuthenticationFailed(f"ssh {user}@{host}:{port}: key file {s.key_file}: no such file")
        client = paramiko.SSHClient()
        if os.path.exists(s.known_hosts):
            client.load_system_host_keys(s.known_hosts)  # read only: only the opt-in policy appends to it
        client.set_missing_host_key_policy(_HostKeyPolicy(s))
        where = f"{user}@{host}:{port}"
        try:
            client.connect(host, port, username=user, key_filename=s.key_file or None,
                           look_for_keys=not s.key_file, allow_agent=not s.key_file, sock=sock,
                           timeout=s.connect_timeout, banner_timeout=s.connect_timeout,
                           auth_timeout=s.connect_timeout, channel_timeout=s.connect_timeout)
        except SshError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(f"ssh {where}: the host presented key {exc.key.get_name()} "
                                 f"SHA256:{_fingerprint(exc.key)}, but {s.known_hosts} holds another key for it: "
                                 "refused (the host was reinstalled, or someone is in between); after checking "
                                 f"with its admin, replace its line in {s.known_hosts}") from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise AuthenticationFailed(f"ssh {where}: key file {s.key_file} is protected by a passphrase; harvester "
                                       "needs a key without one (or an SSH agent)") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            key = f"key {s.key_file}" if s.key_file else "the SSH agent and ~/.ssh keys"
            raise AuthenticationFailed(f"ssh {where}: authentication failed with {key} ({exc}); is its public "
                                       f"key in {user}'s authorized_keys on {host}?") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise HostUnreachable(f"ssh {where}: cannot connect: {reason(exc)} (is the host up and the port "
                                  f"right? connect_timeout {s.connect_timeout:g} s)") from None
        client.get_transport().set_keepalive(_KEEPALIVE_S)
        return client

    def drop(self):
        """Forget the connection (closing what is left of it); the next call connects again."""
        for thing in (self.helper, self.sftp, self.client, self.jump):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection must not hide anything
                    pass
        self.client = self.jump = self.sftp = self.helper = None


def reason(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout):
        return f"timed out ({text})"
    return text
