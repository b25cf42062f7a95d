%% IPv6 distribution (issue 12): kv_cnode listens dual stack, so BEAM nodes
%% started with -proto_dist inet6_tcp (and inet6_tls) reach it, with long
%% names on the IPv6 literal (kv@::1) and with a short host name that the
%% BEAM resolves to ::1 for inet6; and kv_cnode --inet6 connects out to
%% them over IPv6, as erl -proto_dist inet6_tcp does.  The peers run
%% over standard_io (the CT node speaks IPv4 distribution) and are driven
%% with peer:call.  epmd is shared: it listens on IPv4 and IPv6.
-module(kv_cnode_inet6_SUITE).
-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([beam_inet6_to_cnode_literal/1, beam_inet6_to_cnode_short_host/1,
         cnode_inet6_connects_out/1, cnode_inet6_connects_out_short_host/1,
         cnode_without_inet6_cannot_resolve/1,
         beam_inet6_tls_to_cnode/1, cnode_inet6_tls_connects_out/1]).

-define(LIB, kv_cnode_test_lib).
-define(TLS, kv_cnode_tls_SUITE).
-define(REG, 'Elixir.KV.Registry').
-define(T, 60000).

suite() -> [{timetrap, {minutes, 5}}].

all() ->
    [beam_inet6_to_cnode_literal, beam_inet6_to_cnode_short_host,
     cnode_inet6_connects_out, cnode_inet6_connects_out_short_host,
     cnode_without_inet6_cannot_resolve,
     beam_inet6_tls_to_cnode, cnode_inet6_tls_connects_out].

init_per_suite(Config) ->
    os:cmd("epmd -daemon"),
    case file:read_file("/proc/net/if_inet6") of
        {ok, B} when byte_size(B) > 0 ->
            Dir = filename:join(?config(priv_dir, Config), "pki"),
            ok = filelib:ensure_path(Dir),
            ?TLS:make_pki(Dir),
            [{pki, Dir} | Config];
        _ ->
            {fail, "this host has no IPv6 (no /proc/net/if_inet6): cannot test IPv6"}
    end.

end_per_suite(_Config) -> ok.

init_per_testcase(_TC, Config) -> Config.

end_per_testcase(_TC, _Config) ->
    [catch peer:stop(P) || P <- take(peers)],
    [catch ?LIB:stop(H) || H <- take(cnodes)],
    ok.

remember(Key, V) -> put(Key, [V | case get(Key) of undefined -> []; L -> L end]).
take(Key) -> case erase(Key) of undefined -> []; L -> L end.

%% A BEAM peer with -proto_dist Proto; NameArgs e.g. ["-name", "a@::1"].
peer6(NameArgs, Proto, Extra) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    {ok, Pid, _} = peer:start(#{connection => standard_io,
                                args => ["-setcookie", Cookie, "-proto_dist", Proto
                                         | NameArgs ++ Extra]}),
    remember(peers, Pid),
    {Pid, peer:call(Pid, erlang, node, [])}.

pcall({Pid, _}, M, F, A) -> peer:call(Pid, M, F, A, ?T).

cnode(Args, Long) ->
    {ok, H} = case Long of
                  {long, Name} -> ?LIB:start_long(Name, Args);
                  short -> ?LIB:start(Args)
              end,
    remember(cnodes, H),
    H.

%% The registry through a node: create, lookup, a bucket put/get.
exercise(P, KvNode) ->
    Reg = {?REG, KvNode},
    Name = list_to_binary(?LIB:unique("b6")),
    ok = pcall(P, gen_server, cast, [Reg, {create, Name}]),
    {ok, B} = wait_lookup(P, Reg, Name, 50),
    KvNode = node(B),
    ok = pcall(P, gen_server, call, [B, {put, <<"k">>, 6}]),
    6 = pcall(P, gen_server, call, [B, {get, <<"k">>}]),
    ok.

wait_lookup(_P, _Reg, _Name, 0) -> ct:fail(bucket_never_created);
wait_lookup(P, Reg, Name, N) ->
    case pcall(P, gen_server, call, [Reg, {lookup, Name}]) of
        {ok, B} -> {ok, B};
        error -> timer:sleep(50), wait_lookup(P, Reg, Name, N - 1)
    end.

%% The kv_cnode log names the peer's address as [::1]:port.
assert_v6_line(H) ->
    true = ?LIB:wait_until(
             fun() -> ?LIB:match_lines(H, <<"\\[::1\\]:[0-9]+">>) =/= [] end, 10000).

%%--------------------------------------------------------------------

%% kv@::1 (long name on the IPv6 literal) pinged and called by an inet6_tcp
%% node a@::1: epmd over ::1, the connection over ::1.
beam_inet6_to_cnode_literal(_Config) ->
    Kv = ?LIB:unique("kv6") ++ "@::1",
    H = cnode(["--log-level", "debug"], {long, Kv}),
    KvNode = list_to_atom(Kv),
    P = peer6(["-name", ?LIB:unique("a6") ++ "@::1"], "inet6_tcp", []),
    pong = pcall(P, net_adm, ping, [KvNode]),
    ok = exercise(P, KvNode),
    true = ?LIB:wait_until(fun() -> ?LIB:match_lines(H, <<" up">>) =/= [] end, 5000),
    ct:pal("kv_cnode lines: ~p", [[L || L <- ?LIB:lines(H), binary:match(L, <<"::1">>) =/= nomatch]]),
    ok.

