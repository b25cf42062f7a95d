%% kv_cnode driven from other OTP releases (issue 12): OTP 27 (Debian
%% trixie, Elixir 1.18) and OTP 29 (Debian unstable, Elixir 1.20) nodes run
%% with `chroot TREE erl ...` in the trees `make otp-peers` builds
%% (tools/otp_peers.sh; $OTP_PEERS_DIR, default build/otp), sharing this
%% machine's loopback and epmd.  The group otp25 runs the reply-shape cases
%% from this machine's own OTP 25, the same way.
%%
%% The peers are plain `erl` nodes started with open_port and driven with
%% erpc from the CT node; the client code (kv_otp_client.erl in the data
%% dir) is compiled in each tree by that release's own erlc.  Where a tree
%% is missing every case of its group FAILS with the reason (never a skip).
-module(kv_cnode_otp_SUITE).
-include_lib("common_test/include/ct.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([release/1, ping/1, registry_guide/1, bucket_calls/1, sys_messages/1,
         stop_reasons/1, monitors/1, links_trap_exit/1, late_reply_dropped/1,
         requests/1, kill9_peer/1, ticks/1, tls/1, connect_out/1, elixir_session/1,
         ei_peer/1, cnode_clean/1]).

-define(LIB, kv_cnode_test_lib).
-define(REG(N), {'Elixir.KV.Registry', N}).

suite() -> [{timetrap, {minutes, 5}}].

all() -> [{group, otp25}, {group, otp27}, {group, otp29}].

shapes() ->
    [release, ping, sys_messages, stop_reasons, late_reply_dropped, requests, cnode_clean].

groups() ->
    Full = [release, ping, registry_guide, bucket_calls, sys_messages, stop_reasons,
            monitors, links_trap_exit, late_reply_dropped, requests, kill9_peer, ticks,
            tls, connect_out, elixir_session, ei_peer, cnode_clean],
    [{otp25, [], shapes()}, {otp27, [], Full}, {otp29, [], Full}].

root() -> filename:dirname(filename:dirname(filename:absname(?FILE))).

trees_dir() ->
    case os:getenv("OTP_PEERS_DIR") of
        false -> filename:join([root(), "build", "otp"]);
        "" -> filename:join([root(), "build", "otp"]);
        D -> D
    end.

init_per_suite(Config) ->
    os:cmd("epmd -daemon"),
    Config.

end_per_suite(_Config) -> ok.

%% A group: its release's tree (none for 25: the host), a kv_cnode and one
%% peer node with the client module loaded.  Problems are kept in Config
%% and fail every case (init_per_group failing would only skip them).
init_per_group(G, Config) ->
    Rel = list_to_integer(tl(tl(tl(atom_to_list(G))))),
    try
        Tree = tree(Rel),
        Code = compile_client(Rel, Tree, Config),
        {ok, H} = ?LIB:start([]),
        Peer = start_node(Rel, Tree, Code, "p" ++ integer_to_list(Rel), []),
        [{rel, Rel}, {tree, Tree}, {code, Code}, {kv, H}, {peer, Peer} | Config]
    catch throw:{no_tree, Why} ->
            [{rel, Rel}, {broken, Why} | Config]
    end.

end_per_group(_G, Config) ->
    case ?config(peer, Config) of undefined -> ok; P -> stop_node(P) end,
    case {?config(tree, Config), ?config(code, Config)} of
        {T, C} when is_list(T), is_list(C) -> file:del_dir_r(filename:join(T, tl(C)));
        _ -> ok
    end,
    case ?config(kv, Config) of
        undefined -> ok;
        H ->
            ct:log("kv_cnode log:~n~s", [[[L, $\n] || L <- ?LIB:lines(H)]]),
            ?LIB:stop(H)
    end,
    ok.

init_per_testcase(_TC, Config) ->
    case ?config(broken, Config) of
        undefined -> Config;
        Why -> ct:fail(Why)   % fails the case (with the reason), never skips it
    end.

end_per_testcase(_TC, _Config) ->
    [catch stop_node(N) || N <- take(nodes)],
    [catch ?LIB:stop(H) || H <- take(cnodes)],
    [file:del_dir_r(D) || D <- take(dirs)],
    ok.

remember(Key, V) -> put(Key, [V | case get(Key) of undefined -> []; L -> L end]), V.
take(Key) -> case erase(Key) of undefined -> []; L -> L end.

%% --- trees and peer nodes --------------------------------------------------

