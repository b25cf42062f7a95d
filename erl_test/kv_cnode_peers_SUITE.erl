%% Non-BEAM peers: kv_cnode serving an ei-based C node (erl_interface's own
%% client API: ei_connect, ei_reg_send, ei_send, ei_xreceive_msg) and a Java
%% node (jinterface OtpNode/OtpMbox).
%%
%% DESIGN.md: "a peer without DIST_MONITOR_NAME gets no MONITOR_P from us
%% (ei's receive loop fails on one); monitors of its pids are kept locally
%% and fire with noconnection when it goes".  ei_xreceive_msg returns
%% ERL_ERROR on any control message it does not know (MONITOR_P among
%% them), and the ei peer (tests/peers/ei_peer.c) then prints "FAIL recv"
%% and exits 3; so an ei peer that registers a name for its own pid, is
%% registered by a BEAM caller, and then goes on making calls, proves that
%% no MONITOR_P reached it.  Killing it (kill -9) must remove its names
%% (noconnection) within seconds.
%%
%% The ei peer is build/tests/ei_peer (make builds it before `make ct`);
%% when it is missing the suite compiles tests/peers/ei_peer.c into its
%% priv_dir.  The Java peer (tests/peers/JPeer.java) is compiled into the
%% priv_dir with javac; without javac, java or jinterface's OtpErlang.jar
%% its case is skipped with the reason.
%%
%% Every case starts its own kv_cnode (end_per_testcase stops it and wants
%% exit status 0) and checks that it logged no warning and no error.
-module(kv_cnode_peers_SUITE).
-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([ei_calls/1, ei_register_then_kill/1, ei_disconnect_clean/1, ei_ticks/1,
         ei_register_gone_pid/1, java_peer/1]).

-define(LIB, kv_cnode_test_lib).
-define(REG, 'Elixir.KV.Registry').

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [ei_calls, ei_register_then_kill, ei_disconnect_clean, ei_ticks,
     ei_register_gone_pid, java_peer].

%% Deadlines stretch under valgrind (make memcheck).
f() -> case ?LIB:memcheck() of true -> 10; false -> 1 end.

root() -> filename:dirname(filename:dirname(filename:absname(?FILE))).

init_per_suite(Config) ->
    os:cmd("epmd -daemon"),
    Priv = ?config(priv_dir, Config),
    EiPeer = ei_peer_bin(Priv),
    ct:pal("ei peer ~s", [EiPeer]),
    [{ei_peer, EiPeer}, {java, java_setup(Priv)} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(Case, Config) ->
    Args = case Case of
               %% kv_cnode ticks every 0.5 s and drops a peer silent for 2 s
               ei_ticks -> ["--net-ticktime", "2"];
               _ -> []
           end,
    {ok, H} = ?LIB:start(Args),
    [{kv, H} | Config].

end_per_testcase(Case, Config) ->
    H = ?config(kv, Config),
    ct:log("kv_cnode log:~n~s", [[[L, $\n] || L <- ?LIB:lines(H)]]),
    Bad = [L || L <- bad_lines(H),
                %% ei_ticks freezes its peer on purpose at the end
                not (Case =:= ei_ticks andalso binary:match(L, <<"not responding">>) =/= nomatch)],
    Status = ?LIB:stop(H),
    case {Status, Bad} of
        {0, []} -> ok;
        _ -> {fail, {kv_cnode, {exit_status, Status}, {logged, Bad}}}
    end.

%% --- cases ---

%% lookup, create, lookup, bucket put/get/keys, count, unknown call,
%% register/unregister of its own pid: all from the ei node; a BEAM node
%% then reads what the ei node stored.
ei_calls(Config) ->
    #{node := N} = ?config(kv, Config),
    Name = name("ei_calls"),
    {0, Lines} = run_ei(Config, ["calls", Name]),
    ct:pal("ei peer:~n~s", [[[L, $\n] || L <- Lines]]),
    Expect = [<<"OK lookup error">>, <<"OK lookup2 same">>, <<"OK put ok">>,
              <<"OK get_missing nil">>, <<"OK count 1">>,
              <<"OK unknown {error, unknown_call}">>, <<"OK register ok">>,
              <<"OK lookup_registered self">>, <<"OK unregister ok">>, <<"OK done">>],
    [] = [E || E <- Expect, not lists:member(E, Lines)],
    [] = [L || L <- Lines, not is_ok_line(L)],
    {N, BNum, BSerial, _} = pid_line(<<"OK create">>, Lines),
    %% the same bucket, seen from a BEAM node
    R = ?LIB:registry(N),
    {ok, B} = gen_server:call(R, {lookup, list_to_binary(Name)}),
    N = node(B),
    {BNum, BSerial} = pid_num_serial(B),
    {from_ei, 42, <<"bytes">>} = gen_server:call(B, {get, <<"k">>}),
    [<<"k">>] = gen_server:call(B, keys),
    error = gen_server:call(R, {lookup, list_to_binary(Name ++ "_ei")}),
    1 = gen_server:call(R, count),
    true = ?LIB:wait_line(?config(kv, Config), ei_down_pattern(Lines), 5000 * f()).

%% The ei node registers a name for its own pid and a BEAM node registers a
%% second name for that pid; the ei node goes on calling (no MONITOR_P
%% reached it: its receive would have failed); kill -9 of the ei node
%% removes both names (noconnection).
ei_register_then_kill(Config) ->
    #{node := N} = H = ?config(kv, Config),
    R = ?LIB:registry(N),
    Name = name("ei_held"),
    Name2 = name("ei_held_by_beam"),
    {Port, OsPid} = open_ei(Config, ["hold", Name]),
    Pre = wait_line_port(Port, <<"READY">>, 10000 * f()),
    {EiNode, _, _, _} = Self = pid_line(<<"OK self">>, Pre),
    EiPid = mk_pid(Self),
    true = lists:member(<<"OK register ok">>, Pre),
    {ok, EiPid} = gen_server:call(R, {lookup, list_to_binary(Name)}),
    EiNode = node(EiPid),
    ok = gen_server:call(R, {register, list_to_binary(Name2), EiPid}),
    {error, {already_registered, EiPid}} =
        gen_server:call(R, {register, list_to_binary(Name2), self()}),
    %% the ei node still answers, and sees its pid under both names
    Self = pid_line(<<"OK lookup">>, command(Port, "lookup " ++ Name2, <<"OK lookup">>)),
    [<<"OK count 2">>] = command(Port, "count", <<"OK count">>),
    Self = pid_line(<<"OK lookup">>, command(Port, "lookup " ++ Name, <<"OK lookup">>)),
    %% kill -9: the connection just ends
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    Rest = drain(Port, 5000 * f()),
    ct:pal("ei peer after kill -9: ~p", [Rest]),
    {exit, 137} = lists:last(Rest),
    [] = [L || L <- Pre ++ Rest, is_binary(L), not is_ok_line(L)],
    Gone = fun() ->
                   error =:= gen_server:call(R, {lookup, list_to_binary(Name)}) andalso
                       error =:= gen_server:call(R, {lookup, list_to_binary(Name2)})
           end,
    true = ?LIB:wait_until(Gone, 5000 * f()),
    0 = gen_server:call(R, count),
    true = ?LIB:wait_line(H, iolist_to_binary(["node ", atom_to_list(EiNode), " down"]), 1000),
    ok.

%% The ei node registers, then closes its connection in an orderly way
%% (stdin closed -> ei_close_connection): the name goes, the node runs on.
ei_disconnect_clean(Config) ->
    #{node := N} = ?config(kv, Config),
    R = ?LIB:registry(N),
    Name = name("ei_clean"),
    {Port, OsPid} = open_ei(Config, ["hold", Name]),
    Pre = wait_line_port(Port, <<"READY">>, 10000 * f()),
    EiPid = mk_pid(pid_line(<<"OK self">>, Pre)),
    {ok, EiPid} = gen_server:call(R, {lookup, list_to_binary(Name)}),
    port_close(Port), % closes the peer's stdin: it says "OK bye" and leaves
    true = ?LIB:wait_until(fun() -> not filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) end,
                           5000 * f()),
    true = ?LIB:wait_until(
             fun() -> error =:= gen_server:call(R, {lookup, list_to_binary(Name)}) end,
             5000 * f()),
    pong = net_adm:ping(N),
    0 = gen_server:call(R, count).

%% With --net-ticktime 2 kv_cnode ticks the ei node every 0.5 s and drops
%% it after 2 s without a byte; ei answers ticks inside ei_xreceive_msg.
%% After 3 s of otherwise idle connection, the ei node is still connected,
%% still registered, and calls still work.  (The CT node never talks to
%% this kv_cnode: its own 60 s ticktime would not keep such a link up.)
ei_ticks(Config) ->
    H = ?config(kv, Config),
    Name = name("ei_ticks"),
    {Port, OsPid} = open_ei(Config, ["hold", Name]),
    Pre = wait_line_port(Port, <<"READY">>, 10000 * f()),
    Self = pid_line(<<"OK self">>, Pre),
    %% Not a synchronisation: the point is to let time pass beyond ticktime.
    timer:sleep(3000),
    [<<"OK count 1">>] = command(Port, "count", <<"OK count">>),
    Self = pid_line(<<"OK lookup">>, command(Port, "lookup " ++ Name, <<"OK lookup">>)),
    0 = ?LIB:count_lines(H, <<"not responding">>),
    0 = ?LIB:count_lines(H, <<" down">>),
    %% Control: the same ei node frozen (SIGSTOP) answers no tick and is
    %% dropped within ticktime; so the above was live.
    {EiNode, _, _, _} = Self,
    os:cmd("kill -STOP " ++ integer_to_list(OsPid)),
    try
        true = ?LIB:wait_line(H, <<"not responding">>, 6000 * f()),
        true = ?LIB:wait_line(H, iolist_to_binary(["node ", atom_to_list(EiNode), " down"]),
                              1000 * f())
    after
        os:cmd("kill -CONT " ++ integer_to_list(OsPid))
    end,
    %% the thawed peer finds its connection gone: ei_xreceive_msg fails
    Rest = drain(Port, 5000 * f()),
    {exit, 3} = lists:last(Rest),
    ok.

%% A BEAM caller registers the pid of an ei node that has gone (ei nodes do
%% not publish themselves in epmd, so it cannot be reached): ok, then the
%% name goes (noconnection) at once or within seconds.
ei_register_gone_pid(Config) ->
    #{node := N} = ?config(kv, Config),
    R = ?LIB:registry(N),
    Name = name("ei_gone"),
    {0, Lines} = run_ei(Config, ["calls", Name]),
    GonePid = mk_pid(pid_line(<<"OK self">>, Lines)),
    Key = list_to_binary(name("gone")),
    true = ?LIB:wait_line(?config(kv, Config), ei_down_pattern(Lines), 5000 * f()),
    ok = gen_server:call(R, {register, Key, GonePid}),
    true = ?LIB:wait_until(fun() -> error =:= gen_server:call(R, {lookup, Key}) end,
                           5000 * f()),
    1 = gen_server:call(R, count). % the bucket ei_calls-style run created

%% A Java node (jinterface): ping, registry calls, bucket put/get, register
%% its mbox pid, then leave without unregistering: the name goes.
java_peer(Config) ->
    case ?config(java, Config) of
        {skip, Why} -> {skip, Why};
        {ok, Java, ClassPath} -> java_peer(Config, Java, ClassPath);
        Failed -> ct:fail(Failed)
    end.

java_peer(Config, Java, ClassPath) ->
    #{node := N} = H = ?config(kv, Config),
    R = ?LIB:registry(N),
    Name = name("java"),
    Alive = name("jpeer") ++ "@" ++ ?LIB:host(),
    Cookie = atom_to_list(erlang:get_cookie()),
    Port = open_port({spawn_executable, Java},
                     [{args, ["-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                              "-cp", ClassPath, "JPeer", atom_to_list(N), Cookie, Name, Alive]},
                      {line, 4096}, binary, exit_status, stderr_to_stdout, use_stdio]),
    Out = drain(Port, 60000 * f()),
    ct:pal("java peer:~n~p", [Out]),
    {exit, 0} = lists:last(Out),
    Lines = [L || L <- Out, is_binary(L)],
    Expect = [<<"OK ping pong">>, <<"OK lookup error">>, <<"OK lookup2 same">>,
              <<"OK put ok">>, <<"OK get_missing nil">>,
              <<"OK unknown {error,unknown_call}">>, <<"OK register ok">>,
              <<"OK lookup_registered self">>, <<"OK done">>],
    [] = [E || E <- Expect, not lists:member(E, Lines)],
    {N, BNum, BSerial, _} = pid_line(<<"OK create">>, Lines),
    {ok, B} = gen_server:call(R, {lookup, list_to_binary(Name)}),
    {BNum, BSerial} = pid_num_serial(B),
    {from_java, 7, <<"jv">>} = gen_server:call(B, {get, <<"k">>}),
    %% the Java node left with its name registered: the name goes with it
    true = ?LIB:wait_until(
             fun() -> error =:= gen_server:call(R, {lookup, list_to_binary(Name ++ "_java")}) end,
             5000 * f()),
    true = ?LIB:wait_line(H, iolist_to_binary(["node ", Alive, " down"]), 5000 * f()),
    1 = gen_server:call(R, count).

%% --- the ei peer ---

ei_peer_bin(Priv) ->
    Candidates = [os:getenv("EI_PEER_BIN"),
                  filename:join([filename:dirname(?LIB:bin()), "tests", "ei_peer"]),
                  filename:join([root(), "build", "tests", "ei_peer"])],
    case [C || C <- Candidates, is_list(C), filelib:is_regular(C)] of
        [Bin | _] -> Bin;
        [] -> build_ei_peer(Priv)
    end.

%% Only when make did not build it (e.g. a bare tools/run_ct.sh).
build_ei_peer(Priv) ->
    Ei = code:lib_dir(erl_interface),
    Out = filename:join(Priv, "ei_peer"),
    Cmd = lists:flatten(
            io_lib:format("cc -std=c11 -D_GNU_SOURCE -O1 -I~s/include -o ~s ~s -L~s/lib -lei -lpthread 2>&1",
                          [Ei, Out, filename:join([root(), "tests", "peers", "ei_peer.c"]), Ei])),
    Res = os:cmd(Cmd),
    case filelib:is_regular(Out) of
        true -> Out;
        false -> ct:fail({cannot_build_ei_peer, Cmd, Res})
    end.

ei_env() ->
    [{"EI_PEER_CALL_MS", integer_to_list(5000 * f())}].

open_ei(Config, Args) ->
    #{node := N} = ?config(kv, Config),
    Cookie = atom_to_list(erlang:get_cookie()),
    Port = open_port({spawn_executable, ?config(ei_peer, Config)},
                     [{args, [atom_to_list(N), Cookie | Args]}, {env, ei_env()},
                      {line, 4096}, binary, exit_status, stderr_to_stdout, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {Port, OsPid}.

%% Run to completion: {ExitStatus, Lines}.
run_ei(Config, Args) ->
    {Port, _} = open_ei(Config, Args),
    Out = drain(Port, 30000 * f()),
    {exit, S} = lists:last(Out),
    Lines = [L || L <- Out, is_binary(L)],
    case S of
        0 -> ok;
        _ -> ct:pal("ei peer ~p exited ~p:~n~p", [Args, S, Lines])
    end,
    {S, Lines}.

%% Every line until the program exits: [Line..., {exit, Status}].
drain(Port, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    drain(Port, Deadline, []).

drain(Port, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {_, L}}} -> drain(Port, Deadline, [L | Acc]);
        {Port, {exit_status, S}} -> lists:reverse([{exit, S} | Acc])
    after Left ->
        catch port_close(Port),
        ct:fail({peer_timeout, lists:reverse(Acc)})
    end.

%% Lines up to and including the first that starts with Prefix.  A FAIL
%% line or the program's exit fails the case.
wait_line_port(Port, Prefix, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_line_port(Port, Prefix, Deadline, []).

wait_line_port(Port, Prefix, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {_, L}}} ->
            case {prefix(Prefix, L), prefix(<<"FAIL">>, L)} of
                {true, _} -> lists:reverse([L | Acc]);
                {_, true} -> ct:fail({peer_failed, lists:reverse([L | Acc])});
                _ -> wait_line_port(Port, Prefix, Deadline, [L | Acc])
            end;
        {Port, {exit_status, S}} ->
            ct:fail({peer_exited, S, lists:reverse(Acc)})
    after Left ->
        ct:fail({peer_timeout, Prefix, lists:reverse(Acc)})
    end.

%% A hold-mode command: its answer line (the lines before it must be none).
command(Port, Cmd, AnswerPrefix) ->
    true = port_command(Port, [Cmd, $\n]),
    case wait_line_port(Port, AnswerPrefix, 10000 * f()) of
        [Answer] -> [Answer];
        Other -> ct:fail({unexpected_peer_output, Cmd, Other})
    end.

prefix(P, L) -> binary:longest_common_prefix([P, L]) =:= byte_size(P).

is_ok_line(L) -> prefix(<<"OK ">>, L) orelse L =:= <<"READY">>.

%% "... PID Node Num Serial Creation" of the first line with Prefix.
pid_line(Prefix, Lines) ->
    [L | _] = [L || L <- Lines, prefix(Prefix, L)],
    [_, Rest] = binary:split(L, <<"PID ">>),
    [Node, Num, Serial, Creation] = binary:split(Rest, <<" ">>, [global]),
    {binary_to_atom(Node, utf8), binary_to_integer(Num), binary_to_integer(Serial),
     binary_to_integer(Creation)}.

%% NEW_PID_EXT
mk_pid({Node, Num, Serial, Creation}) ->
    NB = atom_to_binary(Node, utf8),
    binary_to_term(<<131, 88, 119, (byte_size(NB)), NB/binary,
                     Num:32, Serial:32, Creation:32>>).

pid_num_serial(Pid) ->
    <<131, 88, 119, Len, _:Len/binary, Num:32, Serial:32, _:32>> =
        term_to_binary(Pid, [{minor_version, 2}]),
    {Num, Serial}.

ei_down_pattern(Lines) ->
    {EiNode, _, _, _} = pid_line(<<"OK self">>, Lines),
    iolist_to_binary(["node ", atom_to_list(EiNode), " down"]).

name(Prefix) -> ?LIB:unique(Prefix).

%% What kv_cnode must not log while serving these peers.
bad_lines(H) ->
    [L || L <- ?LIB:lines(H),
          binary:match(L, [<<"kv_cnode warning:">>, <<"kv_cnode error:">>,
                           <<"bad frame">>, <<"disconnecting">>]) =/= nomatch].

%% --- the Java peer ---

java_setup(Priv) ->
    Javac = os:find_executable("javac"),
    Java = os:find_executable("java"),
    Jar = case code:lib_dir(jinterface) of
              {error, _} -> false;
              Dir -> filename:join([Dir, "priv", "OtpErlang.jar"])
          end,
    if
        Javac =:= false; Java =:= false ->
            {skip, "no Java JDK (javac/java not in PATH); apt-get install default-jdk-headless to run it"};
        Jar =:= false ->
            {skip, "jinterface is not installed (no OtpErlang.jar); apt-get install erlang-jinterface"};
        true ->
            case filelib:is_regular(Jar) of
                false ->
                    {skip, "jinterface's OtpErlang.jar missing: " ++ Jar};
                true ->
                    Src = filename:join([root(), "tests", "peers", "JPeer.java"]),
                    Cmd = lists:flatten(io_lib:format("~s -nowarn -cp ~s -d ~s ~s 2>&1",
                                                      [Javac, Jar, Priv, Src])),
                    Res = os:cmd(Cmd),
                    case filelib:is_regular(filename:join(Priv, "JPeer.class")) of
                        true -> {ok, Java, Priv ++ ":" ++ Jar};
                        false -> {javac_failed, Cmd, Res}
                    end
            end
    end.
