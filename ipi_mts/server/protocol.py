"""The driver side of i-PI's socket protocol: framing, message layouts, exact receives.

Every message starts with a 12-byte header, an upper-case ASCII word padded with spaces.
Numbers are native-endian int32 and float64. What i-PI 3.3 sends and expects
(`ipi/interfaces/sockets.py`):

    STATUS                 -> NEEDINIT (before INIT) | READY | HAVEDATA (results held)
    INIT     rid:int32, len:int32, parameters:len bytes   (" k : v , ... [, batch_size:B]")
    POSDATA  h:9f64, h^-1:9f64, natoms:int32, q:3N f64                       (batch 1)
             natoms:int32, B x (h:9f64, h^-1:9f64), B x q:3N f64             (batch B>1)
    GETFORCE               -> FORCEREADY energy:f64, natoms:int32, f:3N f64, virial:9f64,
                                         extra_len:int32, extra bytes        (batch 1)
                              FORCEREADY energies:B f64, natoms:int32, f:B x 3N f64,
                                         virials:B x 9 f64, B x (len:int32, bytes)  (B>1)
    EXIT

h holds the cell vectors as columns (bohr), q the positions (bohr), row-major as i-PI
stores them. By default (`consolidate_messages`) i-PI sends POSDATA and GETFORCE in one
write; with `<consolidate_messages>false` it asks STATUS between them and waits for
HAVEDATA. The batch size B is announced only through the INIT string.
"""

from __future__ import annotations

import socket
import time

import numpy as np

from ..errors import UserError

HDRLEN = 12
INT32 = np.dtype(np.int32)  # native-endian, as i-PI writes np.int32(...).tobytes()
FLOAT64 = np.dtype(np.float64)


def header(word: str) -> bytes:
    """The 12-byte header for `word`: upper case, padded with spaces."""
    data = word.upper().ljust(HDRLEN).encode("ascii")
    if len(data) != HDRLEN:
        raise ValueError(f"message {word!r} is longer than {HDRLEN} characters")
    return data


STATUS = header("STATUS")
READY = header("READY")
HAVEDATA = header("HAVEDATA")
NEEDINIT = header("NEEDINIT")
INIT = header("INIT")
POSDATA = header("POSDATA")
GETFORCE = header("GETFORCE")
FORCEREADY = header("FORCEREADY")
EXIT = header("EXIT")

NAMES = {
    h: h.decode("ascii").strip()
    for h in (STATUS, READY, HAVEDATA, NEEDINIT, INIT, POSDATA, GETFORCE, FORCEREADY, EXIT)
}


class ProtocolError(UserError):
    """i-PI broke off or sent something this driver cannot follow."""


class Closed(Exception):
    """The peer closed the connection cleanly, between two messages."""


def describe(data: bytes) -> str:
    """A printable name for a received header."""
    return NAMES.get(data) or repr(data.decode("ascii", errors="replace").strip())


