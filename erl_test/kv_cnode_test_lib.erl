%% Helpers shared by the Common Test suites: start and stop the kv_cnode
%% binary (and epmd), collect its log lines, start BEAM peer nodes.
%% Every node started here is stopped by the suite; the binary also runs with
%% --exit-on-stdin-eof, so it dies with the CT VM whatever happens.
-module(kv_cnode_test_lib).
-export([bin/0, host/0, node_name/1, start/1, start/2, stop/1, os_pid/1, lines/1,
         wait_line/3, registry/1, start_peer/1, start_peer/2, stop_peer/1,
         wait_until/2, unique/1]).
-export([start_long/2, port/1, count_lines/2]).
-export([start_env/3, fd_count/1, vm_kb/2, memcheck/0]).
-export([up_line/1, down_line/1, match_lines/2, run_bin/3, pmap/2]).
-export([janitor_start/1, janitor_add/2, janitor_remove/2, janitor_take/1,
         start_small_peer/4]).

bin() ->
    case os:getenv("KV_CNODE_BIN") of
        false -> filename:absname("build/kv_cnode");
        B -> B
    end.

host() ->
    [_, H] = string:split(atom_to_list(node()), "@"),
    H.

node_name(SName) -> list_to_atom(SName ++ "@" ++ host()).

%% Unique across concurrent CT runs on this host too (they share one epmd):
%% the VM's OS pid is part of the name.
unique(Prefix) ->
    Prefix ++ "_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

registry(Node) -> {'Elixir.KV.Registry', Node}.

%% start(Args) -> {ok, Handle}.  Handle is a map with node, owner, os_pid.
start(Args) -> start(unique("kv"), Args).

start(SName, Args) ->
    os:cmd("epmd -daemon"),
    launch(["--sname", SName], node_name(SName), Args, []).

