%% Copied into a scratch rebar3 project by kv_cnode_dep_SUITE: a suite that
%% uses the kv_cnode dependency the way a newcomer would -- the hook and every
%% API call. The names of the nodes it starts are appended to the file named
%% by $KV_CNODE_DEP_NODES, so the outer suite can check they are gone.
-module(kv_cnode_uses_SUITE).
-include_lib("common_test/include/ct.hrl").
-export([suite/0, all/0, init_per_suite/1, end_per_suite/1]).
-export([hook_node/1, same_node_next_case/1, start_stop/1, custom_registry/1,
         bad_option/1]).

suite() -> [{ct_hooks, [{kv_cnode_cth, #{}}]}, {timetrap, {seconds, 60}}].

all() -> [hook_node, same_node_next_case, start_stop, custom_registry, bad_option].

%% The hook started the node before init_per_suite; this process ends when
%% init_per_suite returns, the node must not.
init_per_suite(Config) ->
    Node = ?config(kv_cnode, Config),
    pong = net_adm:ping(Node),
    record(Node),
    Config.

%% Still up here: the hook stops it after end_per_suite.
end_per_suite(Config) ->
    pong = net_adm:ping(?config(kv_cnode, Config)),
    ok.

hook_node(Config) ->
    Node = ?config(kv_cnode, Config),
    error = kv_cnode:lookup(Node, <<"shopping">>),
    {ok, B} = kv_cnode:create(Node, <<"shopping">>),
    {ok, B} = kv_cnode:lookup(Node, <<"shopping">>),
    nil = kv_cnode:get(B, milk),
    ok = kv_cnode:put(B, milk, 3),
    3 = kv_cnode:get(B, milk),
    ok = kv_cnode:put(B, eggs, 12),
    [eggs, milk] = lists:sort(kv_cnode:keys(B)),
    3 = kv_cnode:delete(B, milk),
    nil = kv_cnode:get(B, milk).

same_node_next_case(Config) ->
    Node = ?config(kv_cnode, Config),
    {ok, B} = kv_cnode:lookup(Node, <<"shopping">>),
    12 = kv_cnode:get(B, eggs).

start_stop(_Config) ->
    {ok, N} = kv_cnode:start(#{sname => "uses_" ++ os:getpid(), timeout => 10000}),
    record(N),
    {ok, B} = kv_cnode:create(N, <<"b">>),
    ok = kv_cnode:put(B, <<"k">>, <<"v">>),
    <<"v">> = kv_cnode:get(B, <<"k">>),
    {ok, OsPid} = kv_cnode:os_pid(N),
    true = is_integer(OsPid),
    ok = kv_cnode:stop(N),
    pang = net_adm:ping(N),
    {error, not_running} = kv_cnode:os_pid(N),
    ok = kv_cnode:stop(N).

custom_registry(_Config) ->
    {ok, N} = kv_cnode:start(#{registry => 'My.Registry'}),
    record(N),
    {ok, B} = kv_cnode:create(N, x),
    {ok, B} = kv_cnode:lookup({'My.Registry', N}, x),
    ok = kv_cnode:put(B, 1, 2),
    2 = kv_cnode:get(B, 1),
    ok = kv_cnode:stop(N).

bad_option(_Config) ->
    {error, Reason} = kv_cnode:start(#{args => ["--bogus"]}),
    ct:pal("reason: ~p", [Reason]),
    true = string:find(Reason, "--bogus") =/= nomatch.

record(Node) ->
    case os:getenv("KV_CNODE_DEP_NODES") of
        false -> ok;
        F -> ok = file:write_file(F, [atom_to_list(Node), $\n], [append])
    end.
