%% Distribution over TLS (issue 4): the C node against BEAM nodes running
%% OTP's inet_tls_dist.  A CA, a second CA and the certificates are made at
%% run time with the openssl CLI in priv_dir: nothing secret is committed.
%%
%% The CT node itself runs plain TCP distribution, so it cannot talk to a TLS
%% node: BEAM TLS peers are started with `peer` over standard_io and driven
%% with peer:call.  Work that must run on a peer is a function exported
%% below (the peers get this module's directory with -pa).  The same module
%% is also a small epmd module for peers (-epmd_module): it answers
%% port_please for one node name with a recording proxy's port, which is how
%% the bytes on the wire are captured.
-module(kv_cnode_tls_SUITE).
-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([beam_tls_node_calls/1, connect_out_at_start/1, connect_out_on_register/1,
         other_ca_refused/1, plain_tcp_refused/1, no_cert_refused/1,
         verify_none_accepts_no_cert/1, big_value_and_many_calls/1,
         tls13/1, tls12/1, not_plaintext_on_wire/1, handshake_timeout/1,
         startup_errors/1, host_name_checked/1]).
%% The PKI, shared with kv_cnode_inet6_SUITE.
-export([make_pki/1, optfile/3]).
%% Run on peers.
-export([registry_and_bucket/1, big_value/2, many_calls/3, put_get/3, sleeper/0]).
%% epmd module callbacks, for peers started with -epmd_module ?MODULE.
-export([start_link/0, register_node/2, register_node/3, listen_port_please/2,
         port_please/2, port_please/3, names/0, names/1, address_please/3]).

-define(LIB, kv_cnode_test_lib).
-define(CALL_TIMEOUT, 120000).

suite() -> [{timetrap, {minutes, 10}}].

all() ->
    [startup_errors, beam_tls_node_calls, connect_out_at_start, connect_out_on_register,
     other_ca_refused, host_name_checked, plain_tcp_refused, no_cert_refused,
     verify_none_accepts_no_cert,
     big_value_and_many_calls, tls13, tls12, not_plaintext_on_wire, handshake_timeout].

%% --- setup ---------------------------------------------------------------

init_per_suite(Config) ->
    case os:find_executable("openssl") of
        false ->
            {skip, "the openssl CLI is needed to make certificates"};
        _ ->
            Dir = filename:join(?config(priv_dir, Config), "pki"),
            ok = filelib:ensure_path(Dir),
            make_pki(Dir),
            Main = cnode_args(Dir, []),
            {ok, H} = ?LIB:start(Main),
            [{pki, Dir}, {kv, H} | Config]
    end.

end_per_suite(Config) ->
    0 = ?LIB:stop(?config(kv, Config)),
    ok.

init_per_testcase(_TC, Config) ->
    Config.

%% Peers and extra C nodes a test case started but did not stop (it failed).
end_per_testcase(_TC, _Config) ->
    [catch peer:stop(P) || P <- take(peers)],
    [catch ?LIB:stop(H) || H <- take(cnodes)],
    ok.

%% --- the CA and certificates -----------------------------------------------

%% ca (signs every node), ca2 (another CA), and for each node a key and a
%% certificate for the host this suite runs on, usable as client and server.
make_pki(Dir) ->
    Host = ?LIB:host(),
    Ext = filename:join(Dir, "node.ext"),
    ok = file:write_file(Ext, [
        "basicConstraints=critical,CA:FALSE\n",
        "keyUsage=critical,digitalSignature,keyEncipherment\n",
        "extendedKeyUsage=serverAuth,clientAuth\n",
        "subjectAltName=DNS:", Host, ",DNS:localhost,IP:127.0.0.1,IP:::1,DNS:::1\n"]), % OTP 25 checks an IPv6-literal host as a DNS name
    make_ca(Dir, "ca"),
    make_ca(Dir, "ca2"),
    make_cert(Dir, "cnode", "ca", "2"),
    make_cert(Dir, "beam", "ca", "2"),
    make_cert(Dir, "other", "ca2", "2"),   % signed by the other CA
    make_cert(Dir, "expired", "ca", "-1"), % notAfter a day before notBefore: expired
    WrongExt = filename:join(Dir, "wronghost.ext"),
    ok = file:write_file(WrongExt, [
        "basicConstraints=critical,CA:FALSE\n",
        "extendedKeyUsage=serverAuth,clientAuth\n",
        "subjectAltName=DNS:elsewhere.invalid\n"]),
    make_cert(Dir, "wronghost", "ca", "2", "wronghost.ext"), % right CA, another host
    ok.

make_ca(Dir, Name) ->
    openssl(Dir, ["req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
                  " -keyout ", Name, ".key -out ", Name, ".pem -days 2 -subj /CN=kv_test_", Name]).

make_cert(Dir, Name, Ca, Days) -> make_cert(Dir, Name, Ca, Days, "node.ext").
make_cert(Dir, Name, Ca, Days, Ext) ->
    openssl(Dir, ["req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
                  " -keyout ", Name, ".key -out ", Name, ".csr -subj /CN=kv_test_", Name]),
    openssl(Dir, ["x509 -req -in ", Name, ".csr -CA ", Ca, ".pem -CAkey ", Ca, ".key",
                  " -CAcreateserial -out ", Name, ".pem -days ", Days, " -extfile ", Ext]).

openssl(Dir, Args) ->
    Cmd = lists:flatten(["cd '", Dir, "' && openssl ", Args, " 2>&1; echo \"rc=$?\""]),
    Out = os:cmd(Cmd),
    case string:find(Out, "rc=0") of
        nomatch -> ct:fail({openssl_failed, Cmd, Out});
        _ -> ok
    end.

f(Dir, Name) -> filename:join(Dir, Name).

%% C node arguments: the node's cert, key and the CA, then Extra.
cnode_args(Dir, Extra) ->
    ["--tls-cert", f(Dir, "cnode.pem"), "--tls-key", f(Dir, "cnode.key"),
     "--tls-cacert", f(Dir, "ca.pem") | Extra].

%% An -ssl_dist_optfile for a BEAM peer.  Cert is a basename ("beam",
%% "other") or none (no client certificate); Versions [] leaves OTP's default
%% (tlsv1.2 only, for distribution).
optfile(Dir, Cert, Versions) ->
    Ca = [{cacertfile, f(Dir, "ca.pem")}],
    Own = fun(none) -> [];
             (C) -> [{certfile, f(Dir, C ++ ".pem")}, {keyfile, f(Dir, C ++ ".key")}]
          end,
    Vs = case Versions of [] -> []; _ -> [{versions, Versions}] end,
    Server = Own(case Cert of none -> "beam"; _ -> Cert end) ++ Ca ++
             [{verify, verify_peer}, {fail_if_no_peer_cert, true} | Vs],
    Client = Own(Cert) ++ Ca ++ [{verify, verify_peer} | Vs],
    Tag = case Cert of none -> "nocert"; _ -> Cert end,
    File = f(Dir, ?LIB:unique("dist_" ++ Tag) ++ ".conf"),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Server}, {client, Client}]])),
    File.

