// JPeer.java - a Java node on jinterface (OtpNode/OtpMbox), used by
// erl_test/kv_cnode_peers_SUITE to prove kv_cnode interoperates with Java
// nodes.  Compiled at test time into the CT priv_dir; never committed as
// .class.
//
//   java -cp OtpErlang.jar:DIR JPeer KVNODE COOKIE NAME ALIVE@HOST
//
// ping, then registry calls ('$gen_call' tuples sent with OtpMbox.send to
// the registered name, replies taken with OtpMbox.receive), a bucket
// put/get, then {register, NAME_java, MboxPid}; it exits WITHOUT
// unregistering, so the suite can check the name goes with the connection.
// One line per step: "OK <step> <result>" or "FAIL <step> <why>" (exit 1).
// A pid prints as "PID <node> <id> <serial> <creation>".

import com.ericsson.otp.erlang.*;

public class JPeer {
    static final String REGISTRY = "Elixir.KV.Registry";
    static final long TIMEOUT_MS = 5000;

    static OtpNode self;
    static OtpMbox mbox;
    static String kv;

    static void out(String s) {
        System.out.println(s);
        System.out.flush();
    }

    static void fail(String step, String why) {
        out("FAIL " + step + " " + why);
        System.exit(1);
    }

    static String pid(OtpErlangPid p) {
        return "PID " + p.node() + " " + p.id() + " " + p.serial() + " " + p.creation();
    }

    static OtpErlangBinary bin(String s) {
        return new OtpErlangBinary(s.getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }

    static OtpErlangTuple tuple(OtpErlangObject... es) {
        return new OtpErlangTuple(es);
    }

    static OtpErlangAtom atom(String s) {
        return new OtpErlangAtom(s);
    }

    // gen_server call: {'$gen_call', {Self, Ref}, Req} to the registry (to == null)
    // or to a pid; wait for {Ref, Reply}.
    static OtpErlangObject call(String step, OtpErlangPid to, OtpErlangObject req) throws Exception {
        OtpErlangRef ref = self.createRef();
        OtpErlangTuple msg = tuple(atom("$gen_call"), tuple(mbox.self(), ref), req);
        if (to == null)
            mbox.send(REGISTRY, kv, msg);
        else
            mbox.send(to, msg);
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        for (;;) {
            long left = deadline - System.currentTimeMillis();
            if (left <= 0)
                fail(step, "no reply within " + TIMEOUT_MS + " ms");
            OtpErlangObject m = mbox.receive(left);
            if (m == null)
                fail(step, "no reply within " + TIMEOUT_MS + " ms");
            if (m instanceof OtpErlangTuple) {
                OtpErlangTuple t = (OtpErlangTuple) m;
                if (t.arity() == 2 && ref.equals(t.elementAt(0)))
                    return t.elementAt(1);
            }
            out("MSG " + m);
        }
    }

    // {ok, Pid} -> Pid; error -> null
    static OtpErlangPid okPid(String step, OtpErlangObject r) {
        if (r.equals(atom("error")))
            return null;
        if (r instanceof OtpErlangTuple) {
            OtpErlangTuple t = (OtpErlangTuple) r;
            if (t.arity() == 2 && t.elementAt(0).equals(atom("ok"))
                && t.elementAt(1) instanceof OtpErlangPid)
                return (OtpErlangPid) t.elementAt(1);
        }
        fail(step, "unexpected reply " + r);
        return null;
    }

    static void expect(String step, OtpErlangObject got, OtpErlangObject want) {
        if (!got.equals(want))
            fail(step, "got " + got + " want " + want);
        out("OK " + step + " " + got);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: JPeer KVNODE COOKIE NAME ALIVE@HOST");
            System.exit(2);
        }
        kv = args[0];
        String name = args[2];
        self = new OtpNode(args[3], args[1]);
        mbox = self.createMbox();
        out("OK self " + pid(mbox.self()));

        if (!self.ping(kv, TIMEOUT_MS))
            fail("ping", "pang");
        out("OK ping pong");

        if (okPid("lookup", call("lookup", null, tuple(atom("lookup"), bin(name)))) != null)
            fail("lookup", "name " + name + " already exists");
        out("OK lookup error");

        OtpErlangPid bucket = okPid("create", call("create", null, tuple(atom("create"), bin(name))));
        if (bucket == null)
            fail("create", "reply error");
        out("OK create " + pid(bucket));

        OtpErlangPid again = okPid("lookup2", call("lookup2", null, tuple(atom("lookup"), bin(name))));
        if (again == null || !again.equals(bucket))
            fail("lookup2", "lookup does not give the created bucket");
        out("OK lookup2 same");

        OtpErlangObject val = tuple(atom("from_java"), new OtpErlangLong(7), bin("jv"));
        expect("put", call("put", bucket, tuple(atom("put"), bin("k"), val)), atom("ok"));
        expect("get", call("get", bucket, tuple(atom("get"), bin("k"))), val);
        expect("get_missing", call("get_missing", bucket, tuple(atom("get"), bin("missing"))),
               atom("nil"));
        expect("unknown", call("unknown", null, atom("no_such_call")),
               tuple(atom("error"), atom("unknown_call")));

        String rname = name + "_java";
        expect("register", call("register", null, tuple(atom("register"), bin(rname), mbox.self())),
               atom("ok"));
        OtpErlangPid mine = okPid("lookup_registered",
                                  call("lookup_registered", null, tuple(atom("lookup"), bin(rname))));
        if (mine == null || !mine.equals(mbox.self()))
            fail("lookup_registered", "name does not map to our pid");
        out("OK lookup_registered self");

        // leave with the name still registered: the connection's end removes it
        out("OK done");
        self.close();
        System.exit(0);
    }
}
