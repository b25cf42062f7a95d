#!/usr/bin/env python3
"""capture_frames.py - record real BEAM <-> kv_cnode traffic as golden bytes
and as the libFuzzer seed corpus.

Starts build/kv_cnode (name kvcap@localhost, cookie "goldencookie") and an
`erl -sname capcli@localhost` node running capture_client.erl, with a
recording TCP proxy between them.  The fake epmd of
tests/golden/capture_handshake.py (on a private ERL_EPMD_PORT, so no real
epmd is touched) registers both and answers the client's PORT_PLEASE2 for
kvcap with the proxy's port.  kv_cnode negotiates no atom cache and no
fragments, so every frame body starts 112 'p'.

Writes:
  tests/golden/p_hs_beam_to_kv.bin     handshake packets, BEAM initiator -> kv
  tests/golden/p_hs_kv_to_beam.bin     handshake packets, kv acceptor -> BEAM
  tests/golden/p_frames_beam_to_kv.bin whole frames (Len:32 body) after it
  tests/golden/p_frames_kv_to_beam.bin the same, kv -> BEAM
  tests/golden/p_frames.txt            one line per frame: direction, op
  tests/fuzz/corpus/<target>/*         seeds for each fuzz target (formats
                                       in tests/fuzz/README.txt)
Every process it starts is stopped before it exits.
Usage: python3 tests/fuzz/capture_frames.py   (after `make`)
"""
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(ROOT, "tests", "golden")
CORPUS = os.path.join(HERE, "corpus")
sys.path.insert(0, GOLDEN)
import capture_handshake as ch  # noqa: E402

KV = "kvcap"
CLIENT = "capcli"
ch.NAME_B = KV  # the fake epmd sends the client to the proxy for this name
ch.CREATION[KV] = 0x6B000003
ch.CREATION[CLIENT] = 0x63000004
MAX_SEED = 32 * 1024  # corpus files stay small: fuzzing speed


# ---- a minimal external-term-format skipper (trusted capture data) ----

def skip_term(b, i):
    t = b[i]
    i += 1
    if t == 97: return i + 1                               # SMALL_INTEGER
    if t == 98: return i + 4                               # INTEGER
    if t == 70: return i + 8                               # NEW_FLOAT
    if t == 99: return i + 31                              # FLOAT
    if t in (100, 118): return i + 2 + struct.unpack(">H", b[i:i + 2])[0]
    if t in (115, 119): return i + 1 + b[i]
    if t == 106: return i                                  # NIL
    if t == 107: return i + 2 + struct.unpack(">H", b[i:i + 2])[0]
    if t == 109: return i + 4 + struct.unpack(">I", b[i:i + 4])[0]
    if t == 77: return i + 5 + struct.unpack(">I", b[i:i + 4])[0]
    if t == 110: return i + 2 + b[i]
    if t == 111: return i + 5 + struct.unpack(">I", b[i:i + 4])[0]
    if t in (104, 105, 108, 116):
        if t == 104:
            n, i = b[i], i + 1
        else:
            n, i = struct.unpack(">I", b[i:i + 4])[0], i + 4
        if t == 116: n *= 2
        for _ in range(n):
            i = skip_term(b, i)
        if t == 108: i = skip_term(b, i)                   # tail
        return i
    if t in (88, 103):                                     # NEW_PID, PID
        i = skip_term(b, i)
        return i + 8 + (4 if t == 88 else 1)
    if t in (89, 102, 120):                                # ports
        i = skip_term(b, i)
        return i + {89: 8, 102: 5, 120: 12}[t]
    if t in (90, 114):                                     # NEWER/NEW_REFERENCE
        n = struct.unpack(">H", b[i:i + 2])[0]
        i = skip_term(b, i + 2)
        return i + (4 if t == 90 else 1) + 4 * n
    if t == 101:                                           # REFERENCE
        return skip_term(b, i) + 5
    if t == 113:                                           # EXPORT
        for _ in range(3):
            i = skip_term(b, i)
        return i
    if t == 112:                                           # NEW_FUN
        return i + struct.unpack(">I", b[i:i + 4])[0]
    raise ValueError("tag %d at %d" % (t, i - 1))


def frames(stream):
    pos, out = 0, []
    while pos + 4 <= len(stream):
        n, = struct.unpack(">I", stream[pos:pos + 4])
        if pos + 4 + n > len(stream):
            break
        out.append(stream[pos:pos + 4 + n])
        pos += 4 + n
    return out


