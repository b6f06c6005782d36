"""The spool folder: what read_spool accepts and refuses, and how refused entries are set aside.

Real files in tmp_path.  Every read runs in a daemon thread with a timeout, so a read that
would block (a FIFO, /dev/zero) fails the test instead of hanging the suite.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from trustix_p2p.core.entry import MAX_ENTRY_BYTES
from trustix_p2p.errors import DecodeError
from trustix_p2p.spool import (
    MAX_SPOOL_FILE,
    MAX_SPOOL_LEAVES,
    REJECTED_DIR,
    SpoolFileUnusable,
    SpoolFileVanished,
    pending_spool_files,
    read_spool,
    reject_spool,
    write_spool,
)

TIMEOUT = 10.0
LEAVES = [b"leaf one", b"", b"\x00" * 100]


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a daemon thread; fails (never hangs) if it does not return in time."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(TIMEOUT)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} blocked for more than {TIMEOUT}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def read(path: Path) -> list[bytes]:
    result: list[bytes] = in_thread(read_spool, path)
    return result


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


# -- the round trip ------------------------------------------------------------------------


def test_round_trip(spool: Path) -> None:
    path = write_spool(spool, LEAVES)
    assert path.parent == spool and path.name.endswith(".spool")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == msgpack.packb(LEAVES, use_bin_type=True)
    assert read(path) == LEAVES
    assert pending_spool_files(spool) == [path]


def test_round_trip_at_the_limits(spool: Path) -> None:
    assert read(write_spool(spool, [])) == []
    biggest = [b"x" * MAX_ENTRY_BYTES, b"y" * MAX_ENTRY_BYTES]
    assert read(write_spool(spool, biggest)) == biggest
    many = [b""] * MAX_SPOOL_LEAVES
    assert read(write_spool(spool, many)) == many


def test_pending_files_are_oldest_first_and_complete_only(spool: Path) -> None:
    first = write_spool(spool, [b"1"])
    second = write_spool(spool, [b"2"])
    (spool / ".hidden.spool").write_bytes(b"")
    (spool / f".{first.name}.tmp").write_bytes(b"")
    (spool / "notes.txt").write_bytes(b"")
    assert pending_spool_files(spool) == [first, second]


# -- entries that are not readable regular files we own ------------------------------------


def make_dir(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"x")


def make_fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


def make_zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def make_valid_link(path: Path) -> None:
    elsewhere = path.parent.parent / "elsewhere"
    target = write_spool(elsewhere, LEAVES)
    path.symlink_to(target)


def make_dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere.spool")


def make_socket(path: Path) -> None:
    os.mknod(path, stat.S_IFSOCK | 0o600)


def make_foreign(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid (CI runs the suite as root)")
    write_spool(path.parent, LEAVES).rename(path)
    os.chown(path, 65534, 65534)


UNUSABLE = {
    "directory": (make_dir, "directory"),
    "fifo": (make_fifo, "FIFO"),
    "symlink to /dev/zero": (make_zero_link, "symbolic link"),
    "symlink to a valid spool file": (make_valid_link, "symbolic link"),
    "dangling symlink": (make_dangling_link, "symbolic link"),
    "socket": (make_socket, "socket"),
    "other owner": (make_foreign, "owned by uid 65534"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_entries_are_refused_and_moved_aside(spool: Path, case: str) -> None:
    make, reason = UNUSABLE[case]
    path = spool / "x.spool"
    make(path)
    kind = stat.S_IFMT(os.lstat(path).st_mode)
    assert pending_spool_files(spool) == [path]

    with pytest.raises(SpoolFileUnusable) as info:
        read(path)
    assert not isinstance(info.value, SpoolFileVanished)
    assert reason in info.value.reason
    assert info.value.path == path
    assert "\n" not in str(info.value)

    target = in_thread(reject_spool, path)
    assert target == spool / REJECTED_DIR / "x.spool"
    assert not os.path.lexists(path)
    assert stat.S_IFMT(os.lstat(target).st_mode) == kind  # moved as is, never followed
    assert stat.S_IMODE(os.lstat(spool / REJECTED_DIR).st_mode) == 0o700
    assert pending_spool_files(spool) == []


def test_the_target_of_a_symlink_is_left_alone(spool: Path) -> None:
    path = spool / "x.spool"
    make_valid_link(path)
    target = os.readlink(path)
    assert in_thread(reject_spool, path) == spool / REJECTED_DIR / "x.spool"
    assert read(Path(target)) == LEAVES


def test_a_device_is_never_opened(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = spool / "x.spool"
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("cannot create a device node here (needs CAP_MKNOD)")
    opened: list[str] = []
    real_open = os.open

    def spy(p: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(p))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    with pytest.raises(SpoolFileUnusable, match="device"):
        read(path)
    assert str(path) not in opened
    assert in_thread(reject_spool, path) == spool / REJECTED_DIR / "x.spool"


@pytest.mark.parametrize(
    ("code", "message"), [(errno.EACCES, "Permission denied"), (errno.EPERM, "not permitted")]
)
def test_an_unreadable_file_is_refused(
    spool: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    # Root reads mode-000 files, so simulate the refusal where the node would meet it.
    path = write_spool(spool, LEAVES)
    real_open = os.open

    def refuse(p: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(p) == str(path):
            raise PermissionError(code, os.strerror(code), str(path))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(SpoolFileUnusable, match=message) as info:
        read(path)
    assert not isinstance(info.value, SpoolFileVanished)
    assert in_thread(reject_spool, path) == spool / REJECTED_DIR / path.name


def test_an_io_error_while_reading_is_refused(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_spool(spool, LEAVES)

    def fail(fd: int, buffers: Any) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "readv", fail)
    with pytest.raises(SpoolFileUnusable, match="Input/output error"):
        read(path)


def test_a_vanished_file_is_told_apart(spool: Path) -> None:
    path = spool / "gone.spool"
    with pytest.raises(SpoolFileVanished):
        read(path)
    assert in_thread(reject_spool, path) is None
    assert not (spool / REJECTED_DIR).exists()  # nothing changed


def fake_lstat(monkeypatch: pytest.MonkeyPatch, path: Path, stand_in: Path) -> None:
    real_lstat = os.lstat

    def lstat(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(p) == str(path):
            return real_lstat(stand_in)
        return real_lstat(p, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)


def test_a_fifo_swapped_in_after_the_first_look_is_caught_by_fstat(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spool / "x.spool"
    os.mkfifo(path, 0o600)
    fake_lstat(monkeypatch, path, write_spool(spool, LEAVES))
    with pytest.raises(SpoolFileUnusable, match="FIFO"):
        read(path)


def test_a_symlink_swapped_in_after_the_first_look_is_not_followed(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spool / "x.spool"
    path.symlink_to("/dev/zero")
    fake_lstat(monkeypatch, path, write_spool(spool, LEAVES))
    with pytest.raises(SpoolFileUnusable, match="symbolic link"):
        read(path)


# -- content over the limits or malformed --------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_unread(spool: Path) -> None:
    path = spool / "big.spool"
    path.write_bytes(b"")
    os.truncate(path, MAX_SPOOL_FILE + 1)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="larger than") as info:
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not isinstance(info.value, SpoolFileUnusable)
    assert peak < 1 << 20
    assert in_thread(reject_spool, path) == spool / REJECTED_DIR / "big.spool"


def shrink_stat(monkeypatch: pytest.MonkeyPatch, path: Path, size: int) -> None:
    """Make lstat(path) and every fstat report `size` bytes, whatever the file really holds."""
    real_lstat, real_fstat = os.lstat, os.fstat

    def shrunk(st: os.stat_result) -> os.stat_result:
        fields = list(st)
        fields[6] = size  # st_size
        return os.stat_result(fields)

    def lstat(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_lstat(p, *args, **kwargs)
        return shrunk(st) if os.fspath(p) == str(path) else st

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "fstat", lambda fd: shrunk(real_fstat(fd)))


def test_a_file_that_grows_while_read_is_cut_off(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checks see 10 bytes, the file really holds more than the limit: MAX + 1 are read.
    path = spool / "grows.spool"
    path.write_bytes(b"")
    os.truncate(path, MAX_SPOOL_FILE + 4096)
    shrink_stat(monkeypatch, path, 10)
    real_readv = os.readv
    total = 0

    def counting_readv(fd: int, buffers: Any) -> int:
        nonlocal total
        n = real_readv(fd, buffers)
        total += n
        return n

    monkeypatch.setattr(os, "readv", counting_readv)
    with pytest.raises(DecodeError, match="grew larger than") as info:
        read(path)
    assert not isinstance(info.value, SpoolFileUnusable)
    assert total == MAX_SPOOL_FILE + 1


def test_a_file_that_grew_within_the_limit_is_read_whole(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_spool(spool, LEAVES)
    shrink_stat(monkeypatch, path, 0)
    assert read(path) == LEAVES


def array32(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


MALFORMED = {
    "empty file": b"",
    "garbage": b"\xc1 not msgpack at all",
    "not an array": msgpack.packb(b"leaf", use_bin_type=True),
    "a map": msgpack.packb({"a": b"b"}, use_bin_type=True),
    "too many leaves": array32(MAX_SPOOL_LEAVES + 1) + b"\xc4\x00" * 10,
    "claims 4G leaves": array32(0xFFFFFFFF),
    "a str leaf": msgpack.packb([b"ok", "text"], use_bin_type=True),
    "an int leaf": msgpack.packb([b"ok", 7], use_bin_type=True),
    "a nil leaf": msgpack.packb([None], use_bin_type=True),
    "a nested array": msgpack.packb([b"ok", [b"nested"]], use_bin_type=True),
    "a nested map": msgpack.packb([{}], use_bin_type=True),
    "an ext leaf": msgpack.packb([msgpack.ExtType(1, b"x")], use_bin_type=True),
    "a leaf over MAX_ENTRY_BYTES": msgpack.packb([b"x" * (MAX_ENTRY_BYTES + 1)]),
    "a bin claiming 4 GiB": b"\x91\xc6\xff\xff\xff\xff",
    "truncated array": msgpack.packb([b"a", b"b"], use_bin_type=True)[:-2],
    "truncated leaf": b"\x91\xc4\x05ab",
    "trailing data": msgpack.packb([b"a"], use_bin_type=True) + b"\x00",
    "two arrays": msgpack.packb([b"a"], use_bin_type=True) * 2,
    "trailing partial object": msgpack.packb([b"a"], use_bin_type=True) + b"\xc4\x05",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_content_is_a_decode_error(spool: Path, case: str) -> None:
    path = spool / "bad.spool"
    path.write_bytes(MALFORMED[case])
    with pytest.raises(DecodeError) as info:
        read(path)
    assert not isinstance(info.value, SpoolFileUnusable)
    assert "\n" not in str(info.value)
    assert in_thread(reject_spool, path) == spool / REJECTED_DIR / "bad.spool"
    assert (spool / REJECTED_DIR / "bad.spool").read_bytes() == MALFORMED[case]


def refused_with_bounded_memory(path: Path, slack: int = 0) -> int:
    """Refused with a traced peak under twice the file's size (plus a fixed `slack`)."""
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * size + slack, f"peak {peak} bytes for a {size}-byte file"
    return peak


