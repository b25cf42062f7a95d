-module(kv_cnode_smoke_SUITE).
-include_lib("common_test/include/ct.hrl").
-export([all/0, init_per_suite/1, end_per_suite/1, ping/1, lookup_create/1]).

all() -> [ping, lookup_create].

init_per_suite(Config) ->
    {ok, H} = kv_cnode_test_lib:start([]),
    [{kv, H} | Config].

end_per_suite(Config) ->
    0 = kv_cnode_test_lib:stop(?config(kv, Config)),
    ok.

ping(Config) ->
    #{node := N} = ?config(kv, Config),
    pong = net_adm:ping(N).

lookup_create(Config) ->
    #{node := N} = ?config(kv, Config),
    R = kv_cnode_test_lib:registry(N),
    error = gen_server:call(R, {lookup, <<"x">>}),
    {ok, B} = gen_server:call(R, {create, <<"x">>}),
    {ok, B} = gen_server:call(R, {lookup, <<"x">>}),
    ok = gen_server:call(B, {put, k, v}),
    v = gen_server:call(B, {get, k}).
