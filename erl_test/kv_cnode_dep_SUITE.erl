%% kv_cnode as a rebar3 dependency (issue 8).
%%
%% - rebar3_checkouts / rebar3_git_dep: a scratch rebar3 project in a temp
%%   dir gets this checkout (its git-tracked and untracked-unignored files,
%%   no build output) in _checkouts/, or as a git dependency that rebar3
%%   clones into _build/default/lib/; a CT suite there
%%   (kv_cnode_dep_SUITE_data/kv_cnode_uses_SUITE.erl) uses the hook and every
%%   API call, and a later suite there (zz_after_SUITE) checks that all its
%%   nodes are gone; `rebar3 ct` must pass and leave no node behind.
%% - start_stop_leaves_nothing, owner_death, caller_death, vm_kill9,
%%   bad_option: kv_cnode:start/stop in this VM and in a child `erl`.
%% - mix_exunit: a scratch mix project with a path dependency on a copy of
%%   this checkout runs an ExUnit test (kv_cnode_dep_SUITE_data/kv_cnode_test.exs)
%%   with the system rebar3 (MIX_REBAR3), offline.
%%
%% Scratch projects live under one temp dir, removed in end_per_suite; the
%% tools' output goes to the case's CT log.
-module(kv_cnode_dep_SUITE).
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, init_per_suite/1, end_per_suite/1]).
-export([rebar3_checkouts/1, rebar3_git_dep/1, start_stop_leaves_nothing/1,
         owner_death/1, caller_death/1, vm_kill9/1, bad_option/1, mix_exunit/1]).

-define(TOOL_TIMEOUT, 300000).
-define(GONE_WITHIN, 2000).

suite() -> [{timetrap, {minutes, 6}}].

all() ->
    [bad_option, start_stop_leaves_nothing, owner_death, caller_death, vm_kill9,
     rebar3_checkouts, rebar3_git_dep, mix_exunit].