tree(25) -> "/";
tree(Rel) ->
    T = filename:join(trees_dir(), integer_to_list(Rel)),
    case filelib:is_regular(filename:join(T, ".done")) of
        true -> T;
        false ->
            Log = filename:join(trees_dir(), integer_to_list(Rel) ++ ".log"),
            Tail = case file:read_file(Log) of
                       {ok, B} -> lists:sublist(lists:reverse(binary:split(B, <<"\n">>, [global])), 8);
                       _ -> []
                   end,
            throw({no_tree, {otp_tree_missing, Rel, T,
                             "run `make otp-peers` (root, Debian mirror reachable)",
                             lists:reverse(Tail)}})
    end.

%% A directory inside the tree (seen by the peer as In, by us as Out).
tree_dir(Tree, Name) ->
    In = filename:join("/tmp", ?LIB:unique(Name)),
    Out = filename:join(Tree, tl(In)),
    ok = filelib:ensure_path(Out),
    remember(dirs, Out),
    {In, Out}.

%% Run a command in the tree (chroot), or on the host for 25.
in_tree("/", Cmd) -> run(Cmd);
in_tree(Tree, Cmd) -> run("chroot '" ++ Tree ++ "' /bin/sh -c '" ++ Cmd ++ "'").

run(Cmd) ->
    Out = os:cmd(Cmd ++ " 2>&1; echo \"rc=$?\""),
    case string:find(Out, "rc=0\n") of
        nomatch -> ct:fail({command_failed, Cmd, Out});
        _ -> Out
    end.

compile_client(_Rel, Tree, Config) ->
    {In, Out} = tree_dir(Tree, "kvct"),
    Src = filename:join(?config(data_dir, Config), "kv_otp_client.erl"),
    {ok, _} = file:copy(Src, filename:join(Out, "kv_otp_client.erl")),
    in_tree(Tree, "cd " ++ In ++ " && erlc kv_otp_client.erl"),
    In.

%% Start `erl` in the tree; returns #{node, port, ospid}.  It stops with the
%% CT node: a watcher in it halts on nodedown.
start_node(Rel, Tree, Code, Prefix, Extra) ->
    Name = ?LIB:unique(Prefix),
    Node = ?LIB:node_name(Name),
    Watch = lists:flatten(io_lib:format(
              "spawn(fun() -> monitor_node('~s', true), receive _ -> halt() end end)", [node()])),
    Args = ["-sname", Name, "-setcookie", atom_to_list(erlang:get_cookie()),
            "-hidden", "-noinput", "-pa", Code, "-eval", Watch | Extra],
    {Exe, All} = case Tree of
                     "/" -> {os:find_executable("erl"), Args};
                     _ -> {os:find_executable("chroot"), [Tree, "erl" | Args]}
                 end,
    Port = open_port({spawn_executable, Exe},
                     [{args, All}, {env, [{"HOME", "/root"}]}, exit_status,
                      stderr_to_stdout, binary, {line, 4096}]),
    case ?LIB:wait_until(fun() -> net_adm:ping(Node) =:= pong end, 30000) of
        true -> ok;
        _ -> ct:fail({peer_did_not_start, Rel, Node, drain(Port)})
    end,
    OsPid = erpc:call(Node, os, getpid, []),
    #{node => Node, port => Port, ospid => OsPid, rel => Rel}.

drain(Port) ->
    receive {Port, {data, {_, L}}} -> [L | drain(Port)] after 200 -> [] end.

stop_node(#{node := N, port := Port, ospid := OsPid}) ->
    catch erpc:cast(N, erlang, halt, []),
    receive {Port, {exit_status, _}} -> ok
    after 5000 -> os:cmd("kill -9 " ++ OsPid)
    end.

peer(Config) -> maps:get(node, ?config(peer, Config)).
kvnode(Config) -> maps:get(node, ?config(kv, Config)).
call(Config, F, A) -> erpc:call(peer(Config), kv_otp_client, F, A, 60000).

%% --- cases ---------------------------------------------------------------

%% The peer runs the release the group is named for.
release(Config) ->
    Rel = integer_to_list(?config(rel, Config)),
    Rel = erpc:call(peer(Config), erlang, system_info, [otp_release]),
    ct:comment("OTP ~s, erts ~s", [Rel, erpc:call(peer(Config), erlang, system_info, [version])]).

ping(Config) ->
    pong = erpc:call(peer(Config), net_adm, ping, [kvnode(Config)]).

registry_guide(Config) ->
    KV = kvnode(Config),
    #{lookup_absent := error, same := true, node := KV, get := 1, down := normal,
      after_stop := error, down_shutdown := shutdown, after_exit := error} =
        R = call(Config, guide, [KV]),
    ct:log("~p", [R]).

