%% Helpers shared by the Common Test suites: start and stop the kv_cnode
%% binary (and epmd), collect its log lines, start BEAM peer nodes.
%% Every node started here is stopped by the suite; the binary also runs with
%% --exit-on-stdin-eof, so it dies with the CT VM whatever happens.
-module(kv_cnode_test_lib).
-export([bin/0, host/0, node_name/1, start/1, start/2, stop/1, os_pid/1, lines/1,
         wait_line/3, registry/1, start_peer/1, start_peer/2, stop_peer/1,
         wait_until/2, unique/1]).

bin() ->
    case os:getenv("KV_CNODE_BIN") of
        false -> filename:absname("build/kv_cnode");
        B -> B
    end.

host() ->
    [_, H] = string:split(atom_to_list(node()), "@"),
    H.

node_name(SName) -> list_to_atom(SName ++ "@" ++ host()).

unique(Prefix) ->
    Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

registry(Node) -> {'Elixir.KV.Registry', Node}.

%% start(Args) -> {ok, Handle}.  Handle is a map with node, owner, os_pid.
start(Args) -> start(unique("kv"), Args).

start(SName, Args) ->
    os:cmd("epmd -daemon"),
    Cookie = atom_to_list(erlang:get_cookie()),
    HasCookie = lists:member("--cookie", Args) orelse lists:member("--cookie-file", Args),
    All = ["--sname", SName, "--exit-on-stdin-eof"] ++
          case HasCookie of true -> []; false -> ["--cookie", Cookie] end ++ Args,
    Self = self(),
    Owner = spawn(fun() -> owner_init(Self, All) end),
    receive
        {Owner, ready, OsPid} ->
            {ok, #{node => node_name(SName), owner => Owner, os_pid => OsPid}};
        {Owner, failed, Why} ->
            {error, Why}
    after 15000 ->
        exit(Owner, kill),
        {error, timeout}
    end.

owner_init(Parent, Args) ->
    Port = open_port({spawn_executable, bin()},
                     [{args, Args}, {line, 4096}, binary, exit_status,
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