def test_millions_of_nested_empty_arrays_cost_nothing(spool: Path) -> None:
    n = 4 << 20
    path = spool / "nested.spool"
    path.write_bytes(array32(n) + b"\x90" * n)
    refused_with_bounded_memory(path)


def test_nested_arrays_within_the_leaf_limit_are_never_built(spool: Path) -> None:
    # One leaf that is an array of MAX_SPOOL_LEAVES empty arrays: decoding it would build
    # 100,000 lists (~6 MB) out of 100 kB; the type byte is refused first.  The file is small,
    # so allow the decoder's fixed buffer on top.
    path = spool / "nested.spool"
    path.write_bytes(b"\x91" + array32(MAX_SPOOL_LEAVES) + b"\x90" * MAX_SPOOL_LEAVES)
    refused_with_bounded_memory(path, slack=1 << 20)


def test_deep_nesting_is_refused(spool: Path) -> None:
    path = spool / "deep.spool"
    path.write_bytes(b"\x91" * 1_000_000 + b"\x90")
    refused_with_bounded_memory(path)


# -- reject_spool when rejected/ is not usable ---------------------------------------------


@pytest.mark.parametrize("kind", ["file", "symlink to a directory", "fifo", "dangling symlink"])
def test_rejected_that_is_not_a_real_directory_changes_nothing(
    spool: Path, tmp_path: Path, kind: str
) -> None:
    rejected = spool / REJECTED_DIR
    if kind == "file":
        rejected.write_bytes(b"operator notes")
    elif kind == "symlink to a directory":
        (tmp_path / "real").mkdir()
        rejected.symlink_to(tmp_path / "real")
    elif kind == "fifo":
        os.mkfifo(rejected)
    else:
        rejected.symlink_to(tmp_path / "nowhere")
    before = os.lstat(rejected)
    path = spool / "bad.spool"
    path.write_bytes(b"\xc1")

    assert in_thread(reject_spool, path) is None
    assert path.read_bytes() == b"\xc1"
    after = os.lstat(rejected)
    assert (after.st_mode, after.st_ino, after.st_size) == (
        before.st_mode,
        before.st_ino,
        before.st_size,
    )
    if kind == "file":
        assert rejected.read_bytes() == b"operator notes"
    if kind == "symlink to a directory":
        assert list((tmp_path / "real").iterdir()) == []


