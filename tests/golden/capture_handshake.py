#!/usr/bin/env python3
"""capture_handshake.py - record a real OTP distribution handshake as golden bytes.

Runs two `erl -sname` nodes on loopback with a fixed cookie and puts a
recording TCP proxy between them.  A tiny fake epmd (on a private
ERL_EPMD_PORT, so no real epmd is touched) registers both nodes and answers
the initiator's PORT_PLEASE2 for the acceptor with the proxy's port.  The
initiator (golden_a) pings the acceptor (golden_b); the proxy sees the whole
handshake and the first frames.

Writes, next to this script:
  hs_initiator_to_acceptor.bin   handshake packets a -> b (2-byte lengths)
  hs_acceptor_to_initiator.bin   handshake packets b -> a
  frames_initiator_to_acceptor.bin  whole frames a -> b after the handshake
  frames_acceptor_to_initiator.bin  whole frames b -> a after the handshake
  hs_golden.h                    the same bytes as C arrays for tests/test_hs.c
  README.txt                     names, cookie, and every field of each packet

Every process it starts (two nodes, proxy and epmd threads) is stopped before
it exits.  Usage: python3 tests/golden/capture_handshake.py
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

COOKIE = "goldencookie"
HOST = "localhost"
NAME_A = "golden_a"  # initiator
NAME_B = "golden_b"  # acceptor
CREATION = {NAME_A: 0x5A000001, NAME_B: 0x5B000002}
OUT = os.path.dirname(os.path.abspath(__file__))


def listen_any():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def recv_exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class FakeEpmd:
    """Answers ALIVE2_REQ (keeps the socket, as epmd does) and PORT_PLEASE2."""

    def __init__(self, proxy_port):
        self.sock = listen_any()
        self.port = self.sock.getsockname()[1]
        self.proxy_port = proxy_port
        self.ports = {}
        self.keep = []
        self.stop = False
        self.registered = threading.Condition()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        try:
            (n,) = struct.unpack(">H", recv_exact(c, 2))
            req = recv_exact(c, n)
        except (EOFError, OSError):
            c.close()
            return
        if req[0] == 120:  # ALIVE2_REQ
            port, = struct.unpack(">H", req[1:3])
            nlen, = struct.unpack(">H", req[9:11])
            name = req[11:11 + nlen].decode()
            c.sendall(struct.pack(">BBI", 118, 0, CREATION.get(name, 1)))
            with self.registered:
                self.ports[name] = port
                self.registered.notify_all()
            self.keep.append(c)  # the node stays registered while this is open
        elif req[0] == 122:  # PORT_PLEASE2_REQ
            name = req[1:].decode()
            if name in self.ports:
                port = self.proxy_port if name == NAME_B else self.ports[name]
                nb = name.encode()
                c.sendall(struct.pack(">BBHBBHHH", 119, 0, port, 77, 0, 6, 6, len(nb))
                          + nb + struct.pack(">H", 0))
            else:
                c.sendall(bytes([119, 1]))
            c.close()
        else:
            c.close()

    def wait_for(self, name, timeout):
        end = time.time() + timeout
        with self.registered:
            while name not in self.ports:
                left = end - time.time()
                if left <= 0:
                    raise RuntimeError("%s never registered with the fake epmd" % name)
                self.registered.wait(left)
        return self.ports[name]

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.keep:
            c.close()


class Proxy:
    """One connection: initiator -> proxy -> acceptor, recording both ways."""

    def __init__(self):
        self.sock = listen_any()
        self.port = self.sock.getsockname()[1]
        self.target = None
        self.data = {"a2b": bytearray(), "b2a": bytearray()}
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            a, _ = self.sock.accept()
        except OSError:
            return
        b = socket.create_connection(("127.0.0.1", self.target))
        self.conns += [a, b]
        threading.Thread(target=self.pump, args=(a, b, "a2b"), daemon=True).start()
        threading.Thread(target=self.pump, args=(b, a, "b2a"), daemon=True).start()

    def pump(self, src, dst, key):
        while True:
            try:
                chunk = src.recv(65536)
            except OSError:
                return
            if not chunk:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            self.data[key] += chunk
            try:
                dst.sendall(chunk)
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def start_node(name, epmd_port, extra):
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
    args = ["erl", "-sname", "%s@%s" % (name, HOST), "-setcookie", COOKIE,
            "-noshell", "-noinput", "-start_epmd", "false",
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}"] + extra
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)


def stop_node(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def split_handshake(data, last_tag):
    """Handshake packets up to and including the one tagged last_tag, then the
    whole 4-byte-length frames that follow (a partial last frame is dropped)."""
    pos = 0
    while True:
        n, = struct.unpack(">H", data[pos:pos + 2])
        tag = data[pos + 2]
        pos += 2 + n
        if tag == last_tag:
            break
    hs, rest = bytes(data[:pos]), bytes(data[pos:])
    fpos = 0
    while fpos + 4 <= len(rest):
        n, = struct.unpack(">I", rest[fpos:fpos + 4])
        if fpos + 4 + n > len(rest):
            break
        fpos += 4 + n
    return hs, rest[:fpos]


def c_array(name, data):
    lines = ["static const unsigned char %s[%d] = {" % (name, len(data))]
    for i in range(0, len(data), 12):
        lines.append("    " + ", ".join("0x%02x" % b for b in data[i:i + 12]) + ",")
    lines.append("};")
    return "\n".join(lines)


def main():
    proxy = Proxy()
    epmd = FakeEpmd(proxy.port)
    nodes = []
    try:
        b = start_node(NAME_B, epmd.port, [])
        nodes.append(b)
        proxy.target = epmd.wait_for(NAME_B, 30)
        ping = ("pong = net_adm:ping('%s@%s'), timer:sleep(1500), halt()."
                % (NAME_B, HOST))
        a = start_node(NAME_A, epmd.port, ["-eval", ping])
        nodes.append(a)
        rc = a.wait(60)
        if rc != 0:
            raise RuntimeError("initiator exited with %d (ping failed?)" % rc)
    finally:
        for p in nodes:
            stop_node(p)
        time.sleep(0.2)
        proxy.close()
        epmd.close()

    a2b, b2a = proxy.data["a2b"], proxy.data["b2a"]
    hs_a2b, fr_a2b = split_handshake(a2b, ord("r"))
    hs_b2a, fr_b2a = split_handshake(b2a, ord("a"))
    files = {
        "hs_initiator_to_acceptor.bin": hs_a2b,
        "hs_acceptor_to_initiator.bin": hs_b2a,
        "frames_initiator_to_acceptor.bin": fr_a2b,
        "frames_acceptor_to_initiator.bin": fr_b2a,
    }
    for fn, data in files.items():
        with open(os.path.join(OUT, fn), "wb") as f:
            f.write(data)
    with open(os.path.join(OUT, "hs_golden.h"), "w") as f:
        f.write("/* hs_golden.h - generated by capture_handshake.py; do not edit.\n"
                " * A real OTP %s handshake: initiator %s@%s, acceptor %s@%s,\n"
                " * cookie \"%s\".  See README.txt. */\n"
                % (otp_release(), NAME_A, HOST, NAME_B, HOST, COOKIE))
        f.write("#define GOLDEN_COOKIE \"%s\"\n" % COOKIE)
        f.write("#define GOLDEN_INITIATOR \"%s@%s\"\n" % (NAME_A, HOST))
        f.write("#define GOLDEN_ACCEPTOR \"%s@%s\"\n" % (NAME_B, HOST))
        f.write(c_array("golden_i2a", hs_a2b) + "\n")
        f.write(c_array("golden_a2i", hs_b2a) + "\n")
    with open(os.path.join(OUT, "README.txt"), "w") as f:
        f.write(readme(hs_a2b, hs_b2a, fr_a2b, fr_b2a))
    print("captured: a->b %d handshake bytes + %d frame bytes, b->a %d + %d"
          % (len(hs_a2b), len(fr_a2b), len(hs_b2a), len(fr_b2a)))


def packets(data):
    pos, out = 0, []
    while pos < len(data):
        n, = struct.unpack(">H", data[pos:pos + 2])
        out.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out


def describe(p):
    tag = chr(p[0])
    if tag == "N" and len(p) >= 15 and struct.unpack(">H", p[13:15])[0] == len(p) - 15:
        fl, cr, nl = struct.unpack(">QIH", p[1:15])
        return "'N' send_name  flags=0x%016x creation=0x%08x name=%s" % (fl, cr, p[15:].decode())
    if tag == "N":
        fl, ch, cr, nl = struct.unpack(">QIIH", p[1:19])
        return ("'N' challenge  flags=0x%016x challenge=%u (0x%08x) creation=0x%08x name=%s"
                % (fl, ch, ch, cr, p[19:].decode()))
    if tag == "s":
        return "'s' status \"%s\"" % p[1:].decode()
    if tag == "r":
        ch, = struct.unpack(">I", p[1:5])
        return "'r' reply  challenge=%u (0x%08x) digest=%s" % (ch, ch, p[5:].hex())
    if tag == "a":
        return "'a' ack  digest=%s" % p[1:].hex()
    return "tag %r, %d bytes" % (tag, len(p))


def readme(hs_a2b, hs_b2a, fr_a2b, fr_b2a):
    lines = [
        "Golden handshake vectors (generated by capture_handshake.py; rerun it to refresh).",
        "",
        "A real OTP %s handshake over loopback, recorded by a TCP proxy between" % otp_release(),
        "two erl nodes (both normal, visible nodes; cookie \"%s\")." % COOKIE,
        "  initiator: %s@%s  (calls net_adm:ping/1 on the acceptor)" % (NAME_A, HOST),
        "  acceptor:  %s@%s" % (NAME_B, HOST),
        "Creations come from the script's fake epmd: %s 0x%08x, %s 0x%08x."
        % (NAME_A, CREATION[NAME_A], NAME_B, CREATION[NAME_B]),
        "Challenges are random, so every capture differs; hs_golden.h holds the",
        "same bytes as C arrays for tests/test_hs.c.",
        "",
        "hs_initiator_to_acceptor.bin (each packet: Len:16 then body):",
    ]
    lines += ["  " + describe(p) for p in packets(hs_a2b)]
    lines += ["", "hs_acceptor_to_initiator.bin:"]
    lines += ["  " + describe(p) for p in packets(hs_b2a)]
    lines += [
        "",
        "frames_initiator_to_acceptor.bin (%d bytes), frames_acceptor_to_initiator.bin" % len(fr_a2b),
        "(%d bytes): the whole frames (Len:32 then body) that followed the handshake." % len(fr_b2a),
        "Both peers are BEAMs, so they negotiated DIST_HDR_ATOM_CACHE and FRAGMENTS:",
        "bodies start 131 68 (atom-cache header), not 112 'p' as kv_cnode's will.",
        "",
    ]
    return "\n".join(lines)


def otp_release():
    return subprocess.run(["erl", "-noshell", "-eval",
                           "io:format(\"~s\",[erlang:system_info(otp_release)]),halt()."],
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