def recv_exact(sock: socket.socket, n: int, timeout: float | None = None, what: str = "data") -> bytes:
    """Exactly `n` bytes from `sock`, or `Closed` if the peer closed before the first byte,
    or `ProtocolError` if it closed or went silent (`timeout` seconds in all) after it."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"i-PI stopped sending in the middle of {what} (waited {timeout:g} s)")
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        try:
            k = sock.recv_into(view[got:], n - got)
        except socket.timeout:
            continue  # re-checks the deadline
        except (ConnectionResetError, BrokenPipeError) as e:
            if got == 0:
                raise Closed(str(e)) from None
            raise ProtocolError(f"i-PI reset the connection in the middle of {what}") from None
        if k == 0:
            if got == 0:
                raise Closed("end of stream")
            raise ProtocolError(f"i-PI closed the connection in the middle of {what}")
        got += k
    return bytes(buf)


def send_all(sock: socket.socket, data: bytes, timeout: float | None = None, what: str = "data") -> None:
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
    except socket.timeout:
        raise ProtocolError(f"i-PI did not accept {what} within {timeout:g} s") from None
    except (BrokenPipeError, ConnectionResetError):
        raise Closed(f"connection closed while sending {what}") from None


# ---------------------------------------------------------------------------- INIT


def parse_init_string(text: str) -> dict[str, str]:
    """i-PI's INIT parameter string (" k : v , k2 : v2 , [, batch_size:B]") as a dict of
    stripped strings; tokens without a colon are ignored."""
    out = {}
    for token in text.split(","):
        key, sep, value = token.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def batch_size_from(params: dict[str, str]) -> int:
    """The batch size i-PI announced in INIT (1 when none)."""
    value = params.get("batch_size", "1")
    try:
        n = int(value)
    except ValueError:
        raise ProtocolError(f"i-PI announced a batch size {value!r} that is not an integer") from None
    if n < 1:
        raise ProtocolError(f"i-PI announced a batch size {n} < 1")
    return n


def recv_init_body(sock, timeout=None) -> tuple[int, str]:
    """The rest of an INIT message: (request id, parameter string)."""
    head = recv_exact(sock, 8, timeout, "INIT")
    rid, length = np.frombuffer(head, INT32)
    if length < 0:
        raise ProtocolError(f"i-PI sent an INIT string of negative length {length}")
    text = recv_exact(sock, int(length), timeout, "INIT").decode("utf-8", errors="replace")
    return int(rid), text


def encode_init(rid: int, text: str) -> bytes:
    data = text.encode("utf-8")
    return INIT + np.int32(rid).tobytes() + np.int32(len(data)).tobytes() + data


# ---------------------------------------------------------------------------- POSDATA


def recv_posdata_body(sock, batch_size: int = 1, timeout=None):
    """The rest of a POSDATA message: cells h (B, 3, 3) bohr, vectors as columns, and
    positions (B, N, 3) bohr, as float64 arrays that own their memory."""
    if batch_size == 1:
        cells = recv_exact(sock, 2 * 72 + 4, timeout, "POSDATA")
        natoms = int(np.frombuffer(cells, INT32, count=1, offset=144)[0])
        _check_natoms(natoms)
        q = recv_exact(sock, 24 * natoms, timeout, "POSDATA")
        h = np.frombuffer(cells, FLOAT64, count=9).reshape(1, 3, 3).copy()
        return h, np.frombuffer(q, FLOAT64).reshape(1, natoms, 3).copy()
    natoms = int(np.frombuffer(recv_exact(sock, 4, timeout, "POSDATA"), INT32)[0])
    _check_natoms(natoms)
    body = recv_exact(sock, batch_size * (144 + 24 * natoms), timeout, "POSDATA")
    h_ih = np.frombuffer(body, FLOAT64, count=batch_size * 18).reshape(batch_size, 2, 3, 3)
    q = np.frombuffer(body, FLOAT64, offset=batch_size * 144).reshape(batch_size, natoms, 3)
    return h_ih[:, 0].copy(), q.copy()


def _check_natoms(natoms: int) -> None:
    if natoms < 0 or natoms > 100_000_000:
        raise ProtocolError(f"i-PI sent an atom count of {natoms}; is this an i-PI socket?")


def encode_posdata(cells_h, positions, batched: bool = False) -> bytes:
    """POSDATA as i-PI sends it (used by tests and fake servers): cells (B, 3, 3), positions
    (B, N, 3); `batched` selects the batch_size>1 layout."""
    cells_h = np.ascontiguousarray(cells_h, dtype=np.float64).reshape(-1, 3, 3)
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    positions = positions.reshape(cells_h.shape[0], -1, 3)
    natoms = np.int32(positions.shape[1]).tobytes()
    inverses = np.linalg.inv(cells_h) if np.isfinite(cells_h).all() else np.zeros_like(cells_h)
    if not batched:
        if cells_h.shape[0] != 1:
            raise ValueError("the single-structure layout carries one structure")
        return POSDATA + cells_h[0].tobytes() + inverses[0].tobytes() + natoms + positions.tobytes()
    h_ih = np.ascontiguousarray(np.stack([cells_h, inverses], axis=1))
    return POSDATA + natoms + h_ih.tobytes() + positions.tobytes()


# ---------------------------------------------------------------------------- FORCEREADY


def _extra_bytes(extra) -> bytes:
    text = extra if isinstance(extra, str) else ""
    data = text.encode("ascii", errors="backslashreplace")
    return np.int32(len(data)).tobytes() + data


def encode_forceready(energies, forces, virials, extras, batched: bool = False) -> bytes:
    """FORCEREADY with its payload: energies (B,) Ha, forces (B, N, 3) Ha/bohr, virials
    (B, 3, 3) Ha, extras B strings (ASCII JSON). `batched` selects the batch_size>1
    layout; the single layout carries exactly one structure."""
    energies = np.ascontiguousarray(energies, dtype=np.float64).reshape(-1)
    n_structures = energies.shape[0]
    forces = np.ascontiguousarray(forces, dtype=np.float64).reshape(n_structures, -1)
    virials = np.ascontiguousarray(virials, dtype=np.float64).reshape(n_structures, 9)
    extras = list(extras)
    if len(extras) != n_structures or forces.shape[1] % 3:
        raise ValueError("energies, forces, virials and extras disagree in size")
    natoms = np.int32(forces.shape[1] // 3).tobytes()
    if not batched:
        if n_structures != 1:
            raise ValueError("the single-structure layout carries one structure")
        return (
            FORCEREADY + energies.tobytes() + natoms + forces.tobytes() + virials.tobytes()
            + _extra_bytes(extras[0])
        )
    return (
        FORCEREADY + energies.tobytes() + natoms + forces.tobytes() + virials.tobytes()
        + b"".join(_extra_bytes(e) for e in extras)
    )