%% --- peers and C nodes, stopped by the test or by end_per_testcase --------

remember(Key, V) -> put(Key, [V | case get(Key) of undefined -> []; L -> L end]).
take(Key) -> case erase(Key) of undefined -> []; L -> L end.

%% A BEAM node with -proto_dist inet_tls (or plain with OptFile = plain).
start_peer(Prefix, OptFile) -> start_peer(Prefix, OptFile, []).
start_peer(Prefix, OptFile, Extra) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    Tls = case OptFile of
              plain -> [];
              _ -> ["-proto_dist", "inet_tls", "-ssl_dist_optfile", OptFile]
          end,
    {ok, Pid, Node} =
        peer:start(#{name => ?LIB:unique(Prefix), connection => standard_io,
                     args => ["-setcookie", Cookie, "-pa", filename:dirname(code:which(?MODULE))]
                             ++ Tls ++ Extra}),
    remember(peers, Pid),
    {Pid, Node}.

stop_peer({Pid, _}) -> catch peer:stop(Pid), ok.

pcall({Pid, _}, M, F, A) -> peer:call(Pid, M, F, A, ?CALL_TIMEOUT).

start_cnode(Args) ->
    {ok, H} = ?LIB:start(Args),
    remember(cnodes, H),
    H.

stop_cnode(H) -> 0 = ?LIB:stop(H), ok.