bucket_calls(Config) ->
    #{missing := nil, m := #{x := [1, 2.5]}, keys := [k, m], delete := <<"v">>,
      delete_again := nil, unknown := {error, unknown_call},
      reg_unknown := {error, unknown_call}, register := ok,
      register_again := {error, {already_registered, _}}, unregister := ok,
      count_is_int := true} = call(Config, bucket_calls, [kvnode(Config)]).

%% sys:get_state/1,2 give the map on every release (bare State to 25,
%% {ok, State} to 26+); get_status, suspend/resume, replace_state (an
%% error: no fun runs here), terminate.
sys_messages(Config) ->
    R = call(Config, sys_calls, [kvnode(Config)]),
    ct:log("~p", [R]),
    #{state := #{<<"milk">> := 3} = S, state2 := S, suspend := ok, resume := ok,
      terminate := ok, gone := noproc,
      replace := {error, {callback_failed, _, _}},
      status := {status, _, {module, gen_server}, [_, running, _, _, _]}} = R,
    1 = map_size(S).

stop_reasons(Config) ->
    [{normal, ok, normal}, {shutdown, ok, shutdown}, {{shutdown, bye}, ok, {shutdown, bye}},
     {other, ok, other}] = call(Config, stop_reasons, [kvnode(Config)]).

monitors(Config) ->
    #{by_pid := {shutdown, x}, dead_pid := noproc, by_name_absent := noproc,
      call_dead := noproc, fast := true, leftover := none} =
        call(Config, monitors, [kvnode(Config)]).

links_trap_exit(Config) ->
    #{alive := [], killed := killed, unlinked := none, linked_stop := {shutdown, z}} =
        call(Config, links, [kvnode(Config)]).

%% A reply after the caller's timeout never reaches its mailbox.
late_reply_dropped(Config) ->
    R = call(Config, late_reply, [kvnode(Config)]),
    ct:log("~p", [R]),
    #{timeouts := T, send_request_timeout := timeout, leftover := []} = R,
    true = T > 0,
    ct:comment("~p of 50 calls timed out; no late reply arrived", [T]).

requests(Config) ->
    #{wait := {reply, 1}, receive_response := {reply, [a]}, check := {reply, 1},
      labels := [{one, reply}, {two, reply}], size := 0} =
        call(Config, requests, [kvnode(Config)]).

%% A peer that registered a name is killed with SIGKILL: the name goes.
kill9_peer(Config) ->
    KV = kvnode(Config),
    P = remember(nodes, start_node(?config(rel, Config), ?config(tree, Config),
                                   ?config(code, Config), "k", [])),
    Name = list_to_binary(?LIB:unique("held")),
    {ok, Pid} = erpc:call(maps:get(node, P), kv_otp_client, hold_name, [KV, Name]),
    {ok, Pid} = gen_server:call(?REG(KV), {lookup, Name}),
    os:cmd("kill -9 " ++ maps:get(ospid, P)),
    true = ?LIB:wait_until(fun() -> gen_server:call(?REG(KV), {lookup, Name}) =:= error end,
                           15000).

%% net_ticktime 4 on both sides: an idle connection stays up for three
%% tick times; a peer that stops answering (SIGSTOP) is dropped.
ticks(Config) ->
    {ok, H} = ?LIB:start(["--net-ticktime", "4"]),
    remember(cnodes, H),
    KV = maps:get(node, H),
    P = remember(nodes, start_node(?config(rel, Config), ?config(tree, Config),
                                   ?config(code, Config), "t",
                                   ["-kernel", "net_ticktime", "4"])),
    PN = maps:get(node, P),
    %% The CT node ticks at 60 s: traffic every 0.5 s keeps its own link to
    %% the peer (ticktime 4) alive; the peer's link to kv_cnode stays idle.
    Keep = spawn_link(fun Loop() -> catch erpc:call(PN, erlang, node, [], 2000),
                                    receive stop -> ok after 500 -> Loop() end end),
    pong = erpc:call(PN, net_adm, ping, [KV]),
    timer:sleep(12000),                                  % three tick times, idle
    true = erpc:call(PN, kv_otp_client, connected, [KV]),
    unlink(Keep),
    Keep ! stop,
    1 = ?LIB:count_lines(H, ?LIB:up_line(PN)),
    0 = ?LIB:count_lines(H, ?LIB:down_line(PN)),
    os:cmd("kill -STOP " ++ maps:get(ospid, P)),
    Dropped = ?LIB:wait_line(H, ?LIB:down_line(PN), 12000),
    os:cmd("kill -CONT " ++ maps:get(ospid, P)),
    true = Dropped,
    ct:comment("idle 12 s with ticks: up; SIGSTOP: dropped").

