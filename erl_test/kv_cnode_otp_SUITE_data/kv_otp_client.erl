%% Client code that kv_cnode_otp_SUITE runs on peer nodes of other OTP
%% releases: compiled there by that release's own erlc, called with erpc
%% from the CT node (or run with -eval where the peer cannot reach the CT
%% node, as over TLS).  Every function returns what it saw; the suite
%% checks it.
-module(kv_otp_client).
-export([guide/1, bucket_calls/1, sys_calls/1, stop_reasons/1, monitors/1,
         links/1, late_reply/1, requests/1, hold_name/2, tls_main/1, connected/1]).

-define(REG(N), {'Elixir.KV.Registry', N}).

uniq(P) -> <<P/binary, (integer_to_binary(erlang:unique_integer([positive])))/binary>>.

%% The guide's KV.RegistryTest cases.
guide(KV) ->
    R = ?REG(KV),
    Name = uniq(<<"shopping">>),
    E = gen_server:call(R, {lookup, Name}),
    ok = gen_server:cast(R, {create, Name}),
    {ok, B} = gen_server:call(R, {lookup, Name}),
    {ok, B2} = gen_server:call(R, {create, Name}),
    ok = gen_server:call(B, {put, <<"milk">>, 1}),
    One = gen_server:call(B, {get, <<"milk">>}),
    Ref = monitor(process, B),
    ok = gen_server:stop(B),
    Down = receive {'DOWN', Ref, process, B, Why} -> Why after 5000 -> no_down end,
    After = gen_server:call(R, {lookup, Name}),
    {ok, C} = gen_server:call(R, {create, <<Name/binary, "-crash">>}),
    Ref2 = monitor(process, C),
    exit(C, shutdown),
    Down2 = receive {'DOWN', Ref2, process, C, W2} -> W2 after 5000 -> no_down end,
    After2 = gen_server:call(R, {lookup, <<Name/binary, "-crash">>}),
    #{lookup_absent => E, same => B =:= B2, node => node(B), get => One,
      down => Down, after_stop => After, down_shutdown => Down2, after_exit => After2}.

bucket_calls(KV) ->
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"b">>)}),
    Missing = gen_server:call(B, {get, k}),
    ok = gen_server:call(B, {put, k, <<"v">>}),
    gen_server:cast(B, {put, m, #{x => [1, 2.5]}}),
    M = gen_server:call(B, {get, m}),
    Keys = lists:sort(gen_server:call(B, keys)),
    Del = gen_server:call(B, {delete, k}),
    Del2 = gen_server:call(B, {delete, k}),
    Unknown = gen_server:call(B, nonsense),
    RegUnknown = gen_server:call(?REG(KV), nonsense),
    Me = uniq(<<"me">>),
    Reg = gen_server:call(?REG(KV), {register, Me, self()}),
    Again = gen_server:call(?REG(KV), {register, Me, self()}),
    Unreg = gen_server:call(?REG(KV), {unregister, Me}),
    Count = gen_server:call(?REG(KV), count),
    #{missing => Missing, m => M, keys => Keys, delete => Del, delete_again => Del2,
      unknown => Unknown, reg_unknown => RegUnknown, register => Reg,
      register_again => Again, unregister => Unreg, count_is_int => is_integer(Count)}.

sys_calls(KV) ->
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"s">>)}),
    ok = gen_server:call(B, {put, <<"milk">>, 3}),
    State = sys:get_state(B),
    State2 = sys:get_state(B, 5000),
    Status = sys:get_status(B),
    Susp = sys:suspend(B),
    Res = sys:resume(B),
    Replace = try sys:replace_state(B, fun(S) -> S end) catch C:E -> {C, E} end,
    RegState = try sys:get_state(?REG(KV)) of S -> {ok, is_map(S) orelse S} catch C2:E2 -> {C2, E2} end,
    Term = sys:terminate(B, normal),
    Gone = catch sys:get_state(B),
    #{state => State, state2 => State2, status => Status, suspend => Susp, resume => Res,
      replace => Replace, reg_state => RegState, terminate => Term,
      gone => element(1, element(2, Gone))}.

%% gen_server:stop/1,3 with each kind of reason: what the caller gets, and
%% what a monitor sees.
stop_reasons(KV) ->
    [begin
         {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"st">>)}),
         Ref = monitor(process, B),
         Got = try gen_server:stop(B, Reason, 5000) catch C:E -> {C, E} end,
         Down = receive {'DOWN', Ref, process, B, W} -> W after 5000 -> no_down end,
         {Reason, Got, Down}
     end || Reason <- [normal, shutdown, {shutdown, bye}, other]].