def split_body(body):
    """'p' body -> (control term with 131, payload term with 131 or None)."""
    assert body[0] == 112
    end = skip_term(body, 2)
    ctl = body[1:end]
    pay = body[end:] if end < len(body) else None
    if pay is not None:
        assert skip_term(pay, 1) == len(pay)
    return ctl, pay


def control_op(ctl):
    i = 1
    t = ctl[i]
    i += 2 if t == 104 else 5
    return ctl[i + 1] if ctl[i] == 97 else -1


# ---- running the nodes ----

def start_kv(epmd_port):
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
    exe = os.environ.get("KV_CNODE") or os.path.join(ROOT, "build", "kv_cnode")
    return subprocess.Popen([exe, "--sname", KV + "@localhost", "--cookie", ch.COOKIE,
                             "--log-level", "info"], env=env, stdin=subprocess.DEVNULL)


def run_client(epmd_port, ebin):
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
    args = ["erl", "-sname", CLIENT + "@localhost", "-setcookie", ch.COOKIE, "-noshell",
            "-noinput", "-start_epmd", "false", "-hidden",
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}", "-pa", ebin,
            "-run", "capture_client", "main", KV + "@localhost"]
    p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
    rc = p.wait(120)
    if rc != 0:
        raise RuntimeError("capture_client exited with %d" % rc)


def capture():
    ebin = tempfile.mkdtemp(prefix="kvcap")
    procs = []
    proxy = ch.Proxy()
    epmd = ch.FakeEpmd(proxy.port)
    try:
        subprocess.run(["erlc", "-o", ebin, os.path.join(HERE, "capture_client.erl")],
                       check=True)
        kv = start_kv(epmd.port)
        procs.append(kv)
        proxy.target = epmd.wait_for(KV, 30)
        run_client(epmd.port, ebin)
        time.sleep(0.3)
    finally:
        for p in procs:
            ch.stop_node(p)
        time.sleep(0.2)
        proxy.close()
        epmd.close()
        shutil.rmtree(ebin, ignore_errors=True)
    return bytes(proxy.data["a2b"]), bytes(proxy.data["b2a"])


# ---- writing ----