%% TLS (inet_tls) both ways in one peer: it connects to a TLS kv_cnode and
%% runs the guide and sys cases; the kv_cnode also connects out to it.
tls(Config) ->
    Tree = ?config(tree, Config),
    {In, Out} = tree_dir(Tree, "pki"),
    make_pki(Out),
    Host = ?LIB:host(),
    Opt = fun(D) -> [{certfile, D ++ "/beam.pem"}, {keyfile, D ++ "/beam.key"},
                     {cacertfile, D ++ "/ca.pem"}, {verify, verify_peer}] end,
    ok = file:write_file(filename:join(Out, "dist.conf"),
                         io_lib:format("~p.~n", [[{server, Opt(In) ++ [{fail_if_no_peer_cert, true}]},
                                                  {client, Opt(In)}]])),
    PName = ?LIB:unique("tlsp"),
    PNode = list_to_atom(PName ++ "@" ++ Host),
    {ok, H} = ?LIB:start(["--tls-cert", Out ++ "/cnode.pem", "--tls-key", Out ++ "/cnode.key",
                          "--tls-cacert", Out ++ "/ca.pem", "--connect", atom_to_list(PNode)]),
    remember(cnodes, H),
    KV = maps:get(node, H),
    Args = ["-sname", PName, "-setcookie", atom_to_list(erlang:get_cookie()), "-noinput",
            "-proto_dist", "inet_tls", "-ssl_dist_optfile", In ++ "/dist.conf",
            "-pa", ?config(code, Config),
            "-eval", "kv_otp_client:tls_main(\"" ++ atom_to_list(KV) ++ "\")"],
    {Exe, All} = case Tree of
                     "/" -> {os:find_executable("erl"), Args};
                     _ -> {os:find_executable("chroot"), [Tree, "erl" | Args]}
                 end,
    Port = open_port({spawn_executable, Exe}, [{args, All}, {env, [{"HOME", "/root"}]},
                                               exit_status, stderr_to_stdout, binary,
                                               {line, 4096}]),
    {Status, Lines} = collect(Port, 60000, []),
    ct:log("TLS peer exit ~p:~n~s", [Status, [[L, $\n] || L <- Lines]]),
    0 = Status,
    true = lists:any(fun(L) -> binary:match(L, <<"TLS OK">>) =/= nomatch end, Lines),
    true = ?LIB:wait_line(H, <<"TLS ">>, 5000).

collect(Port, Ms, Acc) ->
    receive
        {Port, {data, {_, L}}} -> collect(Port, Ms, [L | Acc]);
        {Port, {exit_status, S}} -> {S, lists:reverse(Acc)}
    after Ms -> ct:fail({peer_did_not_finish, lists:reverse(Acc)})
    end.

make_pki(Dir) ->
    Host = ?LIB:host(),
    ok = file:write_file(filename:join(Dir, "node.ext"), [
        "basicConstraints=critical,CA:FALSE\n",
        "keyUsage=critical,digitalSignature,keyEncipherment\n",
        "extendedKeyUsage=serverAuth,clientAuth\n",
        "subjectAltName=DNS:", Host, ",DNS:localhost,IP:127.0.0.1\n"]),
    Ssl = fun(A) -> run("cd '" ++ Dir ++ "' && openssl " ++ A) end,
    Ssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        " -keyout ca.key -out ca.pem -days 2 -subj /CN=kv_otp_ca"),
    [begin
         Ssl("req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "
             ++ N ++ ".key -out " ++ N ++ ".csr -subj /CN=kv_otp_" ++ N),
         Ssl("x509 -req -in " ++ N ++ ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out "
             ++ N ++ ".pem -days 2 -extfile node.ext")
     end || N <- ["cnode", "beam"]],
    ok.