monitors(KV) ->
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"m">>)}),
    R1 = monitor(process, B),
    RN = monitor(process, ?REG(KV)),
    true = demonitor(RN, [flush]),
    ok = gen_server:stop(B, {shutdown, x}, 5000),
    D1 = receive {'DOWN', R1, process, B, W} -> W after 5000 -> no_down end,
    T0 = erlang:monotonic_time(millisecond),
    R2 = monitor(process, B),
    D2 = receive {'DOWN', R2, process, B, W2} -> W2 after 5000 -> no_down end,
    R3 = monitor(process, {no_such_name, KV}),
    D3 = receive {'DOWN', R3, process, _, W3} -> W3 after 5000 -> no_down end,
    Dead = try gen_server:call(B, keys, 5000) catch exit:{Why, _} -> Why end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    NoLeft = receive Any -> {leftover, Any} after 0 -> none end,
    #{by_pid => D1, dead_pid => D2, by_name_absent => D3, call_dead => Dead,
      fast => Ms < 2000, leftover => NoLeft}.

links(KV) ->
    process_flag(trap_exit, true),
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"l">>)}),
    true = link(B),
    true = exit(B, normal),                     % ignored
    Alive = gen_server:call(B, keys),
    true = exit(B, kill),
    E1 = receive {'EXIT', B, W} -> W after 5000 -> no_exit end,
    {ok, C} = gen_server:call(?REG(KV), {create, uniq(<<"l2">>)}),
    true = link(C),
    true = unlink(C),
    ok = gen_server:stop(C),
    E2 = receive {'EXIT', C, W2} -> {got, W2} after 500 -> none end,
    {ok, D} = gen_server:call(?REG(KV), {create, uniq(<<"l3">>)}),
    true = link(D),
    ok = gen_server:stop(D, {shutdown, z}, 5000),
    E3 = receive {'EXIT', D, W3} -> W3 after 5000 -> no_exit end,
    process_flag(trap_exit, false),
    #{alive => Alive, killed => E1, unlinked => E2, linked_stop => E3}.

%% Calls that give up before the reply comes (timeout 0): the late replies
%% must not reach the mailbox (the BEAM sends them to the call's alias,
%% which the caller has deactivated).  A later call on the same connection
%% is answered after them, so when it returns they have arrived or not.
late_reply(KV) ->
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"t">>)}),
    Results = [catch gen_server:call(B, keys, 0) || _ <- lists:seq(1, 50)],
    Timeouts = length([x || {'EXIT', {timeout, _}} <- Results]),
    [] = gen_server:call(B, keys),
    %% send_request / receive_response with a timeout of 0 likewise
    Req = gen_server:send_request(B, keys),
    TO = gen_server:receive_response(Req, 0),
    [] = gen_server:call(B, keys),
    Left = flush([]),
    #{timeouts => Timeouts, send_request_timeout => TO, leftover => Left}.

flush(Acc) -> receive M -> flush([M | Acc]) after 0 -> lists:reverse(Acc) end.

requests(KV) ->
    {ok, B} = gen_server:call(?REG(KV), {create, uniq(<<"r">>)}),
    ok = gen_server:call(B, {put, a, 1}),
    R1 = gen_server:send_request(B, {get, a}),
    W1 = gen_server:wait_response(R1, 5000),
    R2 = gen_server:send_request(B, keys),
    W2 = gen_server:receive_response(R2, 5000),
    R3 = gen_server:send_request(B, {get, a}),
    W3 = receive Msg -> gen_server:check_response(Msg, R3) after 5000 -> none end,
    Col0 = gen_server:reqids_new(),
    Col1 = gen_server:send_request(B, {get, a}, one, Col0),
    Col2 = gen_server:send_request(?REG(KV), count, two, Col1),
    {Ra, La, Col3} = gen_server:receive_response(Col2, 5000, true),
    {Rb, Lb, Col4} = gen_server:receive_response(Col3, 5000, true),
    Size = gen_server:reqids_size(Col4),
    Labels = lists:sort([{La, element(1, Ra)}, {Lb, element(1, Rb)}]),
    #{wait => W1, receive_response => W2, check => W3, labels => Labels, size => Size}.

%% A process that registers Name -> itself and waits (killed with its node).
hold_name(KV, Name) ->
    Parent = self(),
    P = spawn(fun() ->
                      Parent ! {self(), gen_server:call(?REG(KV), {register, Name, self()})},
                      receive stop -> ok end
              end),
    receive {P, R} -> {R, P} after 5000 -> timeout end.

connected(Node) -> lists:member(Node, nodes(hidden)) orelse lists:member(Node, nodes()).

%% Run with -eval on a TLS peer: prints TLS OK and halts 0, or the failure.
tls_main(KVs) ->
    KV = list_to_atom(KVs),
    Out = try
              pong = net_adm:ping(KV),
              #{get := 1, same := true} = guide(KV),
              #{state := #{<<"milk">> := 3}} = sys_calls(KV),
              io_lib:format("TLS OK ~p", [init:get_argument(proto_dist)])
          catch C:E:St -> io_lib:format("TLS FAIL ~p:~p ~p", [C, E, St])
          end,
    io:format("~s~n", [Out]),
    halt(case lists:prefix("TLS OK", lists:flatten(Out)) of true -> 0; false -> 1 end).
