#!/usr/bin/env python3
"""capture_atomcache.py - real BEAM <-> kv_cnode traffic with the atom cache.

Same run as tests/fuzz/capture_frames.py (kv_cnode kvcap@localhost, an erl
node running capture_client.erl, a recording proxy, the fake epmd), but
kv_cnode now offers DIST_HDR_ATOM_CACHE and a BEAM takes it, so every frame
body both ways is in the header form (131 68 ...).  ERL picks the client's
erl command, so that other OTP releases can be recorded:

  python3 tests/golden/capture_atomcache.py 25
  ERL="chroot /work/otp-cache/29 erl" EBIN_ROOT=/work/otp-cache/29 \\
      python3 tests/golden/capture_atomcache.py 29

(EBIN_ROOT: a chroot's root, so the client's compiled module is put where
the chrooted erl can read it; removed afterwards.)  Writes, next to this
script, ac<TAG>_frames_beam_to_kv.bin and ac<TAG>_frames_kv_to_beam.bin:
the whole frames (Len:32 body) after the handshake, each direction from
the start of its connection, so replaying one file through a fresh cache
must decode every frame (tests/test_atomcache.c does).
"""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fuzz"))
import capture_frames as cf  # noqa: E402
import capture_handshake as ch  # noqa: E402


def main():
    tag = sys.argv[1] if len(sys.argv) > 1 else ch.otp_release()
    erl = shlex.split(os.environ.get("ERL", "erl"))
    root = os.environ.get("EBIN_ROOT", "")
    inner = tempfile.mkdtemp(prefix="kvcapac", dir=os.path.join(root, "tmp") if root else None)
    ebin_in_client = inner[len(root):] if root else inner
    subprocess.run(["erlc", "-o", inner, os.path.join(ROOT, "tests", "fuzz", "capture_client.erl")],
                   check=True)

    def run_client(epmd_port, _ebin):
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
        args = erl + ["-sname", cf.CLIENT + "@localhost", "-setcookie", ch.COOKIE, "-noshell",
                      "-noinput", "-start_epmd", "false", "-hidden",
                      "-kernel", "inet_dist_use_interface", "{127,0,0,1}", "-pa", ebin_in_client,
                      "-run", "capture_client", "main", cf.KV + "@localhost"]
        p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
        rc = p.wait(120)
        if rc != 0:
            raise RuntimeError("capture_client exited with %d" % rc)

    cf.run_client = run_client
    try:
        a2b, b2a = cf.capture()
    finally:
        shutil.rmtree(inner, ignore_errors=True)
    _, fr_a2b = ch.split_handshake(a2b, ord("r"))
    _, fr_b2a = ch.split_handshake(b2a, ord("a"))
    for d, data in (("beam_to_kv", fr_a2b), ("kv_to_beam", fr_b2a)):
        with open(os.path.join(HERE, "ac%s_frames_%s.bin" % (tag, d)), "wb") as f:
            f.write(data)
        bodies = [fr[4:] for fr in cf.frames(data) if len(fr) > 4]
        hdr = sum(1 for b in bodies if b[:2] == b"\x83\x44")
        print("OTP %s %s: %d frames, %d in the atom-cache form" % (tag, d, len(bodies), hdr))


if __name__ == "__main__":
    sys.exit(main())
