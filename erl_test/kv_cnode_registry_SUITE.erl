%% Issue 3: KV.Registry and buckets served by kv_cnode, tested as a BEAM
%% node (and an Elixir node) sees them.
%%
%% One kv_cnode runs for the whole suite; a case that needs a node of its own
%% (SIGTERM) starts one.  end_per_testcase checks that the shared node still
%% answers and fails the case (and restarts the node) if it does not.
%% Waiting is done by polling with deadlines (kv_cnode_test_lib:wait_until),
%% never by fixed sleeps, except where the point is that nothing arrives.
-module(kv_cnode_registry_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(LIB, kv_cnode_test_lib).
-define(REG, 'Elixir.KV.Registry').
%% The raw distribution client (raw_encoding_variants, raw_link_monitor_signals);
%% its enc/1 (a term's encoding without the 131) is used unqualified.
-define(RAW, kv_cnode_raw).
-import(kv_cnode_raw, [enc/1]).
%% How long a raw call waits for its reply.
-define(RAW_CALL_MS, 10000).

suite() -> [{timetrap, {seconds, 90}}].

all() ->
    [%% the guide's KV.RegistryTest
     guide_spawns_buckets, guide_removes_buckets_on_exit, guide_removes_bucket_on_crash,
     %% registry protocol
     lookup_absent, cast_create, call_create_same_pid, count,
     register_ct_pid, register_dead_pid, register_peer_pid, register_conflict,
     unregister, unregister_bucket_name, registry_unknown_call,
     registry_ignores_casts_and_messages,
     %% bucket protocol
     bucket_ops, bucket_unknown_call_and_messages, values_byte_exact, big_value_10mb,
     keys_by_value, same_term_other_encoding, raw_encoding_variants, raw_link_monitor_signals,
     %% sys
     sys_get_state, sys_terminate_reason, sys_get_status_and_others,
     %% process semantics
     monitor_by_pid, monitor_by_name, monitor_dead_or_unknown_noproc,
     call_monitor_outlives_reply,
     call_stopped_bucket_noproc, link_exit, unlink_acked, exit_signals,
     name_leaves_before_down, peer_monitors_dropped_on_kill9,
     peer_link_noconnection_on_kill9,
     %% other nodes
     register_on_unconnected_peer_kill9, peer_registers_own_process_kill9,
     register_on_unreachable_node,
     %% scale
     many_buckets, concurrent_callers,
     %% Elixir
     elixir_iex_session,
     %% last: its own node
     sigterm_shutdown].

%% --- setup ---------------------------------------------------------------

init_per_suite(Config) ->
    {ok, H} = ?LIB:start([]),
    persistent_term:put({?MODULE, kv}, H),
    Config.

end_per_suite(_Config) ->
    H = kv(),
    Lines = ?LIB:lines(H),
    S = ?LIB:stop(H),
    persistent_term:erase({?MODULE, kv}),
    check_log_clean(Lines),
    ?assertEqual(0, S),
    ok.

init_per_testcase(_Case, Config) ->
    Config.

%% The shared node must still answer after every case.
end_per_testcase(Case, _Config) ->
    H = kv(),
    N = node_of(H),
    Alive = try gen_server:call(?LIB:registry(N), count, 5000) of
                C when is_integer(C) -> true
            catch _:_ -> false
            end,
    case Alive of
        true -> ok;
        false ->
            Lines = ?LIB:lines(H),
            ct:log("kv_cnode died or hangs after ~p; its log:~n~s", [Case, [[L, $\n] || L <- Lines]]),
            catch ?LIB:stop(H),
            {ok, H2} = ?LIB:start([]),
            persistent_term:put({?MODULE, kv}, H2),
            {fail, {kv_cnode_not_answering_after, Case}}
    end.

kv() -> persistent_term:get({?MODULE, kv}).
node_of(#{node := N}) -> N.
kvnode() -> node_of(kv()).
reg() -> ?LIB:registry(kvnode()).

check_log_clean(Lines) ->
    Bad = [L || L <- Lines,
                binary:match(L, [<<"AddressSanitizer">>, <<"runtime error">>,
                                 <<"LeakSanitizer">>]) =/= nomatch],
    ?assertEqual([], Bad).

%% --- small helpers --------------------------------------------------------

call(Dest, Req) -> gen_server:call(Dest, Req, 10000).

lookup(Name) -> call(reg(), {lookup, Name}).

uname(Prefix) -> list_to_binary(?LIB:unique(Prefix)).

new_bucket() -> new_bucket(uname("b")).
new_bucket(Name) ->
    {ok, B} = call(reg(), {create, Name}),
    true = is_pid(B),
    B.

wait_lookup_error(Name, Ms) ->
    ?LIB:wait_until(fun() -> lookup(Name) =:= error end, Ms).

%% Wait for a DOWN for Ref; return its reason.
down(Ref) -> down(Ref, 5000).
down(Ref, Ms) ->
    receive {'DOWN', Ref, process, _, Reason} -> Reason
    after Ms -> ct:fail({no_down, Ref})
    end.

%% Nothing matching arrives within Ms (only used to show an absence).
%% The mailbox is watched (not consumed) until Ms have passed.
no_msg(Pred, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    no_msg_until(Pred, Deadline).

no_msg_until(Pred, Deadline) ->
    {messages, Msgs} = process_info(self(), messages),
    case [M || M <- Msgs, Pred(M)] of
        [M | _] -> ct:fail({unexpected_message, M});
        [] ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> ok;
                false -> timer:sleep(20), no_msg_until(Pred, Deadline)
            end
    end.

%% A process on this node (or Node) that lives until told to stop.
sleeper() -> spawn(fun() -> receive stop -> ok end end).
sleeper(Node) -> spawn(Node, timer, sleep, [infinity]).

%% Run Fun with a fresh BEAM peer node that can load this suite's code;
%% the peer is stopped whatever happens.
with_peer(Fun) ->
    Dir = filename:dirname(code:which(?MODULE)),
    LibDir = filename:dirname(code:which(?LIB)),
    P = {_, PNode} = ?LIB:start_peer("kvpeer", ["-pa", Dir, "-pa", LibDir]),
    try Fun(PNode)
    after ?LIB:stop_peer(P)
    end.

%% kill -9 a BEAM node and wait until this node has seen it go.
kill9(Node) ->
    OsPid = rpc:call(Node, os, getpid, []),
    true = is_list(OsPid),
    erlang:monitor_node(Node, true),
    os:cmd("kill -9 " ++ OsPid),
    receive {nodedown, Node} -> ok after 10000 -> ct:fail({still_up, Node}) end.

%% --- the guide's KV.RegistryTest ------------------------------------------

guide_spawns_buckets(_Config) ->
    Name = uname("shopping"),
    error = lookup(Name),
    ok = gen_server:cast(reg(), {create, Name}),
    {ok, Bucket} = lookup(Name),
    ok = call(Bucket, {put, <<"milk">>, 1}),
    1 = call(Bucket, {get, <<"milk">>}).

guide_removes_buckets_on_exit(_Config) ->
    Name = uname("shopping"),
    ok = gen_server:cast(reg(), {create, Name}),
    {ok, Bucket} = lookup(Name),
    ok = gen_server:stop(Bucket),           % Agent.stop(bucket)
    error = lookup(Name).

guide_removes_bucket_on_crash(_Config) ->
    Name = uname("shopping"),
    ok = gen_server:cast(reg(), {create, Name}),
    {ok, Bucket} = lookup(Name),
    Ref = erlang:monitor(process, Bucket),
    exit(Bucket, shutdown),                 % Agent.stop(bucket, :shutdown) done rudely
    shutdown = down(Ref),
    error = lookup(Name),
    %% and with kill
    {ok, B2} = call(reg(), {create, Name}),
    ?assertNotEqual(Bucket, B2),
    R2 = erlang:monitor(process, B2),
    exit(B2, kill),
    killed = down(R2),
    error = lookup(Name).

%% --- registry protocol ------------------------------------------------------

lookup_absent(_Config) ->
    [error = lookup(N) || N <- [uname("nope"), nope_atom, 42, {a, "b"}, [], <<>>, 1.5]],
    ok.

cast_create(_Config) ->
    Name = uname("cast"),
    C0 = call(reg(), count),
    ok = gen_server:cast(reg(), {create, Name}),
    ok = gen_server:cast(reg(), {create, Name}),   % exists: nothing new
    {ok, B} = lookup(Name),
    {ok, B} = lookup(Name),
    ?assertEqual(C0 + 1, call(reg(), count)),
    %% names are any term, short or long
    [begin ok = gen_server:cast(reg(), {create, T}), {ok, _} = lookup(T) end
     || T <- [{tuple, 1}, [1, 2, 3], 3.25, make_ref(), self(), <<>>,
              <<Name/binary, (binary:copy(<<"x">>, 100000))/binary>>,
              {Name, lists:seq(1, 1000)}, #{Name => [a | b]}]],
    ok.

call_create_same_pid(_Config) ->
    Name = uname("create"),
    {ok, B} = call(reg(), {create, Name}),
    {ok, B} = call(reg(), {create, Name}),
    {ok, B} = lookup(Name),
    ?assertEqual(kvnode(), node(B)),
    %% a name registered to another process: create returns that process
    P = sleeper(),
    N2 = uname("create_reg"),
    ok = call(reg(), {register, N2, P}),
    {ok, P} = call(reg(), {create, N2}),
    P ! stop.

count(_Config) ->
    C0 = call(reg(), count),
    true = is_integer(C0),
    Names = [uname("cnt") || _ <- lists:seq(1, 3)],
    [{ok, _} = call(reg(), {create, N}) || N <- Names],
    ?assertEqual(C0 + 3, call(reg(), count)),
    P = sleeper(),
    ok = call(reg(), {register, uname("cntreg"), P}),
    ?assertEqual(C0 + 4, call(reg(), count)),
    ok = call(reg(), {unregister, hd(Names)}),
    ?assertEqual(C0 + 3, call(reg(), count)),
    P ! stop,
    true = ?LIB:wait_until(fun() -> call(reg(), count) =:= C0 + 2 end, 5000).

register_ct_pid(_Config) ->
    Name = uname("ctpid"),
    P = sleeper(),
    ok = call(reg(), {register, Name, P}),
    {ok, P} = lookup(Name),
    exit(P, kill),
    true = wait_lookup_error(Name, 5000),
    %% a normal exit removes the name as well
    P2 = sleeper(),
    ok = call(reg(), {register, Name, P2}),
    {ok, P2} = lookup(Name),
    P2 ! stop,
    true = wait_lookup_error(Name, 5000).

register_dead_pid(_Config) ->
    %% a pid of this node that is already dead: the monitor reports noproc
    P = sleeper(),
    R = erlang:monitor(process, P),
    P ! stop,
    normal = down(R),
    Name = uname("deadpid"),
    ok = call(reg(), {register, Name, P}),
    true = wait_lookup_error(Name, 5000),
    %% a dead bucket's pid: gone at once
    B = new_bucket(),
    ok = gen_server:stop(B),
    N2 = uname("deadbucket"),
    ok = call(reg(), {register, N2, B}),
    error = lookup(N2).

register_peer_pid(_Config) ->
    with_peer(fun(PNode) ->
        Name = uname("peerpid"),
        P = sleeper(PNode),
        ok = call(reg(), {register, Name, P}),
        {ok, P} = lookup(Name),
        exit(P, kill),
        true = wait_lookup_error(Name, 5000),
        %% still the monitor-based cleanup after the first one fired
        P2 = sleeper(PNode),
        ok = call(reg(), {register, Name, P2}),
        {ok, P2} = lookup(Name),
        exit(P2, some_reason),
        true = wait_lookup_error(Name, 5000)
    end).

register_conflict(_Config) ->
    Name = uname("conflict"),
    P1 = sleeper(), P2 = sleeper(),
    ok = call(reg(), {register, Name, P1}),
    {error, {already_registered, P1}} = call(reg(), {register, Name, P2}),
    {error, {already_registered, P1}} = call(reg(), {register, Name, P1}),
    {ok, P1} = lookup(Name),
    %% a bucket's name
    BName = uname("conflict_b"),
    B = new_bucket(BName),
    {error, {already_registered, B}} = call(reg(), {register, BName, P2}),
    %% the same pid under two names is fine
    ok = call(reg(), {register, uname("second"), P1}),
    %% a bucket (a process of the C node itself) registered under a second
    %% name: both names go when it ends
    Alias = uname("alias"),
    ok = call(reg(), {register, Alias, B}),
    {ok, B} = lookup(Alias),
    ok = gen_server:stop(B),
    error = lookup(BName),
    true = wait_lookup_error(Alias, 5000),
    P1 ! stop, P2 ! stop,
    true = wait_lookup_error(Name, 5000).

unregister(_Config) ->
    Name = uname("unreg"),
    P = sleeper(),
    ok = call(reg(), {register, Name, P}),
    ok = call(reg(), {unregister, Name}),
    error = lookup(Name),
    true = is_process_alive(P),
    ok = call(reg(), {unregister, Name}),          % absent: still ok
    ok = call(reg(), {unregister, uname("never")}),
    %% the old monitor is gone: a new registration survives P's death
    P2 = sleeper(),
    ok = call(reg(), {register, Name, P2}),
    R = erlang:monitor(process, P),
    exit(P, kill),
    killed = down(R),
    %% a sentinel killed after P: once its name is gone, P's DOWN (sent
    %% earlier on the same connection) has been handled too
    Q = sleeper(),
    Sentinel = uname("sentinel"),
    ok = call(reg(), {register, Sentinel, Q}),
    exit(Q, kill),
    true = wait_lookup_error(Sentinel, 5000),
    {ok, P2} = lookup(Name),
    %% a peer's pid: unregister demonitors over the wire
    with_peer(fun(PNode) ->
        N3 = uname("unreg_peer"),
        Q1 = sleeper(PNode),
        ok = call(reg(), {register, N3, Q1}),
        ok = call(reg(), {unregister, N3}),
        error = lookup(N3),
        true = rpc:call(PNode, erlang, is_process_alive, [Q1]),
        Q2 = sleeper(PNode),
        ok = call(reg(), {register, N3, Q2}),
        exit(Q1, kill),
        {ok, Q2} = lookup(N3),
        exit(Q2, kill),
        true = wait_lookup_error(N3, 5000)
    end),
    P2 ! stop.

unregister_bucket_name(_Config) ->
    Name = uname("unreg_b"),
    B = new_bucket(Name),
    ok = call(B, {put, k, v}),
    ok = call(reg(), {unregister, Name}),
    error = lookup(Name),
    v = call(B, {get, k}),                    % the bucket lives on
    %% a new entry (which may reuse the freed slot) is not removed when the
    %% unregistered bucket ends later
    P = sleeper(),
    ok = call(reg(), {register, Name, P}),
    Others = [begin N = uname("reuse"), ok = call(reg(), {register, N, P}), N end
              || _ <- lists:seq(1, 5)],
    R = erlang:monitor(process, B),
    ok = gen_server:stop(B),
    normal = down(R),
    {ok, P} = lookup(Name),
    [{ok, P} = lookup(N) || N <- Others],
    P ! stop,
    true = wait_lookup_error(Name, 5000).

registry_unknown_call(_Config) ->
    Reqs = [foo, {lookup}, {lookup, a, b}, {create, a, b}, {unregister}, {unregister, a, b},
            {register, a}, {register, a, self(), x}, {frob, x}, "string", 42, <<"bin">>,
            #{lookup => x}, {}, [lookup, x], count_them, {count}],
    [?assertEqual({error, unknown_call}, call(reg(), R)) || R <- Reqs],
    %% register with something that is not a pid: an error, no crash
    {error, _} = call(reg(), {register, uname("notapid"), 42}),
    error = lookup(uname("after")),
    ok.

registry_ignores_casts_and_messages(_Config) ->
    R = reg(),
    C0 = call(R, count),
    [gen_server:cast(R, M) || M <- [foo, {create}, {create, a, b}, {lookup, x}, {register, x, self()},
                                    {unregister, x}, count, "str", 42]],
    [erlang:send(R, M) || M <- [hello, {create, x}, {'$gen_call', bad}, {'$gen_call', bad, req},
                                {'$gen_call', {notapid, tag}, count}, {'$gen_cast'},
                                {'$gen_cast', a, b}, {system, bad, get_state},
                                {system, {notapid, t}, get_state}, {'EXIT', self(), kill},
                                {'DOWN', make_ref(), process, self(), normal}, [], <<1, 2>>]],
    ?assertEqual(C0, call(R, count)),
    error = lookup(x),
    %% exit signals to the registry do not end it
    RegPid = registry_pid(),
    exit(RegPid, kill),
    exit(RegPid, boom),
    ?assertEqual(C0, call(R, count)),
    ok.

%% The registry's own pid, from sys:get_status.
registry_pid() ->
    {status, Pid, _, _} = sys:get_status(reg(), 10000),
    Pid.

%% --- bucket protocol ---------------------------------------------------------

bucket_ops(_Config) ->
    B = new_bucket(),
    nil = call(B, {get, <<"milk">>}),
    [] = call(B, keys),
    ok = call(B, {put, <<"milk">>, 3}),
    3 = call(B, {get, <<"milk">>}),
    ok = call(B, {put, <<"milk">>, 4}),          % replace
    4 = call(B, {get, <<"milk">>}),
    ok = gen_server:cast(B, {put, eggs, 12}),
    12 = call(B, {get, eggs}),                    % same sender: ordered
    ok = call(B, {put, {k, 1}, [v]}),
    ?assertEqual(lists:sort([<<"milk">>, eggs, {k, 1}]), lists:sort(call(B, keys))),
    4 = call(B, {delete, <<"milk">>}),
    nil = call(B, {delete, <<"milk">>}),
    nil = call(B, {get, <<"milk">>}),
    ?assertEqual(lists:sort([eggs, {k, 1}]), lists:sort(call(B, keys))),
    %% nil itself can be stored (and then is indistinguishable, as in the guide)
    ok = call(B, {put, x, nil}),
    nil = call(B, {get, x}),
    %% many keys: growth and deletion keep everything findable
    [ok = call(B, {put, I, I * 2}) || I <- lists:seq(1, 500)],
    [I = call(B, {delete, I div 2}) || I <- lists:seq(2, 500, 4)],
    [?assertEqual({I, expected_get(I)}, {I, call(B, {get, I})}) || I <- lists:seq(1, 500)],
    ok.

%% after deleting keys 1,3,5,...,249 (I div 2 for I = 2,6,10,...,498)
expected_get(I) when I rem 2 =:= 1, I =< 249 -> nil;
expected_get(I) -> I * 2.

bucket_unknown_call_and_messages(_Config) ->
    B = new_bucket(),
    ok = call(B, {put, k, v}),
    Reqs = [foo, {get}, {get, a, b}, {put, k}, {put, k, v, w}, {delete}, {delete, a, b},
            {frob, x}, 42, "keys", {keys}, #{}, {}, [get, k], {lookup, k}],
    [?assertEqual({error, unknown_call}, call(B, R)) || R <- Reqs],
    [gen_server:cast(B, M) || M <- [foo, {put, k}, {put, k, v, w}, {get, k}, {delete, k}, 42]],
    [B ! M || M <- [hello, {put, k, other}, {'$gen_call', bad}, {'$gen_cast'}, {system, x, y},
                    {'$gen_call', {notapid, t}, keys}, {'EXIT', self(), kill}]],
    v = call(B, {get, k}),
    [k] = call(B, keys),
    ok.

%% Every kind of term comes back exactly as it was put, bytes included.
values_byte_exact(_Config) ->
    B = new_bucket(),
    Values = test_values(),
    [begin
         ok = call(B, {put, {val, I}, V}),
         Got = call(B, {get, {val, I}}),
         ?assert(Got =:= V),
         ?assertEqual(term_to_binary(V), term_to_binary(Got))
     end || {I, V} <- lists:enumerate(Values)],
    %% by cast too, and through delete and sys:get_state
    [gen_server:cast(B, {put, {cast, I}, V}) || {I, V} <- lists:enumerate(Values)],
    State = sys:get_state(B),
    [begin
         ?assert(maps:get({cast, I}, State) =:= V),
         ?assertEqual(term_to_binary(V), term_to_binary(call(B, {delete, {cast, I}})))
     end || {I, V} <- lists:enumerate(Values)],
    %% a fun that comes back still runs
    F = call(B, {get, {val, 1}}),
    42 = F(41),
    ok.

test_values() ->
    Y = 7,
    [fun(X) -> X + 1 end,
     fun(X) -> X + Y end,
     fun lists:reverse/1,
     self(), make_ref(), erlang:list_to_port("#Port<0.1>"),
     ?RAW:pid('other_node@somehost', 77),
     <<>>, <<1, 2, 3>>, <<1:1>>, <<255, 7:3>>, <<0:7>>,
     #{}, #{a => 1, <<"b">> => [2], {c} => #{d => e}},
     maps:from_list([{I, I * I} || I <- lists:seq(1, 100)]),
     1 bsl 64, -(1 bsl 64), 1 bsl 1000 + 12345, -(1 bsl 2000), 16#7fffffff, -16#80000000,
     16#80000000, 0, -1, 255, 256,
     3.141592653589793, -0.0, 0.0, 1.0e300, -1.0e-300, 5.0e-324,
     '', 'an atom', 'ünïcødé', list_to_atom(lists:duplicate(255, $x)),
     list_to_atom([16#1F600, 16#4E2D]),
     "string", [], [1 | 2], [a, [b, [c, [d]]], {}], lists:seq(1, 70000),
     {}, {a}, list_to_tuple(lists:seq(1, 300)),
     <<0:(1024 * 8)>>,
     {nested, [#{k => {fun erlang:node/0, self()}}]}].

big_value_10mb(_Config) ->
    B = new_bucket(),
    Big = crypto:strong_rand_bytes(10 * 1024 * 1024),
    ok = call(B, {put, big, Big}),
    Got = call(B, {get, big}),
    ?assertEqual(byte_size(Big), byte_size(Got)),
    ?assert(Got =:= Big),
    %% by cast, as a key's neighbour, and back through delete
    Big2 = <<Big/binary, "tail">>,
    ok = gen_server:cast(B, {put, big2, {wrapped, Big2}}),
    {wrapped, Big2} = call(B, {get, big2}),
    Big = call(B, {delete, big}),
    %% a 10 MB key works too
    ok = call(B, {put, Big, small}),
    small = call(B, {get, Big}),
    ok = gen_server:stop(B).

keys_by_value(_Config) ->
    B = new_bucket(),
    Distinct = [1, 1.0, -1, 1 bsl 70, 1.0e21, "a", 'a', <<"a">>, [$a | <<>>], {a}, [a], #{a => 1},
                #{a => 1.0}, {1, 2}, [1, 2], <<1:1>>, <<1:2>>, <<128>>, "", <<>>, {}, #{}],
    [ok = call(B, {put, K, {v, K}}) || K <- Distinct],
    ?assertEqual(length(Distinct), length(call(B, keys))),
    [?assert(call(B, {get, K}) =:= {v, K}) || K <- Distinct],
    Canon = fun(L) -> lists:sort([term_to_binary(K) || K <- L]) end,
    ?assertEqual(Canon(Distinct), Canon(call(B, keys))),
    %% and as registry names
    Base = uname("k"),
    N1 = {Base, 1}, N2 = {Base, 1.0}, N3 = {Base, "a"}, N4 = {Base, 'a'},
    Pids = [begin {ok, P} = call(reg(), {create, N}), P end || N <- [N1, N2, N3, N4]],
    ?assertEqual(4, length(lists:usort(Pids))),
    ok.

%% The same term built differently is the same key (the BEAM encodes equal
%% terms alike; raw_encoding_variants sends hand-made encodings).
same_term_other_encoding(_Config) ->
    B = new_bucket(),
    ok = call(B, {put, "ab", string}),
    string = call(B, {get, [$a, $b]}),
    string = call(B, {get, [97 | "b"]}),
    M1 = maps:from_list([{I, I} || I <- lists:seq(1, 40)]),
    M2 = maps:from_list([{I, I} || I <- lists:seq(40, 1, -1)]),
    M3 = lists:foldl(fun(I, Acc) -> Acc#{I => I} end, #{}, lists:reverse(lists:seq(1, 40))),
    ok = call(B, {put, M1, big_map}),
    big_map = call(B, {get, M2}),
    big_map = call(B, {get, M3}),
    ok = call(B, {put, #{b => 2, a => 1}, small_map}),
    small_map = call(B, {get, #{a => 1, b => 2}}),
    ok = call(B, {put, 100000000000, big}),
    big = call(B, {get, 100000 * 1000000}),
    Name = uname("enc"),
    {ok, P} = call(reg(), {create, {Name, "xy", #{z => 1, y => 2}}}),
    {ok, P} = lookup({Name, [$x, $y], maps:from_list([{y, 2}, {z, 1}])}),
    ok.

%% Hand-encoded variants of the same term sent on a raw distribution
%% connection (the BEAM would re-encode real terms).  Each variant must name
%% the same bucket and the same key.
raw_encoding_variants(_Config) ->
    Groups = encoding_groups(),
    %% the vectors themselves are right: each decodes to the expected term
    [[?assert(binary_to_term(<<131, V/binary>>) =:= Term) || V <- Vs] || {_, Vs, Term} <- Groups],
    Raw = ?RAW:connect(kvnode()),
    try
        B = new_bucket(),
        Base = uname("raw"),
        [begin
             NameOf = fun(V) -> <<104, 2, (enc(Base))/binary, V/binary>> end,
             [V1 | Rest] = Vs,
             {ok, P} = ?RAW:call(Raw, ?REG, <<104, 2, (enc(create))/binary, (NameOf(V1))/binary>>,
                                 ?RAW_CALL_MS),
             [?assertEqual({G, {ok, P}},
                           {G, ?RAW:call(Raw, ?REG, <<104, 2, (enc(create))/binary,
                                                      (NameOf(V))/binary>>,
                                         ?RAW_CALL_MS)}) || V <- Rest],
             [?assertEqual({G, {ok, P}},
                           {G, ?RAW:call(Raw, ?REG, <<104, 2, (enc(lookup))/binary,
                                                      (NameOf(V))/binary>>,
                                         ?RAW_CALL_MS)}) || V <- Vs],
             ?assertEqual({G, {ok, P}}, {G, lookup({Base, Term})}),
             %% bucket keys
             [ok = ?RAW:call(Raw, B, <<104, 3, (enc(put))/binary, V/binary, (enc({G, I}))/binary>>,
                             ?RAW_CALL_MS)
              || {I, V} <- lists:enumerate(Vs)],
             ?assertEqual({G, {G, length(Vs)}}, {G, call(B, {get, Term})}),
             [?assertEqual({G, {G, length(Vs)}},
                           {G, ?RAW:call(Raw, B, <<104, 2, (enc(get))/binary, V/binary>>,
                                         ?RAW_CALL_MS)})
              || V <- Vs],
             ?assertEqual({G, {G, length(Vs)}}, {G, call(B, {delete, Term})})
         end || {G, Vs, Term} <- Groups],
        [] = call(B, keys),
        %% and the connection still works
        {ok, _} = ?RAW:call(Raw, ?REG, <<104, 2, (enc(lookup))/binary, (enc({Base, abc}))/binary>>,
                            ?RAW_CALL_MS)
    after
        ?RAW:close(Raw)
    end.

%% The signals themselves, on a raw connection that did not negotiate
%% EXIT_PAYLOAD: LINK / UNLINK_ID and its ack, EXIT, MONITOR_P and
%% MONITOR_P_EXIT (the old forms, since that is what this peer can read).
raw_link_monitor_signals(_Config) ->
    Raw = #{pid := Me} = ?RAW:connect(kvnode()),
    try
        B = new_bucket(),
        %% link, unlink with an id: the ack names the id
        ok = ?RAW:send_ctrl(Raw, {1, Me, B}),
        ok = ?RAW:send_ctrl(Raw, {35, 4711, Me, B}),
        ?assertEqual({36, 4711, B, Me}, ?RAW:next_ctrl(Raw, 5000)),
        %% unlinked: its end sends nothing here
        R = erlang:monitor(process, B),
        exit(B, kill),
        killed = down(R),
        ?assertEqual(none, ?RAW:next_ctrl(Raw, 300)),
        %% linked: EXIT with the reason
        B2 = new_bucket(),
        ok = ?RAW:send_ctrl(Raw, {1, Me, B2}),
        [] = ?RAW:call(Raw, B2, enc(keys), ?RAW_CALL_MS),   % the LINK was handled (same connection)
        exit(B2, bye),
        ?assertEqual({3, B2, Me, bye}, ?RAW:next_ctrl(Raw, 5000)),
        %% link to a dead pid: EXIT noproc
        ok = ?RAW:send_ctrl(Raw, {1, Me, B2}),
        ?assertEqual({3, B2, Me, noproc}, ?RAW:next_ctrl(Raw, 5000)),
        %% monitor, then the end: MONITOR_P_EXIT
        B3 = new_bucket(),
        Ref = make_ref(),
        ok = ?RAW:send_ctrl(Raw, {19, Me, B3, Ref}),
        [] = ?RAW:call(Raw, B3, enc(keys), ?RAW_CALL_MS),
        exit(B3, {shutdown, x}),
        ?assertEqual({21, B3, Me, Ref, {shutdown, x}}, ?RAW:next_ctrl(Raw, 5000)),
        %% monitor of a dead pid / unknown name: noproc at once
        Ref2 = make_ref(),
        ok = ?RAW:send_ctrl(Raw, {19, Me, B3, Ref2}),
        ?assertEqual({21, B3, Me, Ref2, noproc}, ?RAW:next_ctrl(Raw, 5000)),
        Ref3 = make_ref(),
        ok = ?RAW:send_ctrl(Raw, {19, Me, nosuch, Ref3}),
        ?assertEqual({21, nosuch, Me, Ref3, noproc}, ?RAW:next_ctrl(Raw, 5000)),
        %% monitor then demonitor: nothing when it ends
        B4 = new_bucket(),
        Ref4 = make_ref(),
        ok = ?RAW:send_ctrl(Raw, {19, Me, B4, Ref4}),
        ok = ?RAW:send_ctrl(Raw, {20, Me, B4, Ref4}),
        ok = ?RAW:call(Raw, B4, enc({put, a, 1}), ?RAW_CALL_MS),   % both signals were handled
        exit(B4, kill),
        ?assertEqual(none, ?RAW:next_ctrl(Raw, 300)),
        %% monitor by name: the DOWN names the registered name
        Ref5 = make_ref(),
        ok = ?RAW:send_ctrl(Raw, {19, Me, ?REG, Ref5}),
        ok = ?RAW:send_ctrl(Raw, {20, Me, ?REG, Ref5}),
        {ok, _} = ?RAW:call(Raw, ?REG, enc({create, uname("rawmon")}), ?RAW_CALL_MS)
    after
        ?RAW:close(Raw)
    end.

encoding_groups() ->
    MapA = <<116, 2:32, 119, 1, "a", 97, 1, 119, 1, "b", 97, 2>>,
    MapB = <<116, 2:32, 100, 0, 1, "b", 98, 2:32, 115, 1, "a", 110, 1, 0, 1>>,
    Big40 = lists:seq(1, 40),
    BigMap = fun(Order) -> <<116, 40:32, << <<97, I, 97, I>> || I <- Order >>/binary>> end,
    [{atom, [<<100, 0, 3, "abc">>, <<115, 3, "abc">>, <<118, 0, 3, "abc">>, <<119, 3, "abc">>], abc},
     {atom_latin1, [<<100, 0, 1, 233>>, <<115, 1, 233>>, <<118, 0, 2, 195, 169>>,
                    <<119, 2, 195, 169>>], 'é'},
     {int_small, [<<97, 5>>, <<98, 5:32>>, <<110, 1, 0, 5>>, <<111, 1:32, 0, 5>>], 5},
     {int_zero, [<<97, 0>>, <<98, 0:32>>, <<110, 0, 0>>, <<110, 1, 0, 0>>], 0},
     {int_300, [<<98, 300:32>>, <<110, 2, 0, 44, 1>>, <<111, 2:32, 0, 44, 1>>,
                <<110, 3, 0, 44, 1, 0>>], 300},
     {int_neg, [<<98, -5:32/signed>>, <<110, 1, 1, 5>>, <<111, 1:32, 1, 5>>], -5},
     {int_max32, [<<98, 16#7fffffff:32>>, <<110, 4, 0, 255, 255, 255, 127>>], 16#7fffffff},
     {int_2_64, [<<110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1>>,
                 <<111, 9:32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1>>], 1 bsl 64},
     {string, [<<107, 0, 2, "ab">>, <<108, 2:32, 97, 97, 97, 98, 106>>,
               <<108, 1:32, 97, 97, 107, 0, 1, "b">>, <<108, 2:32, 98, 97:32, 98, 98:32, 106>>],
      "ab"},
     {nil, [<<106>>, <<107, 0, 0>>], []},
     {tuple, [<<104, 2, 97, 1, 97, 2>>, <<105, 2:32, 97, 1, 97, 2>>], {1, 2}},
     {map_order, [MapA, MapB], #{a => 1, b => 2}},
     {map_40, [BigMap(Big40), BigMap(lists:reverse(Big40)),
               BigMap([I || I <- Big40, I rem 2 =:= 0] ++ [I || I <- Big40, I rem 2 =:= 1])],
      maps:from_list([{I, I} || I <- Big40])},
     {binary, [<<109, 2:32, 1, 2>>, <<77, 2:32, 8, 1, 2>>], <<1, 2>>},
     {float, [<<70, 1.5/float>>, float_ext(1.5)], 1.5},
     {nested, [<<104, 3, 107, 0, 2, "ab", 100, 0, 3, "abc", MapA/binary>>,
               <<105, 3:32, 108, 2:32, 97, 97, 97, 98, 106, 119, 3, "abc", MapB/binary>>],
      {"ab", abc, #{a => 1, b => 2}}},
     {map_keys_encoded, [<<116, 2:32, 107, 0, 2, "ab", 97, 1, 100, 0, 3, "abc", 97, 2>>,
                         <<116, 2:32, 119, 3, "abc", 97, 2, 108, 2:32, 97, 97, 97, 98, 106, 97, 1>>],
      #{"ab" => 1, abc => 2}}].

float_ext(F) ->
    S = list_to_binary(io_lib:format("~.20e", [F])),
    <<99, S/binary, 0:((31 - byte_size(S)) * 8)>>.

%% --- sys ---------------------------------------------------------------------

sys_get_state(_Config) ->
    B = new_bucket(),
    #{} = Empty = sys:get_state(B),
    0 = map_size(Empty),
    Want = #{<<"milk">> => 3, eggs => [1, 2], {k} => #{n => 1.5}, 1 => one, 1.0 => one_float},
    [ok = call(B, {put, K, V}) || {K, V} <- maps:to_list(Want)],
    ?assertEqual(Want, sys:get_state(B)),
    %% the registry answers get_state too
    {_, _} = sys:get_state(reg()),
    ok.

sys_terminate_reason(_Config) ->
    Reasons = [normal, shutdown, {shutdown, bye}, boom, {error, [1, 2, 3]}],
    [begin
         Name = uname("term"),
         B = new_bucket(Name),
         R = erlang:monitor(process, B),
         ok = gen_server:stop(B, Reason, 5000),
         error = lookup(Name),
         ?assertEqual(Reason, down(R))
     end || Reason <- Reasons],
    %% sys:terminate directly
    Name = uname("systerm"),
    B = new_bucket(Name),
    R = erlang:monitor(process, B),
    ok = sys:terminate(B, because, 5000),
    error = lookup(Name),
    because = down(R),
    %% the registry is not stopped that way
    _ = (catch sys:terminate(reg(), normal, 5000)),
    {ok, _} = call(reg(), {create, uname("still")}),
    ok.

sys_get_status_and_others(_Config) ->
    B = new_bucket(),
    ok = call(B, {put, a, 1}),
    {status, B, {module, gen_server}, Items} = sys:get_status(B, 5000),
    true = is_list(Items),
    ?assert(lists:member(running, Items)),
    %% sys messages are answered
    ok = sys:suspend(B, 5000),
    ok = sys:resume(B, 5000),
    1 = call(B, {get, a}),
    _ = sys:statistics(B, get, 5000),
    _ = sys:trace(B, false, 5000),
    _ = sys:log(B, false, 5000),
    %% a fun cannot run on the C node: an error, no timeout, state unchanged
    {'EXIT', {Err, _}} = catch sys:replace_state(B, fun(S) -> S end, 5000),
    ?assertNotEqual(timeout, Err),
    #{a := 1} = sys:get_state(B),
    %% an unknown system message gets an error answer
    {ok, {error, _}} = gen:call(B, system, frobnicate, 5000),
    {status, _, _, _} = sys:get_status(reg(), 5000),
    ok.

%% --- process semantics -------------------------------------------------------

monitor_by_pid(_Config) ->
    B = new_bucket(),
    R1 = erlang:monitor(process, B),
    R2 = erlang:monitor(process, B),
    R3 = erlang:monitor(process, B),
    true = erlang:demonitor(R3),
    exit(B, bye),
    bye = down(R1),
    bye = down(R2),
    no_msg(fun({'DOWN', R, _, _, _}) -> R =:= R3; (_) -> false end, 300),
    ok.

monitor_by_name(_Config) ->
    N = kvnode(),
    R = erlang:monitor(process, {?REG, N}),
    %% no DOWN while it lives; a call through the name works
    _ = call({?REG, N}, count),
    true = erlang:demonitor(R, [flush]),
    R2 = erlang:monitor(process, {?REG, N}),
    no_msg(fun({'DOWN', X, _, _, _}) -> X =:= R2; (_) -> false end, 200),
    true = erlang:demonitor(R2, [flush]),
    %% net_kernel is a name too
    R3 = erlang:monitor(process, {net_kernel, N}),
    true = erlang:demonitor(R3, [flush]),
    ok.

%% By default a call's monitor is the caller's to drop, as with a BEAM
%% server: a request whose reply is taken without demonitor keeps its
%% monitor, and no DOWN comes while the server lives.  The later call is the
%% barrier: the server sent anything for the first request before its reply.
call_monitor_outlives_reply(_Config) ->
    Reg = reg(),
    ReqId = gen_server:send_request(Reg, count),
    N = receive {[alias | ReqId], C} when is_integer(C) -> C
        after 5000 -> ct:fail(no_reply)
        end,
    true = is_integer(N),
    _ = call(Reg, count),
    {messages, Msgs} = process_info(self(), messages),
    ?assertEqual([], [M || {'DOWN', R, _, _, _} = M <- Msgs, R =:= ReqId]),
    {monitors, Mons} = process_info(self(), monitors),
    ?assert(lists:member({process, {?REG, kvnode()}}, Mons)),
    true = erlang:demonitor(ReqId, [flush]),
    ok.

monitor_dead_or_unknown_noproc(_Config) ->
    N = kvnode(),
    B = new_bucket(),
    ok = gen_server:stop(B),
    T0 = erlang:monotonic_time(millisecond),
    R = erlang:monitor(process, B),
    receive {'DOWN', R, process, B, noproc} -> ok after 3000 -> ct:fail(no_noproc_pid) end,
    R2 = erlang:monitor(process, {no_such_name, N}),
    receive {'DOWN', R2, process, {no_such_name, N}, noproc} -> ok
    after 3000 -> ct:fail(no_noproc_name)
    end,
    %% a call to an unknown name exits noproc at once
    {'EXIT', {noproc, _}} = (catch gen_server:call({no_such_name, N}, hello, 30000)),
    %% a pid of that node that never existed
    Fake = c_node_pid(N, 16#7fffffe),
    R3 = erlang:monitor(process, Fake),
    noproc = down(R3, 3000),
    ct:log("noproc DOWNs after ~p ms", [erlang:monotonic_time(millisecond) - T0]),
    ok.

%% A pid of the C node with another id (same creation as a real one).
c_node_pid(_N, Id) ->
    B = new_bucket(),
    <<131, 88, Rest/binary>> = term_to_binary(B, [{minor_version, 2}]),
    NameLen = byte_size(Rest) - 12,
    <<NodeBin:NameLen/binary, _Id:32, _Ser:32, Cr:32>> = Rest,
    binary_to_term(<<131, 88, NodeBin/binary, Id:32, 0:32, Cr:32>>).

call_stopped_bucket_noproc(_Config) ->
    B = new_bucket(),
    ok = gen_server:stop(B),
    T0 = erlang:monotonic_time(millisecond),
    {'EXIT', {noproc, {gen_server, call, _}}} = (catch gen_server:call(B, keys, 30000)),
    {'EXIT', {noproc, _}} = (catch gen_server:call(B, {get, a}, 30000)),
    Ms = erlang:monotonic_time(millisecond) - T0,
    ct:log("noproc after ~p ms", [Ms]),
    ?assert(Ms < 5000),
    %% a cast to it is silently dropped
    ok = gen_server:cast(B, {put, a, b}).

link_exit(_Config) ->
    process_flag(trap_exit, true),
    %% link, then the bucket ends with a reason
    B = new_bucket(),
    true = link(B),
    exit(B, boom),
    receive {'EXIT', B, boom} -> ok after 5000 -> ct:fail(no_exit) end,
    %% link, then gen_server:stop
    B2 = new_bucket(),
    true = link(B2),
    ok = gen_server:stop(B2, {shutdown, x}, 5000),
    receive {'EXIT', B2, {shutdown, x}} -> ok after 5000 -> ct:fail(no_exit2) end,
    %% link, then kill
    B3 = new_bucket(),
    true = link(B3),
    exit(B3, kill),
    receive {'EXIT', B3, killed} -> ok after 5000 -> ct:fail(no_exit3) end,
    %% a linked process that dies takes the bucket with it (bucket does not
    %% trap exits)
    B4 = new_bucket(),
    R4 = erlang:monitor(process, B4),
    P = spawn(fun() -> link(B4), receive go -> exit(crashed) end end),
    true = ?LIB:wait_until(fun() -> {links, L} = process_info(P, links), L =:= [B4] end, 5000),
    _ = call(B4, keys),  % the LINK has been processed
    P ! go,
    crashed = down(R4),
    %% a linked process exiting with reason kill: the bucket ends with kill
    %% (only exit/2 with kill is untrappable and turns into killed)
    B6 = new_bucket(),
    R6 = erlang:monitor(process, B6),
    P6 = spawn(fun() -> link(B6), receive go -> exit(kill) end end),
    true = ?LIB:wait_until(fun() -> {links, L} = process_info(P6, links), L =:= [B6] end, 5000),
    _ = call(B6, keys),
    P6 ! go,
    kill = down(R6),
    %% link to a dead bucket: EXIT noproc
    true = link(B4),
    receive {'EXIT', B4, noproc} -> ok after 5000 -> ct:fail(no_exit_noproc) end,
    %% a process that exits normally does not take the bucket along
    B5 = new_bucket(),
    P5 = spawn(fun() -> link(B5), receive go -> ok end end),
    true = ?LIB:wait_until(fun() -> {links, L} = process_info(P5, links), L =:= [B5] end, 5000),
    _ = call(B5, keys),
    P5 ! go,
    _ = call(B5, keys),
    true = ?LIB:wait_until(fun() -> not is_process_alive(P5) end, 5000),
    [] = call(B5, keys),
    ok.

unlink_acked(_Config) ->
    process_flag(trap_exit, true),
    B = new_bucket(),
    true = link(B),
    true = unlink(B),
    R = erlang:monitor(process, B),
    exit(B, kill),
    killed = down(R),
    no_msg(fun({'EXIT', X, _}) -> X =:= B; (_) -> false end, 500),
    %% link / unlink many times, then a link that stays
    B2 = new_bucket(),
    [begin true = link(B2), true = unlink(B2) end || _ <- lists:seq(1, 50)],
    true = link(B2),
    exit(B2, bye),
    receive {'EXIT', B2, bye} -> ok after 5000 -> ct:fail(no_exit) end,
    %% unlink, then the bucket is stopped: still no EXIT
    B3 = new_bucket(),
    true = link(B3),
    true = unlink(B3),
    ok = gen_server:stop(B3, boom, 5000),
    no_msg(fun({'EXIT', X, _}) -> X =:= B3; (_) -> false end, 300),
    ok.

exit_signals(_Config) ->
    B = new_bucket(),
    ok = call(B, {put, k, v}),
    R = erlang:monitor(process, B),
    exit(B, normal),
    v = call(B, {get, k}),
    true = erlang:is_process_alive(self()),
    no_msg(fun({'DOWN', X, _, _, _}) -> X =:= R; (_) -> false end, 100),
    exit(B, other),
    other = down(R),
    B2 = new_bucket(),
    R2 = erlang:monitor(process, B2),
    exit(B2, kill),
    killed = down(R2),
    B3 = new_bucket(),
    R3 = erlang:monitor(process, B3),
    exit(B3, {complex, [reason], #{}}),
    {complex, [reason], #{}} = down(R3),
    %% an exit signal to a dead bucket is harmless
    exit(B3, kill),
    ok.

%% The name goes before the DOWN, the EXIT and the stop reply leave the node.
name_leaves_before_down(_Config) ->
    process_flag(trap_exit, true),
    Ways = [stop, {stop, boom}, kill, {exit, bye}, sys_terminate, link_exit],
    [begin
         Name = uname("order"),
         B = new_bucket(Name),
         case Way of
             stop ->
                 ok = gen_server:stop(B),
                 error = lookup(Name);
             {stop, Reason} ->
                 ok = gen_server:stop(B, Reason, 5000),
                 error = lookup(Name);
             sys_terminate ->
                 ok = sys:terminate(B, x, 5000),
                 error = lookup(Name);
             link_exit ->
                 true = link(B),
                 exit(B, gone),
                 receive {'EXIT', B, gone} -> ok after 5000 -> ct:fail(no_exit) end,
                 error = lookup(Name);
             _ ->
                 R = erlang:monitor(process, B),
                 case Way of kill -> exit(B, kill); {exit, Why} -> exit(B, Why) end,
                 _ = down(R),
                 error = lookup(Name)
         end
     end || _ <- lists:seq(1, 15), Way <- Ways],
    %% the same from many processes at once
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [begin
                                    Name = uname("order_p"),
                                    B = new_bucket(Name),
                                    R = erlang:monitor(process, B),
                                    exit(B, kill),
                                    killed = down(R),
                                    error = lookup(Name)
                                end || _ <- lists:seq(1, 20)],
                               Self ! {done, self()}
                       end) || _ <- lists:seq(1, 10)],
    [receive {done, P} -> ok; {'EXIT', P, Why} -> ct:fail({worker, Why}) after 30000 -> ct:fail(timeout) end
     || P <- Pids],
    ok.

%% A peer holding monitors (and name monitors) on a bucket is killed -9:
%% the C node drops them and carries on.
peer_monitors_dropped_on_kill9(_Config) ->
    Name = uname("peermon"),
    B = new_bucket(Name),
    N = kvnode(),
    Self = self(),
    with_peer(fun(PNode) ->
        _W = spawn(PNode, fun() ->
                                  [erlang:monitor(process, B) || _ <- lists:seq(1, 20)],
                                  erlang:monitor(process, {?REG, N}),
                                  _ = gen_server:call(B, keys), % monitors are in place
                                  Self ! {monitoring, self()},
                                  receive after infinity -> ok end
                          end),
        receive {monitoring, _} -> ok after 10000 -> ct:fail(peer_not_monitoring) end,
        kill9(PNode)
    end),
    %% the bucket works, and its end is reported to the remaining watchers
    ok = call(B, {put, k, v}),
    v = call(B, {get, k}),
    {ok, B} = lookup(Name),
    R = erlang:monitor(process, B),
    ok = gen_server:stop(B, bye, 5000),
    bye = down(R),
    error = lookup(Name),
    pong = net_adm:ping(N),
    ok.

%% A process on a peer linked to a bucket; the peer is killed -9: the bucket
%% ends with noconnection, as on the BEAM.
peer_link_noconnection_on_kill9(_Config) ->
    Name = uname("peerlink"),
    B = new_bucket(Name),
    Other = new_bucket(),
    Self = self(),
    R = erlang:monitor(process, B),
    with_peer(fun(PNode) ->
        spawn(PNode, fun() ->
                             true = link(B),
                             _ = gen_server:call(B, keys),
                             Self ! linked,
                             receive after infinity -> ok end
                     end),
        receive linked -> ok after 10000 -> ct:fail(peer_not_linked) end,
        kill9(PNode),
        noconnection = down(R, 10000)
    end),
    error = lookup(Name),
    %% an unrelated bucket is untouched
    [] = call(Other, keys),
    ok.

%% --- other nodes -------------------------------------------------------------

%% The pid lives on a node the C node has never talked to: it connects on
%% demand, monitors, and the name goes when that node is killed -9.
register_on_unconnected_peer_kill9(_Config) ->
    with_peer(fun(PNode) ->
        P = sleeper(PNode),
        Name = uname("third"),
        ok = call(reg(), {register, Name, P}),
        {ok, P} = lookup(Name),
        %% the monitor is real: killing the process alone removes the name
        P0 = sleeper(PNode),
        N0 = uname("third0"),
        ok = call(reg(), {register, N0, P0}),
        exit(P0, kill),
        true = wait_lookup_error(N0, 5000),
        {ok, P} = lookup(Name),
        %% many names on that node, several per process
        Many = [begin
                    Q = sleeper(PNode),
                    [begin Nm = uname("third_many"), ok = call(reg(), {register, Nm, Q}), Nm end
                     || _ <- lists:seq(1, 4)]
                end || _ <- lists:seq(1, 50)],
        C1 = call(reg(), count),
        T0 = erlang:monotonic_time(millisecond),
        kill9(PNode),
        true = wait_lookup_error(Name, 5000),
        [error = lookup(Nm) || Nm <- lists:append(Many)],
        ?assertEqual(C1 - 201, call(reg(), count)),
        ct:log("name gone ~p ms after the kill", [erlang:monotonic_time(millisecond) - T0])
    end).

%% A peer registers its own process (the call comes from the peer), then the
%% peer is killed -9.
peer_registers_own_process_kill9(_Config) ->
    N = kvnode(),
    with_peer(fun(PNode) ->
        Name = uname("selfreg"),
        P = sleeper(PNode),
        ok = rpc:call(PNode, gen_server, call, [{?REG, N}, {register, Name, P}]),
        {ok, P} = lookup(Name),
        {ok, P} = rpc:call(PNode, gen_server, call, [{?REG, N}, {lookup, Name}]),
        %% the peer's own bucket use
        {ok, B} = rpc:call(PNode, gen_server, call, [{?REG, N}, {create, <<Name/binary, "_b">>}]),
        ok = rpc:call(PNode, gen_server, call, [B, {put, from_peer, 1}]),
        kill9(PNode),
        true = wait_lookup_error(Name, 5000),
        %% the bucket belongs to the C node and stays
        {ok, B} = lookup(<<Name/binary, "_b">>),
        1 = call(B, {get, from_peer})
    end).

%% The pid's node does not exist or cannot be reached: the name goes.
register_on_unreachable_node(_Config) ->
    Host = ?LIB:host(),
    Cases = [list_to_atom(?LIB:unique("nosuchnode") ++ "@" ++ Host),
             'ghost@nohost-kvtest.invalid',
             'ghost@127.0.0.1'],
    [begin
         Name = uname("ghost"),
         ok = call(reg(), {register, Name, ?RAW:pid(NodeName, 42)}),
         ?assertEqual({NodeName, true}, {NodeName, wait_lookup_error(Name, 5000)})
     end || NodeName <- Cases],
    %% and again, now that the C node knows those node names
    [begin
         Name = uname("ghost2"),
         ok = call(reg(), {register, Name, ?RAW:pid(NodeName, 43)}),
         ?assertEqual({NodeName, true}, {NodeName, wait_lookup_error(Name, 5000)})
     end || NodeName <- Cases],
    %% a node name without a host: refused or gone, never kept
    Bad = uname("noat"),
    case call(reg(), {register, Bad, ?RAW:pid(noat, 1)}) of
        ok -> true = wait_lookup_error(Bad, 5000);
        {error, _} -> error = lookup(Bad)
    end,
    %% a node that exists but refuses us (another cookie): the handshake
    %% fails and the name goes
    {ok, Peer, PNode} = peer:start(#{name => ?LIB:unique("kvcookie"),
                                     connection => standard_io,
                                     args => ["-setcookie", "not_the_kv_cookie"]}),
    try
        Q = peer:call(Peer, erlang, spawn, [timer, sleep, [infinity]]),
        PNode = node(Q),
        NQ = uname("badcookie"),
        ok = call(reg(), {register, NQ, Q}),
        true = wait_lookup_error(NQ, 10000)
    after
        catch peer:stop(Peer)
    end,
    %% the registry's monitor bookkeeping is intact: several monitors live
    %% at once, each fires on its own
    Ps = [sleeper() || _ <- lists:seq(1, 4)],
    Names = [begin Nm = uname("ghost_ok"), ok = call(reg(), {register, Nm, P}), Nm end || P <- Ps],
    B = new_bucket(),
    Refs = [erlang:monitor(process, B) || _ <- lists:seq(1, 3)],
    [{ok, P} = lookup(Nm) || {Nm, P} <- lists:zip(Names, Ps)],
    [P1 | Rest] = Ps,
    [N1 | RestN] = Names,
    exit(P1, kill),
    true = wait_lookup_error(N1, 5000),
    [{ok, P} = lookup(Nm) || {Nm, P} <- lists:zip(RestN, Rest)],
    exit(B, bye),
    [bye = down(R) || R <- Refs],
    [P ! stop || P <- Rest],
    [true = wait_lookup_error(Nm, 5000) || Nm <- RestN],
    ok.

%% --- scale ---------------------------------------------------------------------

many_buckets(_Config) ->
    Count = 20000,
    C0 = call(reg(), count),
    Base = uname("many"),
    Names = [{Base, I} || I <- lists:seq(1, Count)],
    T0 = erlang:monotonic_time(millisecond),
    [gen_server:cast(reg(), {create, Nm}) || Nm <- Names],
    Pids = [begin {ok, P} = lookup(Nm), P end || Nm <- Names],
    T1 = erlang:monotonic_time(millisecond),
    ?assertEqual(Count, length(lists:usort(Pids))),
    ?assertEqual(C0 + Count, call(reg(), count)),
    %% each bucket is its own: tag it by cast, read the tag back
    Pairs = lists:zip(Names, Pids),
    [gen_server:cast(P, {put, owner, Nm}) || {Nm, P} <- Pairs],
    [Nm = call(P, {get, owner}) || {Nm, P} <- Pairs],
    %% lookups still find their own after the puts
    [{ok, P} = lookup(Nm) || {Nm, P} <- lists:sublist(Pairs, 1, 500)],
    T2 = erlang:monotonic_time(millisecond),
    ct:log("20k creates+lookups ~p ms, casts+gets ~p ms", [T1 - T0, T2 - T1]),
    %% clean up: kill them all; the names go
    [exit(P, kill) || P <- Pids],
    true = ?LIB:wait_until(fun() -> call(reg(), count) =:= C0 end, 20000),
    error = lookup(hd(Names)),
    ok.

concurrent_callers(_Config) ->
    Shared = new_bucket(),
    Self = self(),
    Workers = 50,
    Ops = 200,
    Pids = [spawn_link(fun() ->
                               Own = new_bucket(),
                               [begin
                                    ok = call(Shared, {put, {W, I}, {W, I, self()}}),
                                    ok = call(Own, {put, I, W}),
                                    {W, I, _} = call(Shared, {get, {W, I}}),
                                    W = call(Own, {get, I})
                                end || I <- lists:seq(1, Ops)],
                               Ops = length(call(Own, keys)),
                               Self ! {done, self()}
                       end) || W <- lists:seq(1, Workers)],
    [receive {done, P} -> ok after 60000 -> ct:fail({worker_timeout, P}) end || P <- Pids],
    ?assertEqual(Workers * Ops, length(call(Shared, keys))),
    ?assertEqual(Workers * Ops, map_size(sys:get_state(Shared))),
    ok.

%% --- Elixir ----------------------------------------------------------------------

elixir_iex_session(Config) ->
    Elixir = case os:find_executable("elixir") of
                 false -> {skip, no_elixir};
                 E -> E
             end,
    case Elixir of
        {skip, _} = Skip -> Skip;
        _ ->
            Script = filename:join(?config(data_dir, Config), "iex_session.exs"),
            Args = ["--sname", ?LIB:unique("iex"), "--cookie", atom_to_list(erlang:get_cookie()),
                    Script, atom_to_list(kvnode())],
            Port = open_port({spawn_executable, Elixir},
                             [{args, Args}, exit_status, stderr_to_stdout, binary,
                              {line, 4096}, use_stdio]),
            {os_pid, OsPid} = erlang:port_info(Port, os_pid),
            Deadline = erlang:monotonic_time(millisecond) + 60000,
            {Status, Lines} = collect_port(Port, OsPid, Deadline, []),
            ct:log("elixir exit ~p; output:~n~s", [Status, [[L, $\n] || L <- Lines]]),
            ?assertEqual(0, Status),
            ?assert(lists:member(<<"ELIXIR OK">>, Lines)),
            ok
    end.

collect_port(Port, OsPid, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {_, L}}} -> collect_port(Port, OsPid, Deadline, [L | Acc]);
        {Port, {exit_status, S}} -> {S, lists:reverse(Acc)}
    after Left ->
        os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        catch port_close(Port),
        {timeout, lists:reverse(Acc)}
    end.

%% --- shutdown ----------------------------------------------------------------------

%% SIGTERM: every process ends with shutdown, watchers are told (DOWN and
%% EXIT before nodedown), then the node goes.
sigterm_shutdown(_Config) ->
    process_flag(trap_exit, true),
    {ok, H} = ?LIB:start([]),
    N = node_of(H),
    Stopped = try
        Reg = ?LIB:registry(N),
        {ok, B1} = call(Reg, {create, <<"one">>}),
        {ok, B2} = call(Reg, {create, <<"two">>}),
        ok = call(B1, {put, k, v}),
        R1 = erlang:monitor(process, B1),
        RN = erlang:monitor(process, {?REG, N}),
        true = link(B2),
        %% a watcher on another node is told too
        {_, _} = Peer = ?LIB:start_peer("kvwatch",
                                        ["-pa", filename:dirname(code:which(?MODULE))]),
        {_, PNode} = Peer,
        Self = self(),
        try
            spawn(PNode, fun() ->
                                 R = erlang:monitor(process, B1),
                                 _ = gen_server:call(B1, keys),
                                 Self ! peer_ready,
                                 receive {'DOWN', R, _, _, Why} -> Self ! {peer_down, Why}
                                 after 30000 -> Self ! {peer_down, timeout}
                                 end
                         end),
            receive peer_ready -> ok after 10000 -> ct:fail(peer_not_ready) end,
            _ = call(B1, keys),  % all signals so far have reached the node
            erlang:monitor_node(N, true),
            S = ?LIB:stop(H),
            %% leave everything in the mailbox: the order is the point
            true = ?LIB:wait_until(fun() ->
                                           {messages, M} = process_info(self(), messages),
                                           lists:member({nodedown, N}, M)
                                   end, 10000),
            {messages, Msgs} = process_info(self(), messages),
            ct:log("messages: ~p", [Msgs]),
            Idx = fun(Pred) -> index_of(Pred, Msgs) end,
            DownB = Idx(fun({'DOWN', R, process, _, shutdown}) -> R =:= R1; (_) -> false end),
            DownN = Idx(fun({'DOWN', R, process, {?REG, _}, shutdown}) -> R =:= RN; (_) -> false end),
            ExitB = Idx(fun({'EXIT', P, shutdown}) -> P =:= B2; (_) -> false end),
            NodeDown = Idx(fun({nodedown, X}) -> X =:= N; (_) -> false end),
            ?assert(is_integer(DownB) andalso DownB < NodeDown),
            ?assert(is_integer(DownN) andalso DownN < NodeDown),
            ?assert(is_integer(ExitB) andalso ExitB < NodeDown),
            receive {peer_down, PW} -> ?assertEqual(shutdown, PW)
            after 10000 -> ct:fail(peer_not_told)
            end,
            S
        after
            ?LIB:stop_peer(Peer)
        end
    catch C:E:St ->
        catch ?LIB:stop(H),
        erlang:raise(C, E, St)
    end,
    ?assertEqual(0, Stopped),
    %% epmd forgot it
    [Alive, _] = string:split(atom_to_list(N), "@"),
    {ok, Names} = erl_epmd:names(),
    ?assertNot(lists:keymember(Alive, 1, Names)),
    ok.

index_of(Pred, L) -> index_of(Pred, L, 1).
index_of(_, [], _) -> undefined;
index_of(Pred, [X | T], I) -> case Pred(X) of true -> I; false -> index_of(Pred, T, I + 1) end.
