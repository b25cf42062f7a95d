%% Copied into the scratch rebar3 project by kv_cnode_dep_SUITE; runs after
%% kv_cnode_uses_SUITE in the same VM: every node that suite started (the
%% hook's included) is already gone -- no ping, no epmd entry.
-module(zz_after_SUITE).
-export([all/0, nodes_gone/1]).

all() -> [nodes_gone].

nodes_gone(_Config) ->
    {ok, B} = file:read_file(os:getenv("KV_CNODE_DEP_NODES")),
    Nodes = [binary_to_atom(L, utf8) || L <- binary:split(B, <<"\n">>, [global, trim_all])],
    true = length(Nodes) >= 3,
    [] = [N || N <- Nodes, net_adm:ping(N) =:= pong],
    [] = [N || N <- Nodes,
               [Name, Host] <- [string:split(atom_to_list(N), "@")],
               is_tuple(erl_epmd:port_please(Name, Host))],   % {port, P, V}
    ok.
