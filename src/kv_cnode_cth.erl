%% @doc Common Test hook: one kv_cnode node per suite.
%%
%% ```
%% suite() -> [{ct_hooks, [{kv_cnode_cth, #{}}]}].
%% my_case(Config) -> Node = ?config(kv_cnode, Config), ...
%% '''
%%
%% The options are those of kv_cnode:start/1 (a map or a proplist; `owner'
%% is the hook's). The node is started before init_per_suite, `{kv_cnode,
%% Node}' is added to the suite's Config, and the node is stopped after
%% end_per_suite (or when the hook ends, if the suite failed early). CT runs
%% init_per_suite in a process that exits when it returns, so the node's
%% owner is a process of the hook's that lives until the node is stopped.
-module(kv_cnode_cth).

-export([id/1, init/2, pre_init_per_suite/3, post_init_per_suite/4,
         post_end_per_suite/4, terminate/1]).

-record(state, {opts :: map(), running = #{} :: #{atom() => {node(), pid()}}}).

id(_Opts) -> ?MODULE.

init(_Id, Opts) when is_map(Opts) -> {ok, #state{opts = Opts}};
init(_Id, Opts) when is_list(Opts) -> {ok, #state{opts = maps:from_list(Opts)}};
init(_Id, _Opts) -> {ok, #state{opts = #{}}}.

pre_init_per_suite(Suite, Config, #state{opts = Opts} = S) ->
    %% Stop a node left over from an earlier init_per_suite of this suite.
    #state{running = R} = S1 = stop_suite(Suite, S),
    Holder = spawn(fun holder/0),
    case kv_cnode:start(Opts#{owner => Holder}) of
        {ok, Node} ->
            {[{kv_cnode, Node} | lists:keydelete(kv_cnode, 1, Config)],
             S1#state{running = R#{Suite => {Node, Holder}}}};
        {error, Reason} ->
            Holder ! stop,
            {{fail, {kv_cnode, Reason}}, S1}
    end.

%% init_per_suite failed or skipped: CT will not run end_per_suite, so the
%% node goes now.
post_init_per_suite(_Suite, _Config, Return, S) when is_list(Return) ->
    {Return, S};
post_init_per_suite(Suite, _Config, Return, S) ->
    {Return, stop_suite(Suite, S)}.

post_end_per_suite(Suite, _Config, Return, S) ->
    {Return, stop_suite(Suite, S)}.

terminate(#state{running = R}) ->
    [stop_node(NH) || NH <- maps:values(R)],
    ok.

stop_suite(Suite, #state{running = R} = S) ->
    case maps:take(Suite, R) of
        {NH, R1} -> stop_node(NH), S#state{running = R1};
        error -> S
    end.

stop_node({Node, Holder}) ->
    ok = kv_cnode:stop(Node),
    Holder ! stop,
    ok.

%% The owner of a suite's node: lives until told to stop.
holder() ->
    receive stop -> ok end.