def test_rejected_owned_by_someone_else_is_not_used(spool: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another uid (CI runs the suite as root)")
    rejected = spool / REJECTED_DIR
    rejected.mkdir()
    os.chown(rejected, 65534, 65534)
    path = spool / "bad.spool"
    path.write_bytes(b"\xc1")
    assert in_thread(reject_spool, path) is None
    assert path.exists() and list(rejected.iterdir()) == []


def test_a_failed_rename_changes_nothing(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = spool / "bad.spool"
    path.write_bytes(b"\xc1")

    def fail(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "rename", fail)
    assert reject_spool(path) is None
    assert path.read_bytes() == b"\xc1"
    assert not os.path.lexists(spool / REJECTED_DIR)  # the folder it made is gone again


def test_rejected_files_of_the_same_name_are_all_kept(spool: Path) -> None:
    path = spool / "bad.spool"
    kept = []
    for content in (b"first", b"second", b"third"):
        path.write_bytes(content)
        target = reject_spool(path)
        assert target is not None
        kept.append(target)
    assert [p.name for p in kept] == ["bad.spool", "bad.spool.1", "bad.spool.2"]
    assert [p.read_bytes() for p in kept] == [b"first", b"second", b"third"]
    assert pending_spool_files(spool) == []


def test_a_same_named_directory_is_not_replaced(spool: Path) -> None:
    # rename() would silently replace an empty directory of the same name.
    (spool / REJECTED_DIR / "x.spool").mkdir(parents=True)
    path = spool / "x.spool"
    path.mkdir()
    assert reject_spool(path) == spool / REJECTED_DIR / "x.spool.1"
    assert (spool / REJECTED_DIR / "x.spool").is_dir()


# -- the spool folder itself -----------------------------------------------------------------


def test_a_missing_spool_folder_is_empty(tmp_path: Path) -> None:
    assert pending_spool_files(tmp_path / "absent") == []


def test_a_spool_folder_that_is_a_file_is_unusable(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.write_bytes(b"")
    with pytest.raises(SpoolFileUnusable, match="not a directory") as info:
        pending_spool_files(spool)
    assert info.value.path == spool and str(spool) in str(info.value)
    with pytest.raises(SpoolFileUnusable, match="not a directory"):
        pending_spool_files(spool / "below")


def test_an_unlistable_spool_folder_is_unusable(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(p: Any) -> list[str]:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))

    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(SpoolFileUnusable, match="cannot list spool directory") as info:
        pending_spool_files(spool)
    assert str(spool) in str(info.value)


def test_listing_never_looks_at_the_entries(spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(spool / "b.spool")
    (spool / "a.spool").mkdir()
    (spool / "c.spool").symlink_to("/dev/zero")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pending_spool_files must not stat or open entries")

    for name in ("stat", "lstat", "open"):
        monkeypatch.setattr(os, name, forbidden)
    assert in_thread(pending_spool_files, spool) == [
        spool / n for n in ("a.spool", "b.spool", "c.spool")
    ]