init_per_suite(Config) ->
    os:cmd("epmd -daemon"),
    Root = root(),
    Tmp = filename:join(tmp_base(), "kv_cnode_dep_" ++ os:getpid() ++ "_" ++
                            integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_dir(filename:join(Tmp, "x")),
    ct:log("checkout ~s, scratch dir ~s", [Root, Tmp]),
    [{root, Root}, {tmp, Tmp} | Config].

end_per_suite(Config) ->
    case os:getenv("KV_CNODE_DEP_KEEP") of
        false -> os:cmd("rm -rf '" ++ ?config(tmp, Config) ++ "'");
        _ -> ct:pal("kept ~s", [?config(tmp, Config)])
    end,
    ok.

%%--------------------------------------------------------------------
%% kv_cnode:start/stop in this VM

start_stop_leaves_nothing(_Config) ->
    {ok, N} = kv_cnode:start(#{}),
    {ok, OsPid} = kv_cnode:os_pid(N),
    true = os_alive(OsPid),
    true = in_epmd(N),
    pong = net_adm:ping(N),
    ok = kv_cnode:stop(N),
    %% Gone when stop returns: no waiting here.
    false = os_alive(OsPid),
    false = in_epmd(N),
    [] = procs_with(atom_to_list(N)),
    undefined = whereis(list_to_atom("kv_cnode$" ++ atom_to_list(N))),
    pang = net_adm:ping(N),
    ok = kv_cnode:stop(N).

%% The owner (here not the caller) dies: the node goes within 2 s.
owner_death(_Config) ->
    Owner = spawn(fun() -> receive stop -> ok end end),
    {ok, N} = kv_cnode:start(#{owner => Owner}),
    {ok, OsPid} = kv_cnode:os_pid(N),
    pong = net_adm:ping(N),
    exit(Owner, kill),
    gone_within(N, OsPid, ?GONE_WITHIN).

%% The default owner is the caller: a process that starts a node and ends.
caller_death(_Config) ->
    Self = self(),
    {P, MRef} = spawn_monitor(fun() ->
                                      {ok, N} = kv_cnode:start(#{}),
                                      {ok, OsPid} = kv_cnode:os_pid(N),
                                      Self ! {started, N, OsPid}
                              end),
    {N, OsPid} = receive {started, N0, OsPid0} -> {N0, OsPid0} after 15000 -> ct:fail(no_start) end,
    receive {'DOWN', MRef, process, P, normal} -> ok after 5000 -> ct:fail(caller_alive) end,
    gone_within(N, OsPid, ?GONE_WITHIN).

%% An OS `erl' (not distributed) calls kv_cnode:start/1 and is killed with
%% SIGKILL: the C node sees its stdin close and exits within 2 s.
vm_kill9(_Config) ->
    Ebin = filename:dirname(code:which(kv_cnode)),
    Erl = filename:join([code:root_dir(), "bin", "erl"]),
    Eval = "{ok, N} = kv_cnode:start(#{}), {ok, P} = kv_cnode:os_pid(N), "
           "io:format(\"KV_STARTED ~s ~p ~s~n\", [N, P, os:getpid()]), "
           "receive after infinity -> ok end.",
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell", "-noinput", "-pa", Ebin, "-eval", Eval]},
                      {line, 4096}, binary, exit_status, stderr_to_stdout, hide]),
    {N, OsPid, VmPid} = wait_started(Port, now_ms() + 30000),
    ct:log("VM ~p started ~p (os pid ~p)", [VmPid, N, OsPid]),
    true = os_alive(OsPid),
    true = in_epmd(N),
    os:cmd("kill -KILL " ++ integer_to_list(VmPid)),
    receive {Port, {exit_status, S}} -> ct:log("VM exit status ~p", [S])
    after 5000 -> ct:fail(vm_not_killed)
    end,
    gone_within(N, OsPid, ?GONE_WITHIN).

wait_started(Port, Until) ->
    receive
        {Port, {data, {eol, <<"KV_STARTED ", Rest/binary>>}}} ->
            [N, P, V] = binary:split(Rest, <<" ">>, [global]),
            {binary_to_atom(N, utf8), binary_to_integer(P), binary_to_integer(V)};
        {Port, {data, {_, L}}} ->
            ct:log("erl: ~s", [L]),
            wait_started(Port, Until);
        {Port, {exit_status, S}} ->
            ct:fail({erl_exited, S})
    after max(0, Until - now_ms()) ->
        catch port_close(Port),
        ct:fail(erl_start_timeout)
    end.

%% A bad option: {error, Reason} with the node's own line; nothing left.
bad_option(_Config) ->
    SName = "kv_dep_bad_" ++ os:getpid(),
    PortsBefore = kv_ports(),
    ProcsBefore = kv_procs(),
    {error, Reason} = kv_cnode:start(#{sname => SName, args => ["--bogus"]}),
    ct:log("reason: ~p", [Reason]),
    true = is_binary(Reason),
    true = string:find(Reason, "unknown option '--bogus'") =/= nomatch,
    [] = procs_with(SName ++ "@"),
    false = in_epmd(list_to_atom(SName ++ "@x")),
    PortsBefore = kv_ports(),
    %% The keeper process is gone too (it ends right after its reply).
    true = wait_until(fun() -> kv_procs() =:= ProcsBefore end, 1000),
    %% Other bad options are refused before anything starts.
    {error, {unknown_option, bogus}} = kv_cnode:start(#{bogus => 1}),
    {error, {bad_option, args, _}} = kv_cnode:start(#{args => [1]}).

%%--------------------------------------------------------------------
%% Scratch rebar3 projects

rebar3_checkouts(Config) ->
    Tmp = ?config(tmp, Config),
    Proj = filename:join(Tmp, "rebar3_checkouts"),
    copy_checkout(?config(root, Config), filename:join([Proj, "_checkouts", "kv_cnode"])),
    write_rebar3_project(Proj, "{deps, [kv_cnode]}.\n", Config),
    run_scratch_ct(Proj, Config),
    %% Built by the pre-hook in the checkout dir itself.
    true = filelib:is_regular(filename:join([Proj, "_checkouts", "kv_cnode", "priv", "kv_cnode"])).

rebar3_git_dep(Config) ->
    case os:find_executable("git") of
        false -> {skip, "no git"};
        _ ->
            Tmp = ?config(tmp, Config),
            Repo = filename:join(Tmp, "kv_cnode_repo"),
            copy_checkout(?config(root, Config), Repo),
            {0, _} = run("git init -q -b main && git add -A && "
                         "git -c user.name=t -c user.email=t@localhost commit -q -m scratch",
                         Repo, [], 60000),
            Proj = filename:join(Tmp, "rebar3_git_dep"),
            Dep = io_lib:format("{deps, [{kv_cnode, {git, \"file://~s\", {branch, \"main\"}}}]}.~n",
                                [Repo]),
            write_rebar3_project(Proj, Dep, Config),
            run_scratch_ct(Proj, Config),
            %% rebar3 cloned it into _build/default/lib and the hook built it there.
            true = filelib:is_regular(filename:join([Proj, "_build", "default", "lib",
                                                     "kv_cnode", "priv", "kv_cnode"]))
    end.

write_rebar3_project(Proj, Deps, Config) ->
    ok = filelib:ensure_dir(filename:join([Proj, "src", "x"])),
    ok = filelib:ensure_dir(filename:join([Proj, "test", "x"])),
    ok = file:write_file(filename:join(Proj, "rebar.config"), Deps),
    ok = file:write_file(filename:join([Proj, "src", "scratch.app.src"]),
                         "{application, scratch, [{description, \"scratch\"}, "
                         "{vsn, \"0.1.0\"}, {applications, [kernel, stdlib]}]}.\n"),
    [{ok, _} = file:copy(filename:join(?config(data_dir, Config), F),
                         filename:join([Proj, "test", F]))
     || F <- ["kv_cnode_uses_SUITE.erl", "zz_after_SUITE.erl"]],
    ok.

run_scratch_ct(Proj, _Config) ->
    Rebar3 = find("rebar3"),
    NodesFile = filename:join(Proj, "started_nodes.txt"),
    {Status, Out} = run("'" ++ Rebar3 ++ "' ct", Proj,
                        [{"KV_CNODE_DEP_NODES", NodesFile}], ?TOOL_TIMEOUT),
    ct:log("rebar3 ct in ~s: exit ~p~n~s", [Proj, Status, Out]),
    Status =:= 0 orelse ct:fail({rebar3_ct_failed, Status, tail(Out)}),
    nomatch =/= string:find(Out, "All 6 tests passed") orelse ct:fail({unexpected_output, tail(Out)}),
    check_nodes_gone(NodesFile, 3).

%%--------------------------------------------------------------------
%% Scratch mix project

mix_exunit(Config) ->
    case os:find_executable("mix") of
        false -> {skip, "mix is not installed"};
        Mix ->
            Tmp = ?config(tmp, Config),
            Dep = filename:join(Tmp, "kv_cnode_for_mix"),
            copy_checkout(?config(root, Config), Dep),
            Proj = filename:join(Tmp, "mix_project"),
            ok = filelib:ensure_dir(filename:join([Proj, "test", "x"])),
            ok = file:write_file(
                   filename:join(Proj, "mix.exs"),
                   io_lib:format(
                     "defmodule Scratch.MixProject do~n"
                     "  use Mix.Project~n"
                     "  def project do~n"
                     "    [app: :scratch, version: \"0.1.0\", deps: [{:kv_cnode, path: ~p}]]~n"
                     "  end~n"
                     "end~n", [list_to_binary(Dep)])),
            ok = file:write_file(filename:join([Proj, "test", "test_helper.exs"]),
                                 "ExUnit.start()\n"),
            {ok, _} = file:copy(filename:join(?config(data_dir, Config), "kv_cnode_test.exs"),
                                filename:join([Proj, "test", "kv_cnode_test.exs"])),
            NodesFile = filename:join(Proj, "started_nodes.txt"),
            Env = [{"KV_CNODE_DEP_NODES", NodesFile},
                   {"MIX_HOME", filename:join(Tmp, "mix_home")},
                   {"MIX_REBAR3", find("rebar3")},
                   {"MIX_ENV", "test"},
                   {"HEX_OFFLINE", "1"}],
            {Status, Out} = run("'" ++ Mix ++ "' test", Proj, Env, ?TOOL_TIMEOUT),
            ct:log("mix test in ~s: exit ~p~n~s", [Proj, Status, Out]),
            Status =:= 0 orelse ct:fail({mix_test_failed, Status, tail(Out)}),
            nomatch =/= string:find(Out, "2 tests, 0 failures")
                orelse ct:fail({unexpected_output, tail(Out)}),
            check_nodes_gone(NodesFile, 1)
    end.

%%--------------------------------------------------------------------
%% Helpers

%% The checkout this suite belongs to: erl_test/..
root() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    Cands = [filename:dirname(filename:dirname(Src))] ++
            case os:getenv("KV_CNODE_BIN") of
                false -> [];
                B -> [filename:dirname(filename:dirname(B))]
            end ++ [element(2, file:get_cwd())],
    case [D || D <- Cands,
               filelib:is_regular(filename:join(D, "Makefile")),
               filelib:is_regular(filename:join([D, "src", "kv_cnode.app.src"]))] of
        [D | _] -> D;
        [] -> ct:fail({no_checkout, Cands})
    end.

tmp_base() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.

%% Copy the checkout's sources (what git tracks plus untracked files it does
%% not ignore: no build/, _build/, priv/) -- what a fresh clone would have.
copy_checkout(Root, Dest) ->
    ok = filelib:ensure_dir(filename:join(Dest, "x")),
    Cmd = case filelib:is_dir(filename:join(Root, ".git")) andalso os:find_executable("git") =/= false of
              true ->
                  "git ls-files -co --exclude-standard | "
                  "tar cf - --ignore-failed-read -T - 2>/dev/null | tar xf - -C '" ++ Dest ++ "'";
              false ->
                  "tar cf - --exclude=./build --exclude=./_build --exclude=./priv "
                  "--exclude=./.git . | tar xf - -C '" ++ Dest ++ "'"
          end,
    {0, _} = run(Cmd, Root, [], 60000),
    true = filelib:is_regular(filename:join([Dest, "src", "kv_cnode.app.src"])),
    ok.

%% Run a shell command in Dir with a deadline; returns {ExitStatus, Output}.
%% The environment is cleaned of what the outer make / rebar3 / CT set.
run(Cmd, Dir, Env, Timeout) ->
    Unset = [{K, false} || KV <- os:getenv(),
                           [K | _] <- [string:split(KV, "=")],
                           lists:member(K, ["MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES",
                                            "KV_CNODE_BIN", "SUITE", "CT_ARGS", "ERL_LIBS"])
                               orelse lists:prefix("REBAR_", K)
                               orelse lists:prefix("MIX_", K)],
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", "exec 2>&1; " ++ Cmd]}, {cd, Dir},
                      {env, Unset ++ Env}, exit_status, binary, use_stdio, hide]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    collect(Port, OsPid, now_ms() + Timeout, []).

collect(Port, OsPid, Until, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, OsPid, Until, [D | Acc]);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(lists:reverse(Acc))}
    after max(0, Until - now_ms()) ->
        os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
        catch port_close(Port),
        {timeout, iolist_to_binary(lists:reverse(Acc))}
    end.

tail(Bin) ->
    S = byte_size(Bin),
    binary:part(Bin, max(0, S - 3000), min(S, 3000)).

find(Exe) ->
    case os:find_executable(Exe) of
        false -> ct:fail({not_found, Exe});
        P -> P
    end.

%% Every node the scratch project recorded is gone: no OS process, no epmd
%% entry.
check_nodes_gone(File, AtLeast) ->
    {ok, B} = file:read_file(File),
    Nodes = [binary_to_atom(L, utf8) || L <- binary:split(B, <<"\n">>, [global, trim_all])],
    ct:log("nodes started by the scratch project: ~p", [Nodes]),
    true = length(Nodes) >= AtLeast,
    Left = [N || N <- Nodes, in_epmd(N) orelse procs_with(atom_to_list(N)) =/= []],
    [] = Left,
    ok.

gone_within(N, OsPid, Ms) ->
    T0 = now_ms(),
    true = wait_until(fun() -> not os_alive(OsPid) andalso not in_epmd(N) end, Ms + 500),
    T = now_ms() - T0,
    ct:log("~p gone after ~p ms", [N, T]),
    T =< Ms orelse ct:fail({too_slow, T}),
    [] = procs_with(atom_to_list(N)),
    ok.

name(Node) -> hd(string:split(atom_to_list(Node), "@")).

%% Alive and not a zombie.
os_alive(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, After] = string:split(Stat, ")", trailing),
            string:trim(After, leading) =/= <<>> andalso
                binary:first(string:trim(After, leading)) =/= $Z;
        {error, _} -> false
    end.

in_epmd(Node) ->
    Name = name(Node),
    Out = os:cmd("epmd -names"),
    lists:any(fun(L) -> string:prefix(L, "name " ++ Name ++ " at port ") =/= nomatch end,
              string:split(Out, "\n", all)).

%% OS processes (not zombies) whose command line mentions Str.
procs_with(Str) ->
    Pat = list_to_binary(Str),
    [P || F <- filelib:wildcard("/proc/[0-9]*/cmdline"),
          {ok, C} <- [file:read_file(F)],
          binary:match(C, Pat) =/= nomatch,
          P <- [list_to_integer(lists:nth(3, filename:split(F)))],
          P =/= list_to_integer(os:getpid()),
          os_alive(P)].

kv_ports() ->
    lists:sort([P || P <- erlang:ports(),
                     {name, Name} <- [erlang:port_info(P, name)],
                     string:find(Name, "kv_cnode") =/= nomatch]).

%% Processes running kv_cnode code (keepers).
kv_procs() ->
    lists:sort([P || P <- processes(),
                     {initial_call, {kv_cnode, _, _}} <- [process_info(P, initial_call)]]).

wait_until(Fun, Ms) ->
    Until = now_ms() + Ms,
    Loop = fun L() ->
                   case Fun() of
                       true -> true;
                       _ ->
                           case now_ms() >= Until of
                               true -> Fun();
                               false -> timer:sleep(20), L()
                           end
                   end
           end,
    Loop().

now_ms() -> erlang:monotonic_time(millisecond).
