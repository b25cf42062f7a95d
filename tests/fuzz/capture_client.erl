%% capture_client.erl - the BEAM side of capture_frames.py.
%% Talks to a running kv_cnode the way users and OTP itself do, so that the
%% proxy records every kind of frame a real BEAM sends: REG_SEND and
%% SEND_SENDER (gen_server calls and casts, plain sends), their seq_trace
%% _TT forms, MONITOR_P / DEMONITOR_P by pid and by name, LINK, UNLINK_ID,
%% PAYLOAD_EXIT, PAYLOAD_EXIT2 (with and without a trace token),
%% PAYLOAD_MONITOR_P_EXIT, GROUP_LEADER, and replies carrying every term
%% type.  Each step is guarded: a surprise is printed, not fatal, because the
%% point is the bytes on the wire.
-module(capture_client).
-export([main/1]).

main([KvS]) ->
    Kv = list_to_atom(KvS),
    R = {'Elixir.KV.Registry', Kv},
    true = net_kernel:connect_node(Kv),
    step(count0, fun() -> gen_server:call(R, count) end),
    step(lookup_missing, fun() -> gen_server:call(R, {lookup, <<"shopping">>}) end),
    step(cast_create, fun() -> gen_server:cast(R, {create, <<"shopping">>}) end),
    {ok, B} = gen_server:call(R, {create, <<"shopping">>}),
    step(create_atom_name, fun() -> gen_server:call(R, {create, shopping}) end),
    step(create_list_name, fun() -> gen_server:call(R, {create, "shopping"}) end),
    step(create_int_name, fun() -> gen_server:call(R, {create, 123456789012345678901234567890}) end),
    step(create_tuple_name, fun() -> gen_server:call(R, {create, {a, 1, 2.5, #{k => v}}}) end),
    step(lookup, fun() -> gen_server:call(R, {lookup, <<"shopping">>}) end),
    Values = [3, -1, 256, -2147483649, 1 bsl 70, -(1 bsl 300), 2.5, -0.0, milk, 'ünïcode',
              <<"bytes">>, <<1:3>>, binary:copy(<<"x">>, 70000), "a string", [1, 2 | 3],
              {}, {a, {b, {c, [d]}}}, #{}, #{a => 1, <<"b">> => [2], {c} => #{d => e}},
              self(), make_ref(), fun lists:map/2, fun(X) -> {X, B} end, nested(40),
              erlang:list_to_tuple(lists:seq(1, 300)), lists:seq(1, 300),
              [{K, K * K} || K <- lists:seq(1, 20)]],
    lists:foldl(fun(V, I) ->
                        step({put, I}, fun() -> gen_server:call(B, {put, {key, I}, V}) end),
                        step({get, I}, fun() -> V = gen_server:call(B, {get, {key, I}}) end),
                        I + 1
                end, 0, Values),
    step(cast_put, fun() -> gen_server:cast(B, {put, casted, yes}) end),
    step(keys, fun() -> gen_server:call(B, keys) end),
    step(delete, fun() -> gen_server:call(B, {delete, {key, 0}}) end),
    step(get_missing, fun() -> nil = gen_server:call(B, {get, {key, 0}}) end),
    step(bucket_unknown, fun() -> gen_server:call(B, what) end),
    step(registry_unknown, fun() -> gen_server:call(R, {what, ever}) end),
    step(get_state, fun() -> sys:get_state(B) end),
    step(get_status, fun() -> sys:get_status(B) end),
    step(suspend, fun() -> sys:suspend(B), sys:resume(B) end),
    step(registry_state, fun() -> sys:get_state(R) end),
    %% a process of ours registered by name: the registry monitors it
    P = spawn(fun() -> receive stop -> exit(bye) end end),
    step(register, fun() -> ok = gen_server:call(R, {register, proc1, P}) end),
    step(register_again, fun() -> gen_server:call(R, {register, proc1, self()}) end),
    step(register_other, fun() -> gen_server:call(R, {register, proc2, self()}) end),
    step(unregister, fun() -> gen_server:call(R, {unregister, proc2}) end),
    P ! stop,
    timer:sleep(100),
    step(lookup_after_death, fun() -> error = gen_server:call(R, {lookup, proc1}) end),
    %% monitors on the C node's processes, by pid and by name
    step(monitor_pid, fun() -> Ref = monitor(process, B), demonitor(Ref) end),
    step(monitor_name, fun() -> Ref = monitor(process, R), demonitor(Ref) end),
    step(monitor_noname, fun() ->
                                 Ref = monitor(process, {nosuchname, Kv}),
                                 receive {'DOWN', Ref, _, _, noproc} -> ok
                                 after 2000 -> timeout end
                         end),
    %% links and unlinks (UNLINK_ID with its ack)
    step(link, fun() -> link(B), unlink(B) end),
    %% plain messages, to a pid and to names
    B ! hello,
    R ! hello,
    {nosuchname, Kv} ! hello,
    %% group leader
    step(group_leader, fun() -> group_leader(group_leader(), B) end),
    %% seq_trace tokens give the _TT forms
    %% (a reply without a token clears ours, so set it before each send)
    T = fun() -> seq_trace:set_token(label, 17) end,
    step(trace_tokens, fun() ->
                               T(), gen_server:call(R, count),
                               T(), gen_server:call(B, {get, milk}),
                               T(), B ! traced,
                               T(), {ok, Bt} = gen_server:call(R, {create, traced}),
                               T(), exit(Bt, traced_exit),
                               seq_trace:set_token([])
                       end),
    %% exit signals: normal ignored, kill, other reasons, broken links
    {ok, B2} = gen_server:call(R, {create, b2}),
    step(exit_normal, fun() -> exit(B2, normal), gen_server:call(B2, keys) end),
    step(exit_kill, fun() -> exit(B2, kill), timer:sleep(50) end),
    {ok, B3} = gen_server:call(R, {create, b3}),
    step(exit_reason, fun() -> exit(B3, {shutdown, because}), timer:sleep(50) end),
    {ok, B4} = gen_server:call(R, {create, b4}),
    step(linked_crash, fun() ->
                               L = spawn(fun() -> link(B4), receive go -> exit(crashed) end end),
                               timer:sleep(50),
                               L ! go,
                               timer:sleep(100)
                       end),
    {ok, B5} = gen_server:call(R, {create, b5}),
    step(linked_from_here, fun() ->
                                   process_flag(trap_exit, true),
                                   link(B5),
                                   exit(B5, kill),
                                   receive {'EXIT', B5, _} -> ok after 2000 -> timeout end
                           end),
    {ok, B6} = gen_server:call(R, {create, b6}),
    step(stop, fun() -> gen_server:stop(B6, normal, 5000) end),
    step(call_dead, fun() -> catch gen_server:call(B6, keys) end),
    %% pipelined requests: several calls in one read
    step(pipelined, fun() ->
                            Ids = [gen_server:send_request(R, {lookup, <<"shopping">>})
                                   || _ <- lists:seq(1, 10)],
                            [gen_server:wait_response(Id, 2000) || Id <- Ids]
                    end),
    step(count, fun() -> gen_server:call(R, count) end),
    timer:sleep(200),
    io:format("capture_client: done~n"),
    halt(0).

nested(0) -> [];
nested(N) -> [nested(N - 1)].

step(Name, F) ->
    try F() of
        _ -> ok
    catch
        C:E -> io:format("capture_client: step ~p: ~p:~p~n", [Name, C, E])
    end.