%% Short names: the host part is this host's name, which the BEAM resolves
%% to ::1 for inet6 (inet:getaddr(Host, inet6)); kv_cnode --sname answers.
beam_inet6_to_cnode_short_host(_Config) ->
    {ok, {0, 0, 0, 0, 0, 0, 0, 1}} = inet:getaddr(?LIB:host(), inet6),
    #{node := KvNode} = cnode([], short),
    P = peer6(["-sname", ?LIB:unique("s6")], "inet6_tcp", []),
    pong = pcall(P, net_adm, ping, [KvNode]),
    ok = exercise(P, KvNode),
    ok.

%% kv_cnode --inet6 --connect b@::1: epmd on ::1, then the node's port over
%% IPv6; the peer sees kv_cnode in nodes(hidden) and can call it back on
%% that connection.
cnode_inet6_connects_out(_Config) ->
    P = {_, BNode} = peer6(["-name", ?LIB:unique("b6") ++ "@::1"], "inet6_tcp", []),
    Kv = ?LIB:unique("kvo6") ++ "@::1",
    H = cnode(["--inet6", "--connect", atom_to_list(BNode)], {long, Kv}),
    KvNode = list_to_atom(Kv),
    true = ?LIB:wait_line(H, ?LIB:up_line(BNode), 10000),
    assert_v6_line(H),
    true = lists:member(KvNode, pcall(P, erlang, nodes, [hidden])),
    ok = exercise(P, KvNode),
    ok.

%% kv_cnode --sname --inet6 --connect b@thishost: this host's name is ::1
%% for IPv6, as OTP's inet:gethostbyname_self makes it for an inet6_tcp
%% node (here /etc/hosts maps it to IPv4 only).
cnode_inet6_connects_out_short_host(_Config) ->
    P = {_, BNode} = peer6(["-sname", ?LIB:unique("sb6")], "inet6_tcp", []),
    H = #{node := KvNode} = cnode(["--inet6", "--connect", atom_to_list(BNode)], short),
    true = ?LIB:wait_line(H, ?LIB:up_line(BNode), 10000),
    assert_v6_line(H),
    ok = exercise(P, KvNode),
    ok.

%% Without --inet6 the C node resolves for IPv4 only, as erl with inet_tcp
%% does: an IPv6-literal peer cannot be reached and the log says why.
cnode_without_inet6_cannot_resolve(_Config) ->
    {_, BNode} = peer6(["-name", ?LIB:unique("c6") ++ "@::1"], "inet6_tcp", []),
    H = cnode(["--connect", atom_to_list(BNode)], {long, ?LIB:unique("kvn6") ++ "@::1"}),
    true = ?LIB:wait_line(H, <<"cannot resolve host">>, 10000),
    ok.

%% inet6_tls: a BEAM TLS node over IPv6 pings and calls kv_cnode (TLS).
beam_inet6_tls_to_cnode(Config) ->
    D = ?config(pki, Config),
    Kv = ?LIB:unique("kvt6") ++ "@::1",
    H = cnode(tls_args(D, []), {long, Kv}),
    KvNode = list_to_atom(Kv),
    P = peer6(["-name", ?LIB:unique("t6") ++ "@::1"], "inet6_tls",
              ["-ssl_dist_optfile", ?TLS:optfile(D, "beam", [])]),
    Pong = pcall(P, net_adm, ping, [KvNode]),
    ct:pal("ping ~p; kv_cnode log: ~p", [Pong, ?LIB:lines(H)]),
    pong = Pong,
    ok = exercise(P, KvNode),
    ok.

%% kv_cnode --inet6 over TLS connects out to an inet6_tls node; the
%% certificate is checked against the IPv6 literal (IP:::1 in its SAN).
cnode_inet6_tls_connects_out(Config) ->
    D = ?config(pki, Config),
    P = {_, BNode} = peer6(["-name", ?LIB:unique("u6") ++ "@::1"], "inet6_tls",
                           ["-ssl_dist_optfile", ?TLS:optfile(D, "beam", [])]),
    Kv = ?LIB:unique("kvto6") ++ "@::1",
    H = cnode(tls_args(D, ["--inet6", "--connect", atom_to_list(BNode)]), {long, Kv}),
    KvNode = list_to_atom(Kv),
    true = ?LIB:wait_line(H, ?LIB:up_line(BNode), 15000),
    assert_v6_line(H),
    ok = exercise(P, KvNode),
    ok.

tls_args(D, Extra) ->
    F = fun(N) -> filename:join(D, N) end,
    ["--tls-cert", F("cnode.pem"), "--tls-key", F("cnode.key"), "--tls-cacert", F("ca.pem")
     | Extra].