%% The node's log lines after the first Skip.
lines_after(H, Skip) ->
    L = ?LIB:lines(H),
    lists:nthtail(min(Skip, length(L)), L).

lines_with(H, Skip, Pats) ->
    [L || L <- lines_after(H, Skip),
          lists:all(fun(P) -> binary:match(L, P) =/= nomatch end, Pats)].

%% A mark in the log: wait_lines(H, Mark, Pats) looks only at later lines
%% (the suite's main node is shared by the test cases).
mark(H) -> length(?LIB:lines(H)).

%% Wait until a log line holds every pattern; return it.
wait_lines(H, Pats) -> wait_lines(H, 0, Pats).
wait_lines(H, Skip, Pats) ->
    case ?LIB:wait_until(fun() -> lines_with(H, Skip, Pats) =/= [] end, 10000) of
        true -> hd(lines_with(H, Skip, Pats));
        false -> ct:fail({no_log_line, Pats, lines_after(H, Skip)})
    end.

%% The TLS version the C node logged for the connection from Node.
tls_version_from(H, Node) ->
    Up = wait_lines(H, [<<"node ">>, atom_to_binary(Node), <<" up (">>, <<"incoming">>]),
    {match, [Addr]} = re:run(Up, <<" up \\(([^,]+),">>, [{capture, all_but_first, binary}]),
    Tls = wait_lines(H, [<<"TLS from ", Addr/binary, ":">>]),
    {match, [V]} = re:run(Tls, <<": (TLSv1\\.[0-9])">>, [{capture, all_but_first, binary}]),
    ct:log("~s~n~s", [Tls, Up]),
    V.

hidden_nodes(Peer) -> pcall(Peer, erlang, nodes, [hidden]).

wait_connected(Peer, Node) ->
    true = ?LIB:wait_until(fun() -> lists:member(Node, hidden_nodes(Peer)) end, 10000).

%% --- on peers --------------------------------------------------------------

%% The smoke test of part 1, made from a TLS node.
registry_and_bucket(CNode) ->
    R = ?LIB:registry(CNode),
    Name = list_to_binary(?LIB:unique("tls_bucket")),
    error = gen_server:call(R, {lookup, Name}),
    {ok, B} = gen_server:call(R, {create, Name}),
    {ok, B} = gen_server:call(R, {lookup, Name}),
    ok = gen_server:call(B, {put, <<"milk">>, 3}),
    3 = gen_server:call(B, {get, <<"milk">>}),
    N = gen_server:call(R, count),
    true = is_integer(N) andalso N >= 1,
    ok.

%% Put a 10 MB value and read it back; also a call after it.
big_value(CNode, Size) ->
    R = ?LIB:registry(CNode),
    {ok, B} = gen_server:call(R, {create, list_to_binary(?LIB:unique("big"))}),
    V = crypto:strong_rand_bytes(Size),
    ok = gen_server:call(B, {put, big, V}, 60000),
    V2 = gen_server:call(B, {get, big}, 60000),
    ok = gen_server:call(B, {put, small, 1}),
    {byte_size(V2), V2 =:= V, gen_server:call(B, {get, small})}.

%% Workers calls each, half puts and half gets of what was put; the number
%% of answers that were right.
many_calls(CNode, Workers, Calls) ->
    R = ?LIB:registry(CNode),
    {ok, B} = gen_server:call(R, {create, list_to_binary(?LIB:unique("many"))}),
    Self = self(),
    Ps = [spawn_link(fun() -> Self ! {self(), worker(B, W, Calls div 2, 0)} end)
          || W <- lists:seq(1, Workers)],
    lists:sum([receive {P, Ok} -> Ok after 300000 -> 0 end || P <- Ps]).

worker(_B, _W, 0, Ok) -> Ok;
worker(B, W, I, Ok) ->
    K = {W, I},
    V = {value, W, I, <<I:64>>},
    Ok1 = case gen_server:call(B, {put, K, V}) of ok -> Ok + 1; _ -> Ok end,
    Ok2 = case gen_server:call(B, {get, K}) of V -> Ok1 + 1; _ -> Ok1 end,
    worker(B, W, I - 1, Ok2).

put_get(CNode, Key, Value) ->
    R = ?LIB:registry(CNode),
    {ok, B} = gen_server:call(R, {create, list_to_binary(?LIB:unique("wire"))}),
    ok = gen_server:call(B, {put, Key, Value}),
    gen_server:call(B, {get, Key}).

sleeper() -> spawn(fun() -> receive stop -> ok end end).

%% --- epmd module for peers --------------------------------------------------
%% Everything goes to erl_epmd, except port_please for the node named by
%% `-kv_tls_proxy Alive Port`: that answers Port (a recording proxy).

start_link() -> erl_epmd:start_link().
register_node(Name, Port) -> erl_epmd:register_node(Name, Port).
register_node(Name, Port, Family) -> erl_epmd:register_node(Name, Port, Family).
listen_port_please(Name, Host) -> erl_epmd:listen_port_please(Name, Host).
names() -> erl_epmd:names().
names(Host) -> erl_epmd:names(Host).
address_please(Name, Host, Family) -> erl_epmd:address_please(Name, Host, Family).
port_please(Name, Ip) -> port_please(Name, Ip, infinity).
port_please(Name, Ip, Timeout) ->
    Alive = if is_atom(Name) -> atom_to_list(Name); true -> Name end,
    case init:get_argument(kv_tls_proxy) of
        {ok, [[Alive, Port]]} -> {port, list_to_integer(Port), 6};
        _ -> erl_epmd:port_please(Name, Ip, Timeout)
    end.

%% --- tests -------------------------------------------------------------------

%% A start-up error is one line on stderr and exit status 2.
startup_errors(Config) ->
    D = ?config(pki, Config),
    Cases =
        [{"mismatched cert and key",
          ["--tls-cert", f(D, "cnode.pem"), "--tls-key", f(D, "beam.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"does not match">>},
         {"missing certificate file",
          ["--tls-cert", f(D, "nope.pem"), "--tls-key", f(D, "cnode.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"No such file">>},
         {"missing key file",
          ["--tls-cert", f(D, "cnode.pem"), "--tls-key", f(D, "nope.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"No such file">>},
         {"missing CA file",
          ["--tls-cert", f(D, "cnode.pem"), "--tls-key", f(D, "cnode.key"),
           "--tls-cacert", f(D, "nope.pem")], <<"No such file">>},
         {"key given as certificate",
          ["--tls-cert", f(D, "cnode.key"), "--tls-key", f(D, "cnode.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"no PEM certificate">>},
         {"CA file without certificates",
          ["--tls-cert", f(D, "cnode.pem"), "--tls-key", f(D, "cnode.key"),
           "--tls-cacert", f(D, "node.ext")], <<"cannot load TLS CA file">>},
         {"expired certificate",
          ["--tls-cert", f(D, "expired.pem"), "--tls-key", f(D, "expired.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"expired">>},
         {"own certificate from an unknown CA",
          ["--tls-cert", f(D, "other.pem"), "--tls-key", f(D, "other.key"),
           "--tls-cacert", f(D, "ca.pem")], <<"not signed by a CA">>}],
    lists:foreach(
      fun({What, Args, Pat}) ->
              case ?LIB:start(Args) of
                  {error, {exit_status, 2, [Line]}} ->
                      ct:log("~s: ~s", [What, Line]),
                      nomatch =/= binary:match(Line, Pat) orelse
                          ct:fail({What, wrong_message, Line});
                  Other ->
                      ct:fail({What, Other})
              end
      end, Cases).

%% A BEAM TLS node with a CA-signed cert pings the C node and uses it.
beam_tls_node_calls(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    P = start_peer("tls_beam", optfile(D, "beam", [])),
    pong = pcall(P, net_adm, ping, [CNode]),
    ok = pcall(P, ?MODULE, registry_and_bucket, [CNode]),
    <<"TLSv1.2">> = tls_version_from(H, element(2, P)), % OTP's default for distribution
    wait_lines(H, [<<"TLS from ">>, <<"CN=kv_test_beam">>, <<"(verified)">>]),
    stop_peer(P).

%% --connect NODE: the C node connects out, over TLS, at start.
connect_out_at_start(Config) ->
    D = ?config(pki, Config),
    {_, BNode} = B = start_peer("tls_target", optfile(D, "beam", [])),
    #{node := CNode} = H = start_cnode(cnode_args(D, ["--connect", atom_to_list(BNode)])),
    wait_connected(B, CNode),
    wait_lines(H, [<<"TLS to ">>, atom_to_binary(BNode), <<"(verified)">>]),
    %% the connection carries calls both ways: B calls the C node over it
    ok = pcall(B, ?MODULE, registry_and_bucket, [CNode]),
    stop_cnode(H),
    stop_peer(B).

%% {register, Name, Pid} with Pid on a node the C node is not connected to:
%% it connects out on demand (over TLS) to monitor Pid.
connect_out_on_register(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    A = start_peer("tls_caller", optfile(D, "beam", [])),
    {_, BNode} = B = start_peer("tls_owner", optfile(D, "beam", [])),
    false = lists:member(CNode, hidden_nodes(B)),
    PidB = pcall(B, ?MODULE, sleeper, []),
    Name = list_to_binary(?LIB:unique("remote")),
    R = ?LIB:registry(CNode),
    ok = pcall(A, gen_server, call, [R, {register, Name, PidB}]),
    wait_connected(B, CNode),
    wait_lines(H, [<<"TLS to ">>, atom_to_binary(BNode)]),
    {ok, PidB} = pcall(A, gen_server, call, [R, {lookup, Name}]),
    %% the monitor works over it: the name goes when the process ends
    pcall(B, erlang, exit, [PidB, kill]),
    true = ?LIB:wait_until(
             fun() -> error =:= pcall(A, gen_server, call, [R, {lookup, Name}]) end, 10000),
    stop_peer(A),
    stop_peer(B).

%% A certificate from another CA is refused, both ways.
other_ca_refused(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    {_, ENode} = E = start_peer("tls_other_ca", optfile(D, "other", [])),
    M = mark(H),
    pang = pcall(E, net_adm, ping, [CNode]),
    L1 = wait_lines(H, M, [<<"TLS connection from ">>, <<"refused">>,
                           <<"peer certificate rejected">>]),
    ct:log("incoming: ~s", [L1]),
    %% and when the C node connects to it
    H2 = start_cnode(cnode_args(D, ["--connect", atom_to_list(ENode)])),
    L2 = wait_lines(H2, [<<"TLS connection to ">>, atom_to_binary(ENode), <<"failed">>,
                         <<"peer certificate rejected">>]),
    ct:log("outgoing: ~s", [L2]),
    false = lists:member(maps:get(node, H2), hidden_nodes(E)),
    stop_cnode(H2),
    stop_peer(E),
    %% our certificate refused by a BEAM server.  Under TLS 1.3 the server
    %% checks it after the client's side of the handshake is done: still
    %% logged as a failed connection, with the peer's alert.
    {_, TNode} = T = start_peer("tls13_server", optfile(D, "beam", ['tlsv1.3'])),
    H3 = start_cnode(["--tls-cert", f(D, "other.pem"), "--tls-key", f(D, "other.key"),
                      "--tls-verify", "none", "--connect", atom_to_list(TNode)]),
    L3 = wait_lines(H3, [<<"TLS connection to ">>, atom_to_binary(TNode), <<"failed">>,
                         <<"alert">>]),
    ct:log("refused by the peer: ~s", [L3]),
    false = lists:member(maps:get(node, H3), hidden_nodes(T)),
    stop_cnode(H3),
    stop_peer(T).

%% As OTP's client does (server_name_indication = the host part of the node
%% name, checked under verify_peer), a server's certificate must name the
%% host of the node name: checked by the C node as a client, and by a BEAM
%% client of the C node.
host_name_checked(Config) ->
    D = ?config(pki, Config),
    W = start_peer("tls_wrong_host", optfile_server_cert(D, "wronghost")),
    H = start_cnode(cnode_args(D, ["--connect", atom_to_list(element(2, W))])),
    L = wait_lines(H, [<<"TLS connection to ">>, <<"failed">>, <<"hostname mismatch">>]),
    ct:log("C node as client: ~s", [L]),
    stop_cnode(H),
    stop_peer(W),
    %% the other way: the C node presents a certificate for another host
    #{node := CNode} = H2 = start_cnode(["--tls-cert", f(D, "wronghost.pem"),
                                         "--tls-key", f(D, "wronghost.key"),
                                         "--tls-cacert", f(D, "ca.pem")]),
    P = start_peer("tls_checks_host", optfile(D, "beam", [])),
    pang = pcall(P, net_adm, ping, [CNode]),
    L2 = wait_lines(H2, [<<"TLS connection from ">>, <<"refused">>]),
    ct:log("BEAM as client: ~s", [L2]),
    stop_peer(P),
    stop_cnode(H2).

%% Like optfile/3 with the beam cert as client, Cert as the server's.
optfile_server_cert(Dir, Cert) ->
    Ca = [{cacertfile, f(Dir, "ca.pem")}],
    Server = [{certfile, f(Dir, Cert ++ ".pem")}, {keyfile, f(Dir, Cert ++ ".key")}] ++ Ca ++
             [{verify, verify_peer}, {fail_if_no_peer_cert, true}],
    Client = [{certfile, f(Dir, "beam.pem")}, {keyfile, f(Dir, "beam.key")}] ++ Ca ++
             [{verify, verify_peer}],
    File = f(Dir, ?LIB:unique("dist_" ++ Cert) ++ ".conf"),
    ok = file:write_file(File, io_lib:format("~p.~n", [[{server, Server}, {client, Client}]])),
    File.

%% A plain-TCP node (this CT node) is refused, and so are raw plain bytes.
plain_tcp_refused(Config) ->
    #{node := CNode} = H = ?config(kv, Config),
    M = mark(H),
    pang = net_adm:ping(CNode),
    L = wait_lines(H, M, [<<"TLS connection from ">>, <<"refused">>, <<"not TLS">>]),
    ct:log("~s", [L]),
    M2 = mark(H),
    %% a distribution handshake's first packet, 2-byte header, as over TCP
    Port = ?LIB:port(H),
    {ok, S} = gen_tcp:connect("localhost", Port, [binary, {active, false}]),
    Name = <<"plain@localhost">>,
    Pkt = <<$N, 16#3499f3d:64, 1:32, (byte_size(Name)):16, Name/binary>>,
    ok = gen_tcp:send(S, <<(byte_size(Pkt)):16, Pkt/binary>>),
    case gen_tcp:recv(S, 0, 5000) of
        {error, closed} -> ok;
        {error, econnreset} -> ok;
        {ok, Bin} ->
            %% a TLS alert at most, then closed; never a handshake status
            <<21, 3, _/binary>> = Bin,
            {error, _} = gen_tcp:recv(S, 0, 5000)
    end,
    wait_lines(H, M2, [<<"TLS connection from ">>, <<"refused">>, <<"not TLS">>]),
    gen_tcp:close(S).

%% Under --tls-verify peer (the default) a client without a certificate is
%% refused.
no_cert_refused(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    N = start_peer("tls_no_cert", optfile(D, none, [])),
    M = mark(H),
    pang = pcall(N, net_adm, ping, [CNode]),
    L = wait_lines(H, M, [<<"TLS connection from ">>, <<"refused">>,
                       <<"did not return a certificate">>]),
    ct:log("~s", [L]),
    stop_peer(N).

%% --tls-verify none: the same peer is let in (the cookie still applies).
verify_none_accepts_no_cert(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = start_cnode(["--tls-cert", f(D, "cnode.pem"),
                                        "--tls-key", f(D, "cnode.key"),
                                        "--tls-verify", "none"]),
    N = start_peer("tls_no_cert", optfile(D, none, [])),
    pong = pcall(N, net_adm, ping, [CNode]),
    ok = pcall(N, ?MODULE, registry_and_bucket, [CNode]),
    wait_lines(H, [<<"TLS from ">>, <<"no certificate">>, <<"(not verified)">>]),
    stop_peer(N),
    stop_cnode(H).

%% A 10 MB value, and 10,000 calls from 4 processes, all answered right.
big_value_and_many_calls(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = ?config(kv, Config),
    P = start_peer("tls_load", optfile(D, "beam", [])),
    pong = pcall(P, net_adm, ping, [CNode]),
    Size = 10 * 1024 * 1024,
    {Size, true, 1} = pcall(P, ?MODULE, big_value, [CNode, Size]),
    10000 = pcall(P, ?MODULE, many_calls, [CNode, 4, 2500]),
    stop_peer(P).

%% --tls-min-version 1.3 with a BEAM node limited to TLS 1.3: works, TLS 1.3
%% on the wire; a node limited to 1.2 is refused.
tls13(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = start_cnode(cnode_args(D, ["--tls-min-version", "1.3"])),
    P = start_peer("tls13", optfile(D, "beam", ['tlsv1.3'])),
    pong = pcall(P, net_adm, ping, [CNode]),
    ok = pcall(P, ?MODULE, registry_and_bucket, [CNode]),
    <<"TLSv1.3">> = tls_version_from(H, element(2, P)),
    Old = start_peer("tls12_only", optfile(D, "beam", ['tlsv1.2'])),
    pang = pcall(Old, net_adm, ping, [CNode]),
    wait_lines(H, [<<"TLS connection from ">>, <<"refused">>, <<"unsupported protocol">>]),
    stop_peer(Old),
    stop_peer(P),
    stop_cnode(H).

%% The default (--tls-min-version 1.2) speaks TLS 1.2 with OTP's default
%% distribution versions, and TLS 1.3 with a node that asks for it.
tls12(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    P = start_peer("tls12", optfile(D, "beam", ['tlsv1.2'])),
    pong = pcall(P, net_adm, ping, [CNode]),
    ok = pcall(P, ?MODULE, registry_and_bucket, [CNode]),
    <<"TLSv1.2">> = tls_version_from(H, element(2, P)),
    P13 = start_peer("tls13_on_12", optfile(D, "beam", ['tlsv1.3'])),
    pong = pcall(P13, net_adm, ping, [CNode]),
    ok = pcall(P13, ?MODULE, registry_and_bucket, [CNode]),
    <<"TLSv1.3">> = tls_version_from(H, element(2, P13)),
    stop_peer(P13),
    stop_peer(P).

%% A value put over TLS never shows in the raw bytes between the nodes.  The
%% same capture of a plain-TCP node shows it, so the check can fail.
not_plaintext_on_wire(Config) ->
    D = ?config(pki, Config),
    #{node := CNode} = H = ?config(kv, Config),
    Marker = iolist_to_binary(["KV-CLEARTEXT-", ?LIB:unique("marker")]),
    {TlsUp, TlsDown} = capture(H, optfile(D, "beam", []), Marker),
    ct:log("TLS capture: ~p bytes up, ~p down", [byte_size(TlsUp), byte_size(TlsDown)]),
    <<22, 3, _/binary>> = TlsUp,   % a TLS handshake record first
    <<22, 3, _/binary>> = TlsDown,
    true = byte_size(TlsUp) > 500 andalso byte_size(TlsDown) > 500,
    nomatch = binary:match(TlsUp, Marker),
    nomatch = binary:match(TlsDown, Marker),
    nomatch = binary:match(TlsUp, atom_to_binary(CNode)), % node names are inside TLS
    %% control: plain TCP distribution through the same proxy
    Plain = start_cnode([]),
    {PlainUp, PlainDown} = capture(Plain, plain, Marker),
    {_, _} = binary:match(PlainUp, Marker),
    {_, _} = binary:match(PlainDown, Marker),
    stop_cnode(Plain).

%% Put Marker from a peer that reaches the C node through a recording proxy;
%% the bytes each way.
capture(#{node := CNode} = H, OptFile, Marker) ->
    {Proxy, ProxyPort} = start_proxy(?LIB:port(H)),
    [Alive, _] = string:split(atom_to_list(CNode), "@"),
    P = start_peer("wire", OptFile, ["-epmd_module", atom_to_list(?MODULE),
                                     "-kv_tls_proxy", Alive, integer_to_list(ProxyPort)]),
    pong = pcall(P, net_adm, ping, [CNode]),
    Marker = pcall(P, ?MODULE, put_get, [CNode, Marker, Marker]),
    stop_peer(P),
    Proxy ! {get, self()},
    receive
        {Proxy, Up, Down} ->
            exit(Proxy, kill),
            true = byte_size(Up) > 0,
            {Up, Down}
    after 10000 -> ct:fail(proxy_silent)
    end.

%% The TLS handshake counts against --setup-time: a client that connects and
%% says nothing is dropped.
handshake_timeout(Config) ->
    D = ?config(pki, Config),
    H = start_cnode(cnode_args(D, ["--setup-time", "1000"])),
    {ok, S} = gen_tcp:connect("localhost", ?LIB:port(H), [binary, {active, false}]),
    T0 = erlang:monotonic_time(millisecond),
    {error, _} = gen_tcp:recv(S, 0, 10000),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("closed after ~p ms", [Took]),
    true = Took >= 500 andalso Took < 5000,
    wait_lines(H, [<<"setup not finished">>]),
    gen_tcp:close(S),
    stop_cnode(H).

%% --- a recording TCP proxy ---------------------------------------------------

start_proxy(TargetPort) ->
    Self = self(),
    Pid = spawn(fun() -> proxy_init(Self, TargetPort) end),
    receive {Pid, port, Port} -> {Pid, Port} after 5000 -> ct:fail(proxy_start) end.

proxy_init(Parent, TargetPort) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {reuseaddr, true}]),
    {ok, Port} = inet:port(L),
    Self = self(),
    spawn_link(fun() -> proxy_accept(Self, L, TargetPort) end),
    Parent ! {self(), port, Port},
    proxy_loop([], []).

proxy_accept(Rec, L, TargetPort) ->
    {ok, C} = gen_tcp:accept(L),
    {ok, S} = gen_tcp:connect("localhost", TargetPort, [binary, {active, false}]),
    spawn_link(fun() -> pump(Rec, up, C, S) end),
    spawn_link(fun() -> pump(Rec, down, S, C) end),
    proxy_accept(Rec, L, TargetPort).

pump(Rec, Dir, From, To) ->
    case gen_tcp:recv(From, 0) of
        {ok, B} ->
            Rec ! {Dir, B},
            _ = gen_tcp:send(To, B),
            pump(Rec, Dir, From, To);
        {error, _} ->
            gen_tcp:shutdown(To, write)
    end.

proxy_loop(Up, Down) ->
    receive
        {up, B} -> proxy_loop([B | Up], Down);
        {down, B} -> proxy_loop(Up, [B | Down]);
        {get, From} ->
            From ! {self(), iolist_to_binary(lists:reverse(Up)),
                    iolist_to_binary(lists:reverse(Down))},
            proxy_loop(Up, Down)
    end.