%% Start the binary with a name option, cookie (unless Args has one) and
%% extra environment; wait for its ready line.  The owner process keeps the
%% port (and so the node's stdin) open.
launch(NameArgs, Node, Args, Env) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    HasCookie = lists:member("--cookie", Args) orelse lists:member("--cookie-file", Args),
    All = NameArgs ++ ["--exit-on-stdin-eof"] ++
          case HasCookie of true -> []; false -> ["--cookie", Cookie] end ++ Args,
    Self = self(),
    Owner = spawn(fun() -> owner_init(Self, All, Env) end),
    receive
        {Owner, ready, OsPid} ->
            {ok, #{node => Node, owner => Owner, os_pid => OsPid}};
        {Owner, failed, Why} ->
            {error, Why}
    after 15000 ->
        exit(Owner, kill),
        {error, timeout}
    end.

owner_init(Parent, Args, Env) ->
    Port = open_port({spawn_executable, bin()},
                     [{args, Args}, {env, Env}, {line, 4096}, binary, exit_status,
                      stderr_to_stdout, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    owner_wait(Parent, Port, OsPid, []).

owner_wait(Parent, Port, OsPid, Acc) ->
    receive
        {Port, {data, {eol, L}}} ->
            case binary:match(L, <<"ready on port">>) of
                nomatch -> owner_wait(Parent, Port, OsPid, [L | Acc]);
                _ ->
                    Parent ! {self(), ready, OsPid},
                    owner_loop(Port, OsPid, [L | Acc], undefined)
            end;
        {Port, {data, {noeol, L}}} -> owner_wait(Parent, Port, OsPid, [L | Acc]);
        {Port, {exit_status, S}} ->
            Parent ! {self(), failed, {exit_status, S, lists:reverse(Acc)}}
    end.

owner_loop(Port, OsPid, Acc, Status) ->
    receive
        {Port, {data, {_, L}}} -> owner_loop(Port, OsPid, [L | Acc], Status);
        {Port, {exit_status, S}} -> owner_loop(Port, OsPid, Acc, {exited, S});
        {lines, From} -> From ! {lines, self(), lists:reverse(Acc)},
                         owner_loop(Port, OsPid, Acc, Status);
        {stop, From} when Status =:= undefined ->
            os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
            receive {Port, {exit_status, S}} -> From ! {stopped, self(), S}
            after 10000 ->
                os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
                From ! {stopped, self(), killed}
            end;
        {stop, From} -> From ! {stopped, self(), Status}
    end.

%% stop(Handle) -> exit status of the OS process (0 for a clean stop).
stop(#{owner := Owner}) ->
    Owner ! {stop, self()},
    receive {stopped, Owner, S} -> S after 15000 -> timeout end.

os_pid(#{os_pid := P}) -> P.

lines(#{owner := Owner}) ->
    Owner ! {lines, self()},
    receive {lines, Owner, L} -> L after 5000 -> [] end.

%% Wait until a log line contains Pattern (a binary); Deadline in ms.
wait_line(H, Pattern, Ms) ->
    wait_until(fun() ->
                       lists:any(fun(L) -> binary:match(L, Pattern) =/= nomatch end, lines(H))
               end, Ms).

%% Poll Fun every 50 ms until it returns true or Ms pass.
wait_until(Fun, Ms) when Ms =< 0 -> Fun();
wait_until(Fun, Ms) ->
    case Fun() of
        true -> true;
        _ -> timer:sleep(50), wait_until(Fun, Ms - 50)
    end.

%% A BEAM peer node with the same cookie (unless Args set one).
start_peer(Name) -> start_peer(Name, []).
start_peer(Name, Args) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    {ok, Pid, Node} = peer:start(#{name => unique(Name),
                                   args => ["-setcookie", Cookie | Args]}),
    {Pid, Node}.

stop_peer({Pid, _Node}) ->
    catch peer:stop(Pid),
    ok.

%% start_long("name@host", Args) -> {ok, Handle}: like start/2 but with
%% --name (long names); Handle's node is the given name.
start_long(Name, Args) ->
    os:cmd("epmd -daemon"),
    launch(["--name", Name], list_to_atom(Name), Args, []).

%% The distribution port, from the "ready on port P" line.
port(H) ->
    [P | _] = [binary_to_integer(P0)
               || L <- lines(H),
                  {match, [P0]} <- [re:run(L, <<"ready on port ([0-9]+)">>,
                                           [{capture, all_but_first, binary}])]],
    P.

%% How many log lines contain Pattern (a binary).
count_lines(H, Pattern) ->
    length([L || L <- lines(H), binary:match(L, Pattern) =/= nomatch]).

%% start_env(SName, Args, Env) -> {ok, Handle}: like start/2, with Env
%% ([{Var, Value | false}]) added to the binary's environment (e.g.
%% ERL_EPMD_PORT for a private epmd, which must already be running: this
%% does not start the default epmd).
start_env(SName, Args, Env) ->
    launch(["--sname", SName], node_name(SName), Args, Env).

%% Open file descriptors of the node's OS process.
fd_count(H) ->
    {ok, Fds} = file:list_dir("/proc/" ++ integer_to_list(os_pid(H)) ++ "/fd"),
    length(Fds).

%% A /proc/PID/status memory figure in kB ("VmRSS", "VmHWM", ...).
vm_kb(H, Field) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(os_pid(H)) ++ "/status"),
    {match, [V]} = re:run(B, ["^", Field, ":\\s+([0-9]+) kB"],
                          [multiline, {capture, all_but_first, binary}]),
    binary_to_integer(V).

%% True when the binary runs under valgrind (make memcheck sets
%% KV_MEMCHECK=1): suites skip what only makes sense at native speed.
memcheck() -> os:getenv("KV_MEMCHECK") =:= "1".

%% The log lines kv_cnode writes when a peer node comes up or goes down.
up_line(Node) -> <<"node ", (atom_to_binary(Node))/binary, " up">>.

down_line(Node) -> <<"node ", (atom_to_binary(Node))/binary, " down">>.

%% The captures of regular expression Re in the node's log lines, a list
%% per matching line.
match_lines(H, Re) ->
    [M || L <- lines(H),
          {match, M} <- [re:run(L, Re, [{capture, all_but_first, binary}])]].

%% Run the binary with Args; {ExitStatus, bytes of the chosen stream
%% (stderr | stdout)}.  A binary still running after Ms is killed and the
%% caller fails.
run_bin(Args, Stream, Ms) ->
    Redir = case Stream of
                stderr -> "exec \"$0\" \"$@\" 2>&1 >/dev/null </dev/null";
                stdout -> "exec \"$0\" \"$@\" 2>/dev/null </dev/null"
            end,
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", Redir, bin() | Args]},
                      binary, exit_status, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    run_bin_collect(Port, OsPid, <<>>, Ms).

run_bin_collect(Port, OsPid, Acc, Ms) ->
    receive
        {Port, {data, D}} -> run_bin_collect(Port, OsPid, <<Acc/binary, D/binary>>, Ms);
        {Port, {exit_status, S}} -> {S, Acc}
    after Ms ->
        os:cmd("kill -9 " ++ integer_to_list(OsPid)),
        ct:fail({binary_did_not_exit, Acc})
    end.

%% Parallel map; a crash in any worker fails the caller with its reason.
pmap(F, L) ->
    Ws = [spawn_monitor(fun() -> exit({pmap_ok, F(X)}) end) || X <- L],
    [receive
         {'DOWN', Ref, process, Pid, {pmap_ok, R}} -> R;
         {'DOWN', Ref, process, Pid, Why} -> error({pmap_worker, Why})
     end || {Pid, Ref} <- Ws].

%% A janitor: a process registered as Name that holds what a test case
%% started (any terms), for the suite to undo when the case ends.
janitor_start(Name) ->
    J = spawn(fun() -> janitor_loop(Name, []) end),
    register(Name, J),
    J.

janitor_loop(Name, Items) ->
    receive
        {add, I} -> janitor_loop(Name, [I | Items]);
        {remove, I} -> janitor_loop(Name, lists:delete(I, Items));
        {take, From} -> From ! {Name, Items}
    end.

%% Record Item (returned); forget Item (the case undid it itself).
janitor_add(Name, Item) ->
    Name ! {add, Item},
    Item.

janitor_remove(Name, Item) ->
    Name ! {remove, Item},
    ok.

%% End the janitor Name: the items, last added first, or none when no
%% janitor runs.
janitor_take(Name) ->
    case whereis(Name) of
        undefined -> none;
        J ->
            J ! {take, self()},
            Items = receive {Name, Is} -> Is after 5000 -> [] end,
            catch unregister(Name),
            Items
    end.

%% peer:start/1 of a BEAM peer with this node's cookie, Dir on its code path
%% and a small footprint (one scheduler, no busy waiting), controlled over
%% its stdio (not over distribution); Extra are more VM arguments, Opts
%% override peer:start/1 options.  {PeerPid, Node}; a peer that does not
%% start fails the case.
start_small_peer(Name, Dir, Extra, Opts) ->
    Cookie = atom_to_list(erlang:get_cookie()),
    Args = ["-setcookie", Cookie, "-pa", Dir,
            "+S", "1:1", "+SDcpu", "1:1", "+SDio", "1", "+A", "1",
            "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none" | Extra],
    Defaults = #{name => Name, args => Args, wait_boot => 60000, connection => standard_io},
    case peer:start(maps:merge(Defaults, Opts)) of
        {ok, Pid, Node} -> {Pid, Node};
        Other -> ct:fail({peer_start_failed, Name, Other})
    end.