def put(dirname, data, tag=""):
    if len(data) > MAX_SEED:
        return
    d = os.path.join(CORPUS, dirname)
    os.makedirs(d, exist_ok=True)
    name = (tag + "-" if tag else "") + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    a2b, b2a = capture()
    hs_a2b, fr_a2b = ch.split_handshake(a2b, ord("r"))
    hs_b2a, fr_b2a = ch.split_handshake(b2a, ord("a"))
    out = {"p_hs_beam_to_kv.bin": hs_a2b, "p_hs_kv_to_beam.bin": hs_b2a,
           "p_frames_beam_to_kv.bin": fr_a2b, "p_frames_kv_to_beam.bin": fr_b2a}
    for fn, data in out.items():
        with open(os.path.join(GOLDEN, fn), "wb") as f:
            f.write(data)
    lines = []
    ops = {}
    for d, stream in (("beam->kv", fr_a2b), ("kv->beam", fr_b2a)):
        for fr in frames(stream):
            if len(fr) == 4:
                lines.append("%s tick" % d)
                continue
            ctl, pay = split_body(fr[4:])
            op = control_op(ctl)
            ops.setdefault(d, set()).add(op)
            lines.append("%s op=%d len=%d payload=%s" % (d, op, len(fr) - 4,
                                                          "yes" if pay else "no"))
    with open(os.path.join(GOLDEN, "p_frames.txt"), "w") as f:
        f.write("# generated by tests/fuzz/capture_frames.py (see tests/fuzz/README.txt).\n"
                "# An OTP %s node capcli@localhost (capture_client.erl) talking to\n"
                "# kv_cnode kvcap@localhost (creation 0x%08x), cookie %s; kv_cnode\n"
                "# offers no atom cache and no fragments, so every body starts 112.\n"
                "# p_frames_beam_to_kv.bin / p_frames_kv_to_beam.bin hold the whole\n"
                "# frames (Len:32 body) below, in order; p_hs_*.bin the handshakes.\n"
                "# One line per frame:\n" % (ch.otp_release(), ch.CREATION[KV], ch.COOKIE))
        f.write("\n".join(lines) + "\n")

    if os.path.isdir(CORPUS):
        for t in ("fuzz_dist", "fuzz_term", "fuzz_conn", "fuzz_hs_accept", "fuzz_hs_connect"):
            shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    # fuzz_dist: one frame per seed, then runs of frames
    golden_frames = []
    for fn in ("frames_initiator_to_acceptor.bin", "frames_acceptor_to_initiator.bin"):
        with open(os.path.join(GOLDEN, fn), "rb") as f:
            golden_frames += frames(f.read())
    for stream in (fr_a2b, fr_b2a):
        fl = frames(stream)
        for fr in fl:
            put("fuzz_dist", fr)
        for i in range(0, len(fl), 8):
            put("fuzz_dist", b"".join(fl[i:i + 8]), "run")
        for fr in fl:  # bare bodies: the target decodes input starting 'p' as one
            if len(fr) > 4:
                put("fuzz_dist", fr[4:], "body")
    for fr in golden_frames:  # atom-cache headers: must be refused cleanly
        put("fuzz_dist", fr, "ac")
    # fuzz_term: every control and payload term, with its 131
    for stream in (fr_a2b, fr_b2a):
        for fr in frames(stream):
            if len(fr) > 4:
                ctl, pay = split_body(fr[4:])
                put("fuzz_term", ctl)
                if pay:
                    put("fuzz_term", pay)
    # fuzz_conn: [options:1][chunk:1] then the BEAM's frames, in runs
    fl = frames(fr_a2b)
    run, size = [], 0
    for fr in fl:
        if size + len(fr) > MAX_SEED - 2 and run:
            put("fuzz_conn", b"\x00\x00" + b"".join(run))
            run, size = [], 0
        if len(fr) <= MAX_SEED - 2:
            run.append(fr)
            size += len(fr)
    if run:
        put("fuzz_conn", b"\x00\x00" + b"".join(run))
    for fr in fl:
        put("fuzz_conn", b"\x00\x07" + fr)
    # framed mode (options bit5): [n:16][body] records, lengths written by the harness
    run = b""
    for fr in fl:
        if len(fr) - 4 > 0xFFFF:
            continue
        rec = struct.pack(">H", len(fr) - 4) + fr[4:]
        if len(run) + len(rec) > MAX_SEED - 2 and run:
            put("fuzz_conn", b"\x20\x00" + run, "framed")
            run = b""
        run += rec
    if run:
        put("fuzz_conn", b"\x20\x00" + run, "framed")
    put("fuzz_conn", b"\x38\x00" + b"".join(struct.pack(">H", len(fr) - 4) + fr[4:]
                                            for fr in fl[:40] if len(fr) - 4 <= 0xFFFF),
        "framed-opts")
    # fuzz_hs_accept: [challenge:4][status:1][chunk:1] initiator bytes
    with open(os.path.join(GOLDEN, "hs_initiator_to_acceptor.bin"), "rb") as f:
        g_i2a = f.read()
    with open(os.path.join(GOLDEN, "hs_acceptor_to_initiator.bin"), "rb") as f:
        g_a2i = f.read()
    for i2a, a2i in ((g_i2a, g_a2i), (hs_a2b, hs_b2a)):
        pk = ch.packets(a2i)
        chal = [p for p in pk if p[0] == ord("N")][0][9:13]
        put("fuzz_hs_accept", chal + b"\x00\x00" + i2a)
        put("fuzz_hs_accept", chal + b"\x00\x03" + i2a + fr_a2b[:200])
        put("fuzz_hs_accept", chal + b"\x04\x01" + i2a)
    # fuzz_hs_connect: [challenge:4][chunk:1][namelen:1][acceptor name] acceptor bytes
    for i2a, a2i, name in ((g_i2a, g_a2i, b"golden_b@localhost"),
                           (hs_a2b, hs_b2a, (KV + "@localhost").encode())):
        pk = ch.packets(i2a)
        chal = [p for p in pk if p[0] == ord("r")][0][1:5]
        hdr = chal + b"\x00" + bytes([len(name)]) + name
        put("fuzz_hs_connect", hdr + a2i)
        put("fuzz_hs_connect", chal + b"\x02" + bytes([len(name)]) + name + a2i)
    print("captured: beam->kv %d handshake + %d frame bytes, kv->beam %d + %d"
          % (len(hs_a2b), len(fr_a2b), len(hs_b2a), len(fr_b2a)))
    for d in sorted(ops):
        print("  %s ops: %s" % (d, sorted(ops[d])))


if __name__ == "__main__":
    sys.exit(main())
