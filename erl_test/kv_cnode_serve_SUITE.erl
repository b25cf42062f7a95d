%% Serving your own process: the counter of services/counter.c, started
%% with --counter NAME, driven from this BEAM node as any gen_server is
%% (call, cast, a plain message, sys:get_state), monitored, stopped with
%% gen_server:stop/1, and seen to end with a DOWN.  Also: --counter's
%% errors are one line on stderr and exit status 2.
-module(kv_cnode_serve_SUITE).
-include_lib("common_test/include/ct.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([counter/1, counter_stop_down/1, counter_bad_option/1]).

-define(LIB, kv_cnode_test_lib).

all() -> [counter, counter_stop_down, counter_bad_option].

init_per_suite(Config) ->
    {ok, H} = ?LIB:start(["--counter", "hits"]),
    [{kv, H} | Config].

end_per_suite(Config) ->
    0 = ?LIB:stop(?config(kv, Config)),
    ok.

counter(Config) ->
    #{node := N} = ?config(kv, Config),
    C = {hits, N},
    0 = gen_server:call(C, get),
    5 = gen_server:call(C, {add, 5}),
    ok = gen_server:cast(C, {add, 10}),
    C ! {add, 100},                      % handle_info
    115 = gen_server:call(C, get),       % the call comes after both
    115 = sys:get_state(C),
    {error, unknown_call} = gen_server:call(C, what),
    ok = gen_server:cast(C, reset),
    0 = gen_server:call(C, get),
    %% the other services are still there beside it
    pong = net_adm:ping(N),
    error = gen_server:call(?LIB:registry(N), {lookup, <<"nothing">>}).

counter_stop_down(Config) ->
    #{node := N} = ?config(kv, Config),
    C = {hits, N},
    Pid = rpc_whereis(C),
    true = is_pid(Pid) andalso node(Pid) =:= N,
    Ref = erlang:monitor(process, Pid),
    ok = gen_server:stop(C),                 % sys:terminate(C, normal, infinity)
    receive
        {'DOWN', Ref, process, Pid, normal} -> ok
    after 5000 -> ct:fail(no_down)
    end,
    %% gone, name and all
    {'EXIT', {noproc, _}} = (catch gen_server:call(C, get, 2000)),
    Ref2 = erlang:monitor(process, Pid),
    receive
        {'DOWN', Ref2, process, Pid, noproc} -> ok
    after 5000 -> ct:fail(no_noproc_down)
    end.

counter_bad_option(_Config) ->
    lists:foreach(
      fun(Args) ->
              {2, Err} = ?LIB:run_bin(["--sname", "kvbad" ++ integer_to_list(erlang:unique_integer([positive]))
                                       | Args], stderr, 30000),
              ct:pal("~p -> ~s", [Args, Err]),
              [Line] = string:split(string:trim(Err, trailing), "\n", all),
              true = binary:match(Line, <<"--counter">>) =/= nomatch
      end, [["--counter", ""], ["--counter", "net_kernel"],
            ["--counter", "Elixir.KV.Registry"], ["--counter"]]).

%% The pid behind a name: sys:get_status answers {status, Pid, ...}.
rpc_whereis(C) ->
    {status, Pid, _, _} = sys:get_status(C),
    Pid.
