"""C2SP signed notes, checkpoints, cosignature/v1 and tlog-policy: spec examples, Go's
vectors, Hotline's vectors (tests/vectors/tlog_vectors.json) and the verification rules."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nacl.bindings as sodium
import nacl.signing
import pytest

from keys import note, tlog
from keys.checkpoint import (
    Checkpoint,
    Cosigner,
    cosignature_time,
    open_checkpoint,
    parse_log_vkey,
    parse_witness_vkey,
    sign_checkpoint,
)
from keys.errors import BadSignature, UntrustedKey
from keys.note import NoteError, Signer
from keys.tlog_policy import PolicyFileError, QuorumNotMet, check_checkpoint, parse_policy

VEC_DIR = Path(__file__).parents[1] / "vectors"
VEC = json.loads((VEC_DIR / "tlog_vectors.json").read_text())

# c2sp.org/signed-note, "Verifier keys" / "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YE"
             "q6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n").encode()
# c2sp.org/tlog-cosignature, the example checkpoint with a cosignature (no keys given).
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Z"
    "hcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJ"
    "sX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n").encode()
# golang.org/x/mod v0.7.0 sumdb/note/note_test.go TestSign (Debian golang-golang-x-mod-dev).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (b"If you think cryptography is the answer to your problem,\n"
           b"then you don't know what your problem is.\n")
GO_SIGNED = GO_TEXT + ("\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F"
                       "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n").encode()


def test_signed_note_spec_example_verifies() -> None:
    n = note.open_note(SPEC_NOTE, [note.parse_vkey(SPEC_VKEY)])
    assert n.text == b"This is an example message.\n"
    assert [s.name for s in n.verified] == ["example.com/foo"]
    assert n.encode() == SPEC_NOTE


def test_go_sumdb_note_sign_vector_is_reproduced_byte_for_byte() -> None:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    signer = Signer("PeterNeumann", nacl.signing.SigningKey(seed))
    assert signer.vkey() == GO_VKEY
    assert note.sign(GO_TEXT, [signer]) == GO_SIGNED
    note.open_note(GO_SIGNED, [note.parse_vkey(GO_VKEY)])


def test_cosignature_spec_example_timestamp_and_key_id_decode() -> None:
    text, sigs = note.split(SPEC_COSIGNED)
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    witness = sigs[1]
    # The spec's signed-message example says "time 1679315147" for this checkpoint.
    assert cosignature_time(witness) == 1679315147
    assert len(witness.sig) == 72
    # Keys we do not know are ignored, and a note no known key signed is refused.
    with pytest.raises(UntrustedKey):
        note.open_note(SPEC_COSIGNED, [note.parse_vkey(SPEC_VKEY)])


def test_generator_reproduces_the_vectors_file() -> None:
    out = subprocess.run([sys.executable, str(VEC_DIR / "make_tlog_vectors.py")],
                         capture_output=True, check=True).stdout
    assert out == (VEC_DIR / "tlog_vectors.json").read_bytes()


def test_vectors_recomputed_with_raw_primitives() -> None:
    log = VEC["log"]
    pk = bytes(nacl.signing.SigningKey(bytes.fromhex(log["seed"])).verify_key)
    kid = hashlib.sha256(log["origin"].encode() + b"\n\x01" + pk).digest()[:4]
    key64 = base64.b64encode(b"\x01" + pk).decode()
    assert log["vkey"] == f"{log['origin']}+{kid.hex()}+{key64}"
    w = VEC["witnesses"]["us"]
    wpk = bytes(nacl.signing.SigningKey(bytes.fromhex(w["seed"])).verify_key)
    wkid = hashlib.sha256(w["name"].encode() + b"\n\x04" + wpk).digest()[:4]
    assert w["vkey"].split("+")[1] == wkid.hex()
    for t in VEC["trees"]:
        root = base64.b64decode(t["root"])
        assert t["checkpoint_text"] == f"{log['origin']}\n{t['size']}\n{t['root']}\n"
        msg = t["cosigned_message_us"].encode()
        assert msg == (f"cosignature/v1\ntime {VEC['cosignature_time']}\n".encode()
                       + t["checkpoint_text"].encode())
        lines = t["cosigned_checkpoint"].encode().split(b"\n\n", 1)[1].decode().splitlines()
        raw = base64.b64decode(lines[0].split(" ")[2])
        sodium.crypto_sign_open(raw[4:] + t["checkpoint_text"].encode(), pk)
        cosig = base64.b64decode(next(x for x in lines if w["name"] in x).split(" ")[2])
        assert cosig[:4] == wkid
        assert int.from_bytes(cosig[4:12], "big") == VEC["cosignature_time"]
        sodium.crypto_sign_open(cosig[12:] + msg, wpk)
        for inc in t["inclusion"]:
            tlog.verify_inclusion(base64.b64decode(inc["leaf_hash"]), inc["index"], t["size"],
                                  [base64.b64decode(h) for h in inc["proof"]], root)


def test_cosigned_vector_satisfies_the_vector_policy() -> None:
    policy = parse_policy(VEC["policy"].encode())
    for t in VEC["trees"]:
        verdict = check_checkpoint(policy, t["cosigned_checkpoint"].encode(),
                                   now_s=VEC["cosignature_time"])
        assert set(verdict.cosigned_by) == {"witness.us/w1", "witness.cn/w1"}
        assert verdict.signed.checkpoint.size == t["size"]


# ------------------------------------------------------------------- verification rules

LOG = Signer("hotline.relay/r1", nacl.signing.SigningKey(bytes([7]) * 32))
US = Cosigner("witness.us/w1", nacl.signing.SigningKey(bytes([8]) * 32))
CN = Cosigner("witness.cn/w1", nacl.signing.SigningKey(bytes([9]) * 32))
CP = Checkpoint(LOG.name, 5, tlog.MemoryTree([b"a", b"b", b"c", b"d", b"e"]).root())


def _cosigned(*ws: Cosigner, t: int = 1_700_000_000) -> bytes:
    return sign_checkpoint(CP, LOG) + b"".join(w.cosign(CP.text(), t).line().encode()
                                               for w in ws)


def test_unknown_signatures_are_ignored_even_when_sharing_name_or_id() -> None:
    impostor = Signer(LOG.name, nacl.signing.SigningKey(bytes([1]) * 32))  # same name
    msg = sign_checkpoint(CP, LOG) + impostor.sign(CP.text()).line().encode()
    n = open_checkpoint(msg, [LOG.verifier()])
    assert len(n.note.verified) == 1
    assert len(n.note.unverified) == 1


def test_known_key_with_a_bad_signature_refuses_the_whole_note() -> None:
    msg = bytearray(sign_checkpoint(CP, LOG))
    good = bytes(msg)
    sig_line = good.split(b"\n\n")[1]
    raw = bytearray(base64.b64decode(sig_line.split(b" ")[2]))
    raw[10] ^= 1
    forged = good.split(b"\n\n")[0] + b"\n\n" + b" ".join(sig_line.split(b" ")[:2]) + b" " + \
        base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(BadSignature):
        open_checkpoint(forged, [LOG.verifier()])
    with pytest.raises(BadSignature):  # a bad cosignature from a known witness, too
        bad = good + US.cosign(CP.text().replace(b"5", b"6", 1), 1).line().encode()
        open_checkpoint(bad, [LOG.verifier()], witnesses=[US.verifier()])


def test_tampered_checkpoint_text_is_refused() -> None:
    msg = sign_checkpoint(CP, LOG)
    with pytest.raises(BadSignature):
        open_checkpoint(msg.replace(b"\n5\n", b"\n6\n"), [LOG.verifier()])


def test_cosigned_by_witnesses_only_is_not_a_checkpoint() -> None:
    text = CP.text()
    msg = text + b"\n" + US.cosign(text, 5).line().encode()
    with pytest.raises(UntrustedKey):
        open_checkpoint(msg, [LOG.verifier()], witnesses=[US.verifier()])


@pytest.mark.parametrize("bad", [
    b"no blank line\n\xe2\x80\x94 a AAAA\n",
    b"text\n\n",
    b"text\n\n- a AAAAAAA=\n",
    b"text\n\n\xe2\x80\x94 a AAAA",
    b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAA=\n",
    b"text\n\n\xe2\x80\x94 a AAAAAA==\n",  # 4 bytes: no signature after the key ID
    b"text\n\n\xe2\x80\x94 a AAAAAAB=\n",  # non-canonical base64
    b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n",
])
def test_malformed_notes_are_refused(bad: bytes) -> None:
    with pytest.raises(NoteError):
        note.open_note(bad, [LOG.verifier()])


def test_note_signature_limits() -> None:
    sixteen = sign_checkpoint(CP, LOG) + b"".join(
        Signer(f"x{i}", nacl.signing.SigningKey(bytes([i]) * 32)).sign(CP.text()).line().encode()
        for i in range(15))
    open_checkpoint(sixteen, [LOG.verifier()])  # the spec's floor: accept at least 16
    too_many = sixteen + b"".join(Signer(f"y{i}", LOG.key).sign(CP.text()).line().encode()
                                  for i in range(note.MAX_SIGNATURES))
    with pytest.raises(NoteError, match="limit"):
        open_checkpoint(too_many, [LOG.verifier()])


def test_vkeys_refuse_wrong_ids_types_and_names() -> None:
    vk = LOG.vkey()
    name, kid, key = vk.split("+", 2)
    with pytest.raises(NoteError, match="does not match"):
        note.parse_vkey(f"{name}+{int(kid, 16) ^ 1:08x}+{key}")
    with pytest.raises(NoteError, match="type"):
        parse_witness_vkey(vk)
    with pytest.raises(NoteError, match="type"):
        parse_log_vkey(US.vkey())
    for bad_name in ("", "a b", "a\u00a0b"):
        with pytest.raises(NoteError):
            note.check_name(bad_name)


@pytest.mark.parametrize("text", [
    b"origin\n05\nAAAA\n", b"origin\n5\n", b"origin\n-1\n" + b"A" * 44 + b"\n",
    b"or igin\n5\n" + base64.b64encode(bytes(32)) + b"\n",
    b"origin\n5\n" + base64.b64encode(bytes(31)) + b"\n",
    b"origin\n5\n" + base64.b64encode(bytes(32)) + b"\n\n",
])
def test_malformed_checkpoints_are_refused(text: bytes) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_checkpoint_extension_lines_round_trip_and_are_cosigned() -> None:
    cp = Checkpoint(LOG.name, 5, CP.root, ("hotline ext",))
    assert Checkpoint.parse(cp.text()) == cp
    msg = sign_checkpoint(cp, LOG) + US.cosign(cp.text(), 9).line().encode()
    open_checkpoint(msg, [LOG.verifier()], witnesses=[US.verifier()])


# ----------------------------------------------------------------------------- policy


def _policy(quorum: str = "countries") -> bytes:
    return (f"log {LOG.vkey()}\n"
            f"witness us1 {US.vkey()}\n"
            f"\twitness cn1   {CN.vkey()}  https://witness.cn.example/\n"
            "# a comment\n   \n"
            "group us any us1\ngroup cn all cn1\n"
            f"group countries all us cn\nquorum {quorum}\n").encode()


def test_hotline_quorum_needs_every_country() -> None:
    policy = parse_policy(_policy())
    check_checkpoint(policy, _cosigned(US, CN), now_s=1_700_000_000)
    with pytest.raises(QuorumNotMet, match="cn"):
        check_checkpoint(policy, _cosigned(US))
    with pytest.raises(QuorumNotMet, match="us, cn"):
        check_checkpoint(policy, _cosigned())
    assert check_checkpoint(parse_policy(_policy("none")), _cosigned()).cosigned_by == {}


def test_cosignature_from_the_future_does_not_count() -> None:
    policy = parse_policy(_policy())
    with pytest.raises(QuorumNotMet, match="cn"):
        check_checkpoint(policy, _cosigned(US) + CN.cosign(CP.text(), 2_000_000_000)
                         .line().encode(), now_s=1_700_000_000)


def test_policy_threshold_groups_of_groups() -> None:
    w = [Cosigner(f"w{i}.example", nacl.signing.SigningKey(bytes([20 + i]) * 32))
         for i in range(3)]
    text = (f"log {LOG.vkey()}\n" + "".join(f"witness W{i} {c.vkey()}\n" for i, c in
                                             enumerate(w)) + "group two 2 W0 W1 W2\nquorum two\n")
    policy = parse_policy(text.encode())
    with pytest.raises(QuorumNotMet):
        check_checkpoint(policy, _cosigned(w[1]))
    check_checkpoint(policy, _cosigned(w[0], w[2]))


@pytest.mark.parametrize(("text", "message"), [
    ("quorum none\nquorum none\n", "line 2: a second quorum"),
    ("", "no quorum"),
    ("quorum nobody\n", "line 1: quorum 'nobody' is not defined"),
    (f"witness a {US.vkey()}\nwitness b {US.vkey()}\nquorum a\n", "line 2: duplicate witness"),
    (f"witness a {US.vkey()}\nwitness a {CN.vkey()}\nquorum a\n", "line 2: name 'a' is already"),
    (f"witness a {US.vkey()}\ngroup g 2 a\nquorum g\n", "line 2: threshold 2 is not within"),
    (f"witness a {US.vkey()}\ngroup g 0 a\nquorum g\n", "threshold 0"),
    (f"witness a {US.vkey()}\ngroup g any a a\nquorum g\n", "lists a member twice"),
    (f"witness a {US.vkey()}\ngroup g any b\nquorum g\n", "'b' is not defined on an earlier"),
    (f"witness a {US.vkey()}\ngroup g any none\nquorum g\n", "'none' cannot be a group member"),
    (f"witness none {US.vkey()}\nquorum none\n", "'none' is predefined"),
    (f"witness a {LOG.vkey()}\nquorum a\n", "line 1: witness key: .*type 0x01"),
    (f"log {US.vkey()}\nquorum none\n", "line 1: log key: .*type 0x04"),
    ("frobnicate x\nquorum none\n", "unknown keyword 'frobnicate'"),
    ("quorum none\r\n", "byte 0x0d"),
    (f"witness a {US.vkey()}\ngroup g 01 a\nquorum g\n", "threshold '01'"),
])
def test_bad_policy_files_name_the_line_and_the_fault(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        parse_policy(text.encode())


def test_policy_for_another_origin_is_refused() -> None:
    other = Signer("hotline.relay/other", LOG.key)
    msg = note.sign(Checkpoint(other.name, 5, CP.root).text(), [other])
    with pytest.raises(QuorumNotMet, match="no log with origin"):
        check_checkpoint(parse_policy(_policy("none")), msg)