%% The C node connects out to a peer of this release (--connect), and a
%% registry call that names a pid on a node it has no connection to makes it
%% connect (to monitor that pid).
connect_out(Config) ->
    P = remember(nodes, start_node(?config(rel, Config), ?config(tree, Config),
                                   ?config(code, Config), "c", [])),
    PN = maps:get(node, P),
    {ok, H} = ?LIB:start(["--connect", atom_to_list(PN)]),
    remember(cnodes, H),
    KV = maps:get(node, H),
    true = ?LIB:wait_until(fun() -> erpc:call(PN, kv_otp_client, connected, [KV]) end, 10000),
    true = ?LIB:wait_line(H, ?LIB:up_line(PN), 5000),
    %% a second peer, never connected to the new kv_cnode, gets registered
    %% by the CT node: kv_cnode connects to it to monitor the pid
    P2 = remember(nodes, start_node(?config(rel, Config), ?config(tree, Config),
                                    ?config(code, Config), "c2", [])),
    PN2 = maps:get(node, P2),
    Pid = erpc:call(PN2, erlang, whereis, [init]),
    false = erpc:call(PN2, kv_otp_client, connected, [KV]),
    ok = gen_server:call(?REG(KV), {register, <<"init2">>, Pid}),
    true = ?LIB:wait_until(fun() -> erpc:call(PN2, kv_otp_client, connected, [KV]) end, 10000),
    {ok, Pid} = gen_server:call(?REG(KV), {lookup, <<"init2">>}).

%% The registry suite's Elixir session, run by this release's elixir.
elixir_session(Config) ->
    Tree = ?config(tree, Config),
    {In, Out} = tree_dir(Tree, "exs"),
    Src = filename:join([root(), "erl_test", "kv_cnode_registry_SUITE_data", "iex_session.exs"]),
    {ok, _} = file:copy(Src, filename:join(Out, "iex_session.exs")),
    Args = [Tree, "elixir", "--sname", ?LIB:unique("iex"), "--cookie",
            atom_to_list(erlang:get_cookie()), In ++ "/iex_session.exs",
            atom_to_list(kvnode(Config))],
    Port = open_port({spawn_executable, os:find_executable("chroot")},
                     [{args, Args}, {env, [{"HOME", "/root"}]}, exit_status,
                      stderr_to_stdout, binary, {line, 4096}]),
    {Status, Lines} = collect(Port, 120000, []),
    ct:log("elixir exit ~p:~n~s", [Status, [[L, $\n] || L <- Lines]]),
    0 = Status,
    true = lists:member(<<"ELIXIR OK">>, Lines),
    [V | _] = [L || L <- Lines, binary:match(L, <<"Elixir">>) =/= nomatch] ++ [<<>>],
    ct:comment("~s", [V]).

%% tests/peers/ei_peer.c built in the tree against that release's
%% erl_interface, run there ("calls": lookup, create, put, get, register...).
ei_peer(Config) ->
    Tree = ?config(tree, Config),
    {In, Out} = tree_dir(Tree, "ei"),
    {ok, _} = file:copy(filename:join([root(), "tests", "peers", "ei_peer.c"]),
                        filename:join(Out, "ei_peer.c")),
    in_tree(Tree, "cd " ++ In ++ " && EI=$(ls -d /usr/lib/erlang/lib/erl_interface-*) && "
            "gcc -O1 -o ei_peer ei_peer.c -I$EI/include -L$EI/lib -lei -lpthread"),
    KV = atom_to_list(kvnode(Config)),
    Port = open_port({spawn_executable, os:find_executable("chroot")},
                     [{args, [Tree, In ++ "/ei_peer", KV, atom_to_list(erlang:get_cookie()),
                              "calls", ?LIB:unique("ei")]},
                      exit_status, stderr_to_stdout, binary, {line, 4096}]),
    {Status, Lines} = collect(Port, 60000, []),
    ct:log("ei peer exit ~p:~n~s", [Status, [[L, $\n] || L <- Lines]]),
    0 = Status,
    true = lists:member(<<"OK done">>, Lines),
    [] = [L || L <- Lines, binary:match(L, <<"FAIL">>) =/= nomatch].

%% Last: the group's kv_cnode still serves and logged no warning or error
%% (nothing a peer of this release sent was refused or misread).
cnode_clean(Config) ->
    H = ?config(kv, Config),
    true = is_integer(gen_server:call(?REG(kvnode(Config)), count, 5000)),
    [] = [L || L <- ?LIB:lines(H),
               binary:match(L, [<<" warning:">>, <<" error:">>, <<"ERROR">>]) =/= nomatch].
