"""narinfo parse/render, the path-info fingerprint and Nix signing keys.

The literal vectors below were produced by Nix 2.8 (`nix-store --generate-binary-cache-key`,
`nix store sign`, `nix copy --to file://...`); the keys are throwaway test keys.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.nix import nix_env, require_nix
from trustix_p2p.core.narinfo import (
    NarInfo,
    NixPublicKey,
    NixSigningKey,
    fingerprint,
    parse_narinfo,
    parse_signature,
    render_narinfo,
    verify_any,
)
from trustix_p2p.core.nix32 import parse_nar_hash
from trustix_p2p.errors import DecodeError, LocalProtocolError, VerificationError

SECRET = (
    "test-key-1:ip7mnTeumJO7WlTptgljwSw13wFo+buq2zZwfmN8Yb5ZGMGOOHCnefYY0AhhPG4Eb0C4i4aj0W5iqzvM"
    "2eyp4w=="
)
PUBLIC = "test-key-1:WRjBjjhwp3n2GNAIYTxuBG9AuIuGo9FuYqs7zNnsqeM="
SIG = (
    "test-key-1:caojOZwhsoheTTNsHY7r/gqkQsTIl5ces17j5V+Y3lM21yoDh0w50r6+bAIvhRKX5GUTVOOsin7iT7cE0tRZ"
    "AA=="
)
NARINFO = f"""\
StorePath: /nix/store/20f2gl3lw26xq0fiv6i7ww29q5df9fvc-multi-dev
URL: nar/1by9i4lgbl6ajv27nrpbp9284nv3i5l64hmil227x3hhndc4pdg1.nar.xz
Compression: xz
FileHash: sha256:1by9i4lgbl6ajv27nrpbp9284nv3i5l64hmil227x3hhndc4pdg1
FileSize: 244
NarHash: sha256:1fpqlz48ldfx1icplph13p13pp3835nsj2l68sggby5jsxgy8qia
NarSize: 696
References: 2a1zjxnm91zh1agkpzpm16n3zc5qkvv0-multi
Deriver: pknq7zc5fdac7jq2vzk1s2ypcq8vh1lz-multi.drv
Sig: {SIG}
"""
NO_REFS = """\
StorePath: /nix/store/2a1zjxnm91zh1agkpzpm16n3zc5qkvv0-multi
URL: nar/08bdnr4v6syf813cvp3irlmxdvvvqarp630fn461cy5sj97v73p6.nar.xz
Compression: xz
FileHash: sha256:08bdnr4v6syf813cvp3irlmxdvvvqarp630fn461cy5sj97v73p6
FileSize: 124
NarHash: sha256:1z6x2rxbsirdaax0pjnisiynfrwrhi0vbiny5ix4mmnzxv3ps4yv
NarSize: 120
References: 
Deriver: pknq7zc5fdac7jq2vzk1s2ypcq8vh1lz-multi.drv
"""  # noqa: W291 (Nix writes "References: " with a trailing space)


def test_narinfo_written_by_nix_parses_and_renders_back_identically() -> None:
    for text in (NARINFO, NO_REFS):
        assert render_narinfo(parse_narinfo(text)) == text


def test_parsed_fields() -> None:
    info = parse_narinfo(NARINFO)
    assert info.store_path.endswith("-multi-dev")
    assert info.nar_size == 696
    assert info.nar_hash == parse_nar_hash("sha256-KmLkX9ey+PWeRoYKqW0ZaNw7wh0BXnpZDN01isin+Lo=")
    assert info.references == ("2a1zjxnm91zh1agkpzpm16n3zc5qkvv0-multi",)
    assert info.deriver == "pknq7zc5fdac7jq2vzk1s2ypcq8vh1lz-multi.drv"
    assert info.file_size == 244
    assert parse_narinfo(NO_REFS).references == ()


def test_fingerprint_is_nix_layout() -> None:
    info = parse_narinfo(NARINFO)
    assert info.fingerprint() == (
        b"1;/nix/store/20f2gl3lw26xq0fiv6i7ww29q5df9fvc-multi-dev;"
        b"sha256:1fpqlz48ldfx1icplph13p13pp3835nsj2l68sggby5jsxgy8qia;696;"
        b"/nix/store/2a1zjxnm91zh1agkpzpm16n3zc5qkvv0-multi"
    )


def test_fingerprint_sorts_and_expands_references() -> None:
    a = "0" * 32 + "-a"
    b = "1" * 32 + "-b"
    path = "/nix/store/" + "2" * 32 + "-x"
    raw = bytes(32)
    assert fingerprint(path, raw, 1, [b, "/nix/store/" + a]) == fingerprint(path, raw, 1, [a, b])
    assert fingerprint(path, raw, 1, [b, a]).endswith(f";/nix/store/{a},/nix/store/{b}".encode())


def test_fingerprint_refuses_unknown_size_and_bad_paths() -> None:
    path = "/nix/store/" + "2" * 32 + "-x"
    with pytest.raises(LocalProtocolError):
        fingerprint(path, bytes(32), 0, [])
    with pytest.raises(DecodeError):
        fingerprint("/tmp/x", bytes(32), 1, [])
    with pytest.raises(DecodeError):
        fingerprint(path, bytes(32), 1, ["../etc"])


def test_signature_by_nix_verifies_and_ours_is_identical() -> None:
    info = parse_narinfo(NARINFO)
    key = NixSigningKey.parse(SECRET)
    assert str(key.public) == PUBLIC
    assert key.render() == SECRET
    # Ed25519 is deterministic: signing the same fingerprint gives Nix's exact signature.
    assert key.sign(info.fingerprint()) == info.sigs[0]
    assert verify_any(info.fingerprint(), info.sigs, [NixPublicKey.parse(PUBLIC)]) == "test-key-1"


def test_signature_fails_on_any_change() -> None:
    info = parse_narinfo(NARINFO)
    trusted = [NixPublicKey.parse(PUBLIC)]
    tampered = info.fingerprint().replace(b";696;", b";697;")
    with pytest.raises(VerificationError):
        verify_any(tampered, info.sigs, trusted)
    other = NixSigningKey.from_seed("test-key-1", bytes(range(32)))
    with pytest.raises(VerificationError):
        verify_any(info.fingerprint(), [other.sign(info.fingerprint())], trusted)
    # A valid signature under a key name we do not trust does not count.
    renamed = NixSigningKey.from_seed("other", NixSigningKey.parse(SECRET).private.seed)
    with pytest.raises(VerificationError):
        verify_any(info.fingerprint(), [renamed.sign(info.fingerprint())], trusted)
    with pytest.raises(VerificationError):
        trusted[0].verify(info.fingerprint(), "test-key-1:not base64!")


def test_signed_replaces_the_same_keys_signature() -> None:
    info = parse_narinfo(NARINFO)
    key = NixSigningKey.from_seed("proxy-1", bytes(32))
    once = info.signed(key)
    assert once.signed(key) == once
    assert len(once.sigs) == 2
    assert verify_any(once.fingerprint(), once.sigs, [key.public]) == "proxy-1"


@pytest.mark.parametrize(
    "bad",
    [
        "test-key-1",
        ":WRjBjjhwp3n2GNAIYTxuBG9AuIuGo9FuYqs7zNnsqeM=",
        "test-key-1:WRjBjjhwp3n2GNAIYTxuBG9AuIuGo9FuYqs7zNnsqe==",
        "test-key-1:AAAA",
    ],
)
def test_malformed_public_keys_are_refused(bad: str) -> None:
    with pytest.raises(DecodeError):
        NixPublicKey.parse(bad)


def test_secret_key_with_mismatched_public_half_is_refused() -> None:
    name, _, body = SECRET.partition(":")

    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(DecodeError, match="does not match"):
        NixSigningKey.parse(f"{name}:{base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(DecodeError):
        parse_signature("k:" + base64.b64encode(bytes(63)).decode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("StorePath: /nix/store/", "StorePath: /tmp/"), "not a path"),
        (lambda t: t.replace("NarSize: 696", "NarSize: 0696"), "decimal"),
        (lambda t: t.replace("NarSize: 696", "NarSize: -1"), "decimal"),
        (lambda t: t.replace("NarHash: sha256:", "NarHash: md5:"), "sha256"),
        (lambda t: t.replace("References: ", "References: ../../etc "), "base name"),
        (lambda t: t + "NarSize: 1\n", "more than one"),
        (lambda t: t.replace("URL: ", "URL "), "Key: value"),
        (lambda t: "\n".join(ln for ln in t.split("\n") if not ln.startswith("URL")), "URL"),
        (lambda t: t.replace("Sig: test-key-1:", "Sig: test-key-1:AA"), "base64"),
    ],
)
def test_malformed_narinfo_is_refused(change: object, message: str) -> None:
    assert callable(change)
    with pytest.raises(DecodeError, match=message):
        parse_narinfo(change(NARINFO))


def test_unknown_keys_are_ignored_and_compression_defaults_to_bzip2() -> None:
    text = "\n".join(ln for ln in NARINFO.split("\n") if not ln.startswith("Compression"))
    info = parse_narinfo(text + "Future: thing\n")
    assert info.compression == "bzip2"
    assert info.nar_size == 696


basenames = st.builds(
    lambda h, n: h + "-" + n,
    st.text("0123456789abcdfghijklmnpqrsvwxyz", min_size=32, max_size=32),
    st.from_regex(r"[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,20}", fullmatch=True),
)


@settings(max_examples=60, deadline=None)
@given(
    base=basenames,
    refs=st.lists(basenames, max_size=4, unique=True),
    nar_hash=st.binary(min_size=32, max_size=32),
    size=st.integers(1, 2**63 - 1),
    deriver=st.one_of(st.just(""), basenames.map(lambda b: b + ".drv")),
)
def test_render_then_parse_round_trips(
    base: str, refs: list[str], nar_hash: bytes, size: int, deriver: str
) -> None:
    info = NarInfo(
        store_path="/nix/store/" + base,
        url="nar/x.nar",
        compression="none",
        nar_hash=nar_hash,
        nar_size=size,
        references=tuple(sorted(refs)),
        deriver=deriver,
    ).signed(NixSigningKey.from_seed("k", bytes(32)))
    assert parse_narinfo(render_narinfo(info)) == info


@pytest.mark.nix
def test_keys_and_signatures_interoperate_with_real_nix(tmp_path: Path) -> None:
    require_nix()
    env = nix_env()
    sec, pub = tmp_path / "k.sec", tmp_path / "k.pub"
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", "live-key", sec, pub], check=True, env=env
    )
    key = NixSigningKey.parse(sec.read_text())
    assert str(key.public) == pub.read_text().strip()
    # Add a fresh file to the store, let Nix sign it, and check our fingerprint and signature.
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(16))
    path = subprocess.run(
        ["nix-store", "--add", payload], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["nix", "store", "sign", "--key-file", sec, path], check=True, env=env)
    info = json.loads(
        subprocess.run(
            ["nix", "path-info", "--json", "--sigs", path],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )[0]
    fp = fingerprint(path, parse_nar_hash(info["narHash"]), info["narSize"], info["references"])
    assert key.sign(fp) in info["signatures"]
    assert verify_any(fp, info["signatures"], [key.public]) == "live-key"
