#!/usr/bin/env python3
"""gen_seeds.py - writes the seed corpora of the stateful fuzz targets.

    python3 tests/fuzz/gen_seeds.py            # (re)writes tests/fuzz/corpus/<target>/
    python3 tests/fuzz/gen_seeds.py --check    # exit 1 if a committed seed differs

Targets: link_hs (fuzz_link_hs.c), attach (fuzz_attach.c), owner_admit
(fuzz_owner_admit.c), rdma_setup (fuzz_rdma_setup.c). Their inputs are small
programs (a configuration, then steps: an opcode byte and its operands), read
by each target with fz_u8/fz_u16/... (big-endian, 0 past the end); the
opcode numbers and operand orders below mirror the targets' enums and
builders and must change with them. Frames inside the programs are written
field by field from core/link/wire.h and core/xfer/xfer_wire.h's layouts.

Each seed reaches a state that random bytes would rarely reach (a link, an
accepted data stream, an admitted request, a set-up rail), so that both
`make test`'s standalone run (replay + mutations) and libFuzzer start deep.
Adding a frame type: one entry in FZ_TYPES below (and in fz_types[]).
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- wire.h ----------------------------------------------------------------
MAGIC = 0x4C4C4D4B
HELLO, WELCOME, REJECT, HEARTBEAT, UNLINK, UNLINK_ACK, ATTACH, ATTACH_OK = range(1, 9)
AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF = range(9, 12)
NOTIFY, NOTIFY_ACK = 13, 14
PROMPT, DECODER, MIX = 1, 2, 3
EXT_DATA_STREAMS, EXT_RDMA, EXT_WAIT_TIME, EXT_READ_DEPTH = 1, 2, 3, 4


def u8(v):
    return struct.pack(">B", v & 0xFF)


def u16(v):
    return struct.pack(">H", v & 0xFFFF)


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)


def header(mtype, length, version=1, flags=0):
    return u32(MAGIC) + u16(version) + u16(mtype) + u32(length) + u32(flags)


def frame(mtype, payload):
    return header(mtype, len(payload)) + payload


# ---- fuzz_link_hs.c ----------------------------------------------------------
# enum { OP_FRAME, OP_RAW, OP_SPLIT, OP_HELLO, OP_WELCOME, OP_ATTACH, OP_TIME,
#        OP_ACCEPT, OP_SWITCH, OP_EOF, OP_AUTH_HELLO, OP_AUTH_PROOF, OP_AUTH_CHALLENGE }
(OP_FRAME, OP_RAW, OP_SPLIT, OP_HELLO, OP_WELCOME, OP_ATTACH, OP_TIME, OP_ACCEPT, OP_SWITCH, OP_EOF,
 OP_AUTH_HELLO, OP_AUTH_PROOF, OP_AUTH_CHALLENGE) = range(13)
# fz_types[] order: the index FRAME / SPLIT take.
FZ_TYPES = [HELLO, WELCOME, REJECT, HEARTBEAT, UNLINK, UNLINK_ACK, ATTACH, ATTACH_OK,
            AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF, NOTIFY, NOTIFY_ACK]
# fz_exts[] indexes
X_STREAMS, X_RDMA, X_WAIT, X_DEPTH, X_UNKNOWN, X_CRITICAL, X_WAIT_SHORT, X_NOTIFY = range(8)


def cfg(mode, max_links=1, legacy_wait=False, legacy_rails=False, expected_role=0):
    """mode 0 PROMPT, 1 MIX, 2 DECODER, 3 MIX."""
    b = mode | ((max_links - 1) << 2) | (0x10 if legacy_wait else 0) | (0x20 if legacy_rails else 0)
    return u8(b | (expected_role << 6))


def exts(*items):
    out = u8(len(items))
    for k, data in items:
        out += u8(k) + data
    return out


def hello_fields(client=b"\x00", target=b"\x00", client_role=DECODER, expected=PROMPT, inc=1, liveness=970, ext=b"\x00"):
    """pick_id bytes: 0x00 = the usual id, 0xC0 + k = usual + k, 0xF0 + u64 = any."""
    return client + target + u8(client_role | expected << 2) + u8(inc) + u16(liveness) + ext


def op_hello(**kw):
    return u8(OP_HELLO) + hello_fields(**kw)


def op_welcome(server=b"\x00", role=PROMPT, liveness=970, inc=1, ext=b"\x00"):
    return u8(OP_WELCOME) + server + u8(role) + u16(liveness) + u8(inc) + ext


def op_frame(mtype, payload, length=None):
    n = len(payload) if length is None else length
    return u8(OP_FRAME) + u8(FZ_TYPES.index(mtype)) + u16(n) + payload


def op_split(chunk, mtype, payload):
    return u8(OP_SPLIT) + u8(chunk - 1) + u8(FZ_TYPES.index(mtype)) + u16(len(payload)) + payload


def op_raw(data):
    assert len(data) < 256
    return u8(OP_RAW) + u8(len(data)) + data


# Keyed mode (the second configuration byte's 0x80): the engine has the
# fuzz key. Proof kinds (build_auth_proof): 0-3 right, 4 wrong key, 5 the
# engine's MAC_s reflected, 6 a stale Ns, 7 one bit flipped (+ its byte);
# 0x40: a HELLO follows in the same write. Challenge kinds: 0-1 right, 2
# wrong key, 3 the client's label.
KEYED = b"\xff"
P_RIGHT, P_WRONG_KEY, P_REFLECT, P_STALE, P_FLIP, P_WITH_HELLO = 0, 4, 5, 6, 7, 0x40
C_RIGHT, C_WRONG_KEY, C_REFLECT = 0, 2, 3


def op_auth_hello(nonce=1, scheme=b"\x00"):
    """scheme byte < 0xF0: scheme 1; 0xF0 + k: scheme k."""
    return u8(OP_AUTH_HELLO) + scheme + u8(nonce)


def op_auth_proof(kind=P_RIGHT, hello=None, flip_byte=0):
    out = u8(OP_AUTH_PROOF) + u8(kind | (P_WITH_HELLO if hello is not None else 0))
    if kind == P_FLIP:
        out += u8(flip_byte)
    return out + (hello if hello is not None else b"")


def op_auth_challenge(kind=C_RIGHT, nonce=2):
    return u8(OP_AUTH_CHALLENGE) + u8(kind) + u8(nonce)


def notify_payload(seq, data):
    return u64(seq) + u32(len(data)) + data


def reject_payload(status, msg):
    return u32(status) + u16(len(msg)) + msg


USUAL = b"\x00"


def any_id(v):
    return b"\xf0" + u64(v)


LINK_HS = {
    # A server handshake that links, then heartbeats, then the client unlinks.
    "srv_link_unlink": cfg(0) + b"\x7f" + b"\x00" +
        op_hello(ext=exts((X_WAIT, u32(500)), (X_RDMA, b""), (X_DEPTH, b""))) +
        u8(OP_TIME) + u16(100) + op_frame(HEARTBEAT, b"") + op_frame(UNLINK, u32(0)),
    # HELLO to another cluster id, then to the right one on a new connection.
    "srv_wrong_target": cfg(0) + b"\x7f" + b"\x00" + op_hello(target=any_id(7)) +
        u8(OP_ACCEPT) + b"\x00" + op_hello(),
    # The same client cluster links twice (the second replaces the first).
    "srv_relink_same_id": cfg(0, max_links=2) + b"\x7f" + b"\x00" + op_hello() +
        u8(OP_ACCEPT) + b"\x00" + op_hello(inc=2),
    # MaxLinks 1: a second client cluster is refused.
    "srv_max_links": cfg(0, max_links=1) + b"\x7f" + b"\x00" + op_hello() +
        u8(OP_ACCEPT) + b"\x00" + op_hello(client=b"\xc1"),
    # A HELLO split in chunks of 3 bytes, and a critical unknown extension.
    "srv_split_hello": cfg(0) + b"\x7f" + b"\x00" +
        op_split(3, HELLO, u64(200) + u64(100) + u32(DECODER) + u32(0) + u64(5) + u32(900) +
                 u16(1) + u16(0x8042) + u16(0)),
    # A header of protocol version 2 (answered with a REJECT any version reads).
    "srv_bad_version": cfg(0) + b"\x7f" + b"\x00" + op_raw(header(HELLO, 0, version=2)),
    # An idle connection past llmlink.FirstFrameTimeoutMs, a trickling one.
    "srv_idle_trickle": cfg(0) + b"\x0a" + b"\x00" + u8(OP_TIME) + u16(400) +
        u8(OP_ACCEPT) + b"\x00" + op_raw(header(HELLO, 44)[:5]) + u8(OP_TIME) + u16(30) +
        op_raw(header(HELLO, 44)[5:]),
    # A PROMPT client, a wrong role, liveness below the floor.
    "srv_bad_roles": cfg(0) + b"\x7f" + b"\x00" + op_hello(client_role=PROMPT) +
        u8(OP_ACCEPT) + b"\x00" + op_hello(expected=DECODER) +
        u8(OP_ACCEPT) + b"\x00" + op_hello(liveness=0),
    # An ATTACH on a handshake connection of a linked client (no owner thread here).
    "srv_attach_on_link": cfg(0) + b"\x7f" + b"\x00" + op_hello() + u8(OP_ACCEPT) + b"\x00" +
        u8(OP_ATTACH) + USUAL + USUAL + u8(1) + b"\x00" + u8(0) + u8(1 << 1),
    # The client: WELCOME with data streams and a wait time; then heartbeats.
    "cli_welcome": cfg(2) + b"\x7f" + b"\x00" +
        op_welcome(ext=exts((X_STREAMS, b""), (X_WAIT, u32(800)))) + op_frame(HEARTBEAT, b""),
    # The client: refused with a REJECT, then a WELCOME of the wrong cluster.
    "cli_reject": cfg(2) + b"\x7f" + b"\x00" +
        op_frame(REJECT, reject_payload(0x5010B104, b"this is cluster 7")) +
        u8(OP_ACCEPT) + b"\x00" + op_welcome(server=any_id(7)),
    # The client expects a PROMPT and gets a MIX; a bad wait-time extension.
    "cli_wrong_role": cfg(2, expected_role=PROMPT) + b"\x7f" + b"\x00" + op_welcome(role=MIX) +
        u8(OP_ACCEPT) + b"\x00" + op_welcome(ext=exts((X_WAIT_SHORT, u16(1)))),
    # MIX: a server handshake and a client attempt at once, then the peers go.
    "mix_both": cfg(1, max_links=2) + b"\x7f" + b"\x00" + op_hello() +
        u8(OP_ACCEPT) + b"\x01" + op_welcome() + u8(OP_SWITCH) + b"\x00" + u8(OP_EOF),
    # Keyed server: AUTH_HELLO, the right proof with HELLO in one write (a
    # link), heartbeats, unlink.
    "srv_auth_link": cfg(0) + KEYED + b"\x00" + op_auth_hello() +
        op_auth_proof(hello=hello_fields(ext=exts((X_WAIT, u32(500))))) +
        u8(OP_TIME) + u16(100) + op_frame(HEARTBEAT, b"") + op_frame(UNLINK, u32(0)),
    # Keyed server: the proof and HELLO in two writes; AUTH_HELLO split in
    # chunks of 5 bytes on a second connection, then a frame after the proof.
    "srv_auth_two_writes": cfg(0, max_links=2) + KEYED + b"\x00" + op_auth_hello(nonce=3) +
        op_auth_proof() + op_hello() + u8(OP_ACCEPT) + b"\x00" +
        op_split(5, AUTH_HELLO, u8(1) + bytes(range(32))) + op_auth_proof() +
        op_frame(AUTH_HELLO, u8(1) + bytes(32)),
    # Keyed server: each wrong proof (wrong key, reflected MAC_s, stale Ns,
    # a flipped bit) refused with AUTH_FAILED, no link.
    "srv_auth_wrong_proofs": cfg(0) + KEYED + b"\x00" + op_auth_hello() +
        op_auth_proof(P_WRONG_KEY, hello=hello_fields()) +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello(nonce=4) + op_auth_proof(P_REFLECT) +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello(nonce=5) + op_auth_proof(P_STALE) +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello(nonce=6) + op_auth_proof(P_FLIP, flip_byte=9),
    # Keyed server: a plain HELLO (authentication required), scheme 2, a
    # second AUTH_HELLO instead of the proof, the client's REJECT.
    "srv_auth_required": cfg(0) + KEYED + b"\x00" + op_hello() +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello(scheme=b"\xf2") +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello() + op_auth_hello() +
        u8(OP_ACCEPT) + b"\x00" + op_auth_hello() +
        op_frame(REJECT, reject_payload(0x5010B10A, b"wrong key")),
    # Keyed server, FirstFrameTimeoutMs 81: AUTH_HELLO in time, the proof
    # after it: dropped (the first-frame deadline covers the whole exchange).
    "srv_auth_slow_proof": cfg(0) + b"\x8a" + b"\x00" + op_auth_hello() + u8(OP_TIME) + u16(30) +
        op_auth_proof(hello=hello_fields()),
    # A server without a key: AUTH_HELLO refused.
    "srv_no_key_auth_hello": cfg(0) + b"\x7f" + b"\x00" + op_auth_hello(),
    # Keyed client: the right challenge (proof and HELLO follow), WELCOME
    # with data streams (a session key), heartbeats.
    "cli_auth_link": cfg(2) + KEYED + b"\x00" + op_auth_challenge() +
        op_welcome(ext=exts((X_STREAMS, b""), (X_WAIT, u32(800)))) + op_frame(HEARTBEAT, b""),
    # Keyed client: a challenge with the wrong key, a reflected one, a
    # WELCOME without any, a REJECT.
    "cli_auth_wrong": cfg(2) + KEYED + b"\x00" + op_auth_challenge(C_WRONG_KEY) +
        u8(OP_ACCEPT) + b"\x00" + op_auth_challenge(C_REFLECT) +
        u8(OP_ACCEPT) + b"\x00" + op_welcome() +
        u8(OP_ACCEPT) + b"\x00" + op_frame(REJECT, reject_payload(0x5010B10A, b"no key here")),
    # Keyed MIX: a server link and a client link at once.
    "mix_auth": cfg(1, max_links=2) + KEYED + b"\x00" + op_auth_hello() +
        op_auth_proof(hello=hello_fields(expected=0)) + u8(OP_ACCEPT) + b"\x01" + op_auth_challenge() +
        op_welcome(ext=exts((X_STREAMS, b""))),
    # A linked client sends notifications: a good one (ACKed), then one
    # whose length field disagrees (the link breaks).
    "srv_notify": cfg(0) + b"\x7f" + b"\x00" + op_hello(ext=exts((X_NOTIFY, b""))) +
        op_frame(NOTIFY, notify_payload(0, b"blocks of request 7 read")) +
        op_frame(NOTIFY, notify_payload(1, b"x" * 4096)) +
        op_frame(NOTIFY, u64(2) + u32(9) + b"short"),
    # An ACK for a notification never sent, and a NOTIFY of length 0.
    "srv_notify_bad": cfg(0, max_links=2) + b"\x7f" + b"\x00" + op_hello() +
        op_frame(NOTIFY_ACK, u64(0) + u32(0)) + u8(OP_ACCEPT) + b"\x00" + op_hello(inc=2) +
        op_frame(NOTIFY, u64(0) + u32(0)),
    # NOTIFY before HELLO (server) and before WELCOME (client).
    "notify_early": cfg(1, max_links=2) + b"\x7f" + b"\x00" +
        op_frame(NOTIFY, notify_payload(0, b"early")) + u8(OP_ACCEPT) + b"\x01" +
        op_frame(NOTIFY, notify_payload(0, b"early")),
    # The client: WELCOME announcing notifications, then one from the server.
    "cli_notify": cfg(2) + b"\x7f" + b"\x00" +
        op_welcome(ext=exts((X_STREAMS, b""), (X_NOTIFY, b""))) +
        op_frame(NOTIFY, notify_payload(5, b"free request 9")),
}

# ---- fuzz_wire.c -------------------------------------------------------------
# The input is a control connection's byte stream (frames back to back).
WIRE = {
    "notify": frame(NOTIFY, notify_payload(3, b"request 7 read")) +
        frame(NOTIFY_ACK, u64(3) + u32(0)),
    "notify_max": frame(NOTIFY, notify_payload(4, bytes(range(256)) * 16)),
    "notify_full_ack": frame(NOTIFY_ACK, u64(9) + u32(0x5010B10F)) +
        frame(NOTIFY, u64(1) + u32(7) + b"abc"),
}

# ---- fuzz_attach.c -----------------------------------------------------------
# enum { OP_STREAM, OP_FRAME, OP_AGAIN, OP_TIME, OP_DROP, OP_RELINK, OP_BREAK }
A_STREAM, A_FRAME, A_AGAIN, A_TIME, A_DROP, A_RELINK, A_BREAK = range(7)


def attach_fields(who=0, server=0, cinc=0, sinc=0, index=0, d=0):
    """who 0/1: FZ_CLI_ID (+1); byte >= 0xF0 takes a u64 after it. d: bit0
    direction, bits1-2 transport, 0x08 our boot id, 0x10 our pidns, 0x20 our pid."""
    out = u8(who) + u8(server) + u8(cinc) + u8(sinc) + u8(index) + u8(d)
    if not d & 0x10:
        out += u8(0)
    if not d & 0x20:
        out += u32(0)
    return out


def stream(**kw):
    return u8(A_STREAM) + attach_fields(**kw)


# The configuration byte: 0x01 a second link, bits 1-3 the streams per
# direction the HELLOs announce (LLK_EXT_STREAM_COUNT; 0: none), 0x10 keyed.
def attach_cfg(two=False, per_dir=0, keyed=False):
    return u8((1 if two else 0) | per_dir << 1 | (0x10 if keyed else 0))


# Keyed mode: a STREAM step's auth byte (fuzz_attach.c A_*): 0-7 the right
# proof and MAC, 8 no exchange, 9 no MAC, 10 another link's session key,
# 11 the previous stream's nonces (a replayed MAC), 12 a wrong proof, 13 a
# flipped MAC bit (+ a byte after the ATTACH's fields: which bit).
K_RIGHT, K_NONE, K_NO_MAC, K_OTHER_KS, K_STALE, K_BAD_PROOF, K_FLIP = 0, 8, 9, 10, 11, 12, 13


def kstream(how=K_RIGHT, flip=None, **kw):
    out = u8(A_STREAM) + u8(how) + attach_fields(**kw)
    return out + (u8(flip) if how == K_FLIP else b"")


TCP = 1 << 1
ATTACH_SEEDS = {
    # Two streams each way on link 1: every one accepted.
    "streams_both_dirs": b"\x00" + stream(index=0, d=TCP) + stream(index=1, d=TCP) +
        stream(index=0, d=TCP | 1) + stream(index=1, d=TCP | 1),
    # The same stream twice: the second refused (issue 14).
    "duplicate": b"\x00" + stream(index=0, d=TCP) + stream(index=0, d=TCP),
    # Every index up to LLK_MAX_STREAMS and one past.
    "many_streams": b"\x00" + b"".join(stream(index=i, d=TCP) for i in range(18)),
    # Wrong server incarnation, wrong client id, an index past the end.
    "wrong_fields": b"\x00" + stream(sinc=0xF0) + u64(5) + stream(who=0xF5) + u64(999) +
        stream(index=0xF0) + u16(400),
    # Two links; a stream of each; the first link dropped, then a stream for it.
    "two_links_drop": b"\x01" + stream(who=0, d=TCP) + stream(who=1, d=TCP) +
        u8(A_DROP) + b"\x00" + stream(who=0, index=1, d=TCP),
    # A second ATTACH on an accepted stream's connection, a relinked client.
    "again_relink": b"\x00" + stream(d=TCP) + u8(A_AGAIN) + attach_fields(index=1, d=TCP) +
        u8(A_RELINK) + b"\x00" + stream(d=TCP),
    # shm and rdma forced by the stream; with this host's identity.
    "transports": b"\x00" + stream(d=(2 << 1) | 0x38) + stream(index=1, d=(3 << 1)),
    # The link breaks (a transfer failed) and an ATTACH comes before the
    # reactor closes it: refused, never ATTACH_OK then dropped (a fix).
    "break_then_attach": b"\x00" + stream(d=TCP) + u8(A_BREAK) + b"\x00" + attach_fields(index=1, d=TCP),
    # A malformed ATTACH payload.
    "bad_payload": b"\x00" + u8(A_FRAME) + u8(10) + b"\x00" * 10,
    # The HELLO announces 2 streams per direction: index 2 refused.
    "stream_count": attach_cfg(per_dir=2) + stream(index=0, d=TCP) + stream(index=1, d=TCP) +
        stream(index=2, d=TCP) + stream(index=1, d=TCP | 1) + stream(index=2, d=TCP | 1),
    # Keyed: streams that prove the key and the link, both directions, on
    # two links; a second ATTACH on an accepted stream's connection.
    "keyed_streams": attach_cfg(two=True, keyed=True) + kstream(index=0, d=TCP) +
        kstream(index=0, d=TCP | 1) + kstream(who=1, index=1, d=TCP) +
        u8(A_AGAIN) + u8(K_RIGHT) + attach_fields(index=2, d=TCP),
    # Keyed: every wrong way (no exchange, no MAC, the other link's key, a
    # replayed MAC, a wrong proof, a flipped bit) refused AUTH_FAILED; then
    # a right one.
    "keyed_wrong": attach_cfg(two=True, keyed=True) + kstream(K_NONE, d=TCP) +
        kstream(K_NO_MAC, d=TCP) + kstream(K_OTHER_KS, d=TCP) + kstream(K_STALE, d=TCP) +
        kstream(K_BAD_PROOF, d=TCP) + kstream(K_FLIP, flip=77, d=TCP) + kstream(d=TCP),
    # Keyed: the link breaks between a stream's exchange and its ATTACH.
    "keyed_break": attach_cfg(keyed=True) + kstream(d=TCP) + u8(A_BREAK) + b"\x00" + u8(K_RIGHT) +
        attach_fields(index=1, d=TCP),
    # Keyed: an ATTACH sent into an accepted owner stream (the owner thread
    # breaks the link, asynchronously), then a stream without a MAC: refused
    # AUTH_FAILED, or NOT_YET_LINK when the break came first (found by
    # libFuzzer: the harness had expected AUTH_FAILED only).
    "keyed_again_then_no_mac": attach_cfg(keyed=True) + kstream(d=TCP) + u8(A_AGAIN) +
        u8(K_RIGHT) + attach_fields(d=TCP) + kstream(K_NO_MAC, d=TCP),
    # Keyed, 1 stream per direction announced; a relink (a new session key).
    "keyed_count_relink": attach_cfg(per_dir=1, keyed=True) + kstream(d=TCP) +
        kstream(index=1, d=TCP) + u8(A_RELINK) + b"\x00" + kstream(d=TCP | 1),
}

# ---- fuzz_owner_admit.c --------------------------------------------------------
READ, WRITE = 1, 2
K_BLOCKS, K_CACHE, K_AS_BLOCKS = 1, 2, 3
F_WHOLE, F_CONSUME, F_ALL = 1, 2, 4

# cache 0: blocks, registered, 1 tensor of uint8, 4 blocks of 16 bytes, with its key
# cache 1: batch, registered, 2 tensors, 2 entries of 8 bytes, with its CACHE key
# (the first byte: 1 + b % 3 caches -> 1 for two)
CACHES = u8(1) + u8(0x01) + u8(3) + u8(15) + u8(0x04) + u8(1) + u8(7)
# the same, cache 1 allocated by the library (owned: a CONSUME drops its key)
CACHES_OWNED = CACHES[:4] + u8(0x06) + CACHES[5:]


def req(op, kind, flags, key, cache, segs, bnd=0x01, hint=None, req_id=5, unit=0x00):
    a = op | kind << 3
    out = u8(0x00) + u8(a) + u8(flags) + key + u8(cache) + u8(unit) + u8(len(segs))
    for tensor, off, length in segs:
        out += u8(tensor) + u16(off) + u16(length - 1)
    out += u8(bnd)
    if not bnd & 1:
        out += u8(hint)
    return out + u8(req_id)


KEY_OWN0 = u8(0x00)          # cache 0, its own (BLOCKS) key
KEY_OWN1 = u8(0x01)          # cache 1, its own (CACHE) key: entry 0
def key_id(cache, index):    # by id and index
    return u8(cache | 0x04) + u8(index)


OWNER_SEEDS = {
    "read_blocks": CACHES + req(READ, K_BLOCKS, 0, KEY_OWN0, 0, [(0, 0, 16), (0, 32, 16)]),
    "write_cache_key": CACHES + req(WRITE, K_CACHE, 0, KEY_OWN1, 1, [(1, 0, 8)]),
    "read_by_id": CACHES + req(READ, K_CACHE, F_WHOLE, key_id(1, 1), 1, [(0, 0, 8), (1, 0, 8)]),
    "past_end": CACHES + req(READ, K_BLOCKS, 0, KEY_OWN0, 0, [(0, 56, 16)]) +
        req(READ, K_CACHE, 0, key_id(1, 5), 1, [(0, 0, 8)]),
    "consume": CACHES_OWNED + req(READ, K_CACHE, F_CONSUME, KEY_OWN1, 1, []) +
        req(READ, K_CACHE, 0, KEY_OWN1, 1, [(0, 0, 4)]),
    "all_tensors": CACHES + req(READ, K_CACHE, F_ALL, key_id(1, 0), 1, [(0, 0, 8)], bnd=0x00, hint=3),
    "other_transports": CACHES + req(3, K_BLOCKS, 0, KEY_OWN0, 0, [(0, 0, 16)]) +
        req(5, K_CACHE, 0, KEY_OWN1, 1, [(0, 0, 8)]),
    "raw": CACHES + u8(0xE0) + u16(40) + bytes(range(40)),
}

# ---- fuzz_rdma_setup.c -----------------------------------------------------------


def rail(qpn=0x10, psn=0x20, mtu=4, rd_init=8, rd_dest=16, target=1, ipbyte=2, gid=7):
    """build_rail: flags 0 (small qpn/psn, mtu 1 + b % 5), lid, depths, target kind."""
    out = u8(0) + u8(qpn - 1) + u8(psn) + u8(mtu - 1) + u8(0) + u8(rd_init) + u8(rd_dest) + u8(target)
    if target:
        out += u8(ipbyte)
    return out + u8(gid)


def rdma_cfg(client, legacy=False, local_mtu=5, cap_idx=0):
    return u8((1 if client else 0) | (2 if legacy else 0) | ((local_mtu - 1) << 2) | (cap_idx << 5))


RDMA_SEEDS = {
    "setup_two_rails": rdma_cfg(False) + u8(0x05) + u8(0) + u8(1) + rail() + rail(target=0),
    "setup_legacy": rdma_cfg(False, legacy=True) + u8(0x05) + u8(0) + u8(0) + rail(rd_init=0, rd_dest=0),
    "setup_ipv6_capped": rdma_cfg(False, local_mtu=3, cap_idx=2) + u8(0x03) + u8(0) + u8(0) +
        rail(target=2, rd_init=0, rd_dest=0),
    "setup_raw": rdma_cfg(False) + u8(0x05) + u8(1) + u16(1) + u32(0x10) + u32(0x20) +
        bytes(16) + u16(0) + u8(5) + u8(0x45) + bytes(16),
    "ok_rails": rdma_cfg(True) + u8(0x05) + u8(0) + u8(1) + u8(1) + rail() + rail(mtu=2),
    "ok_refused": rdma_cfg(True) + u8(0x05) + u8(0) + u8(0) + u8(9),
    "ok_raw": rdma_cfg(True, legacy=True) + u8(0x05) + u8(1) + u32(0) + u16(0) + u16(1) +
        u32(0x10) + u32(0x20) + bytes(16) + u16(0) + u8(3) + u8(0x12),
}

TARGETS = {"link_hs": LINK_HS, "wire": WIRE, "attach": ATTACH_SEEDS, "owner_admit": OWNER_SEEDS,
           "rdma_setup": RDMA_SEEDS}


def main():
    check = "--check" in sys.argv[1:]
    bad = 0
    for target, seeds in TARGETS.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            path = os.path.join(d, name + ".bin")
            if check:
                try:
                    with open(path, "rb") as f:
                        same = f.read() == data
                except OSError:
                    same = False
                if not same:
                    print(f"gen_seeds: {path} differs from what gen_seeds.py writes")
                    bad = 1
                continue
            with open(path, "wb") as f:
                f.write(data)
    return bad


if __name__ == "__main__":
    sys.exit(main())
