%% @doc Start, stop and call a kv_cnode C node from Erlang or Elixir tests.
%%
%% ```
%% {ok, Node} = kv_cnode:start(#{}),
%% {ok, B} = kv_cnode:create(Node, <<"shopping">>),
%% ok = kv_cnode:put(B, milk, 3),
%% 3 = kv_cnode:get(B, milk),
%% ok = kv_cnode:stop(Node).
%% '''
%%
%% The binary is `priv/kv_cnode' of this application (`rebar3 compile' builds
%% it with `make priv'). Each node is run by a keeper process of its own, which
%% owns the port: the node is started with `--exit-on-stdin-eof', so it exits
%% when the port closes (the keeper or the whole VM died, even by `kill -9'),
%% and the keeper stops it (SIGTERM) when the owner process dies.
-module(kv_cnode).

-export([start/0, start/1, stop/1,
         lookup/2, create/2, get/2, put/3, delete/2, keys/1,
         os_pid/1, executable/0]).

-include_lib("kernel/include/file.hrl").

-define(DEFAULT_REGISTRY, 'Elixir.KV.Registry').
-define(DEFAULT_TIMEOUT, 10000).
-define(KEEP_LINES, 100).
-define(OPTS, [sname, cookie, registry, args, owner, timeout, executable]).

-type opts() :: #{sname => string() | binary() | atom(),
                  cookie => atom() | string() | binary(),
                  registry => atom(),
                  args => [string() | binary()],
                  owner => pid(),
                  timeout => non_neg_integer(),
                  executable => file:filename_all()}.
-type target() :: node() | {Registry :: atom(), node()}.
-export_type([opts/0, target/0]).

%%% ------------------------------------------------------------------
%%% Starting and stopping
%%% ------------------------------------------------------------------

-spec start() -> {ok, node()} | {error, term()}.
start() -> start(#{}).

%% @doc Start a node. Options (all optional):
%% `sname' (default a fresh unique name; the host is this node's),
%% `cookie' (default `erlang:get_cookie()'), `registry' (default
%% `` 'Elixir.KV.Registry' ''), `args' (extra command-line strings), `owner'
%% (the pid whose death stops the node; default the caller), `timeout' (ms,
%% default 10000), `executable' (default `priv/kv_cnode' of this app).
%% If this VM is not distributed it is made so (short names, a unique name).
%% Returns once the node answers a ping and its registry answers a call. On
%% failure no OS process is left and Reason is the node's own error line (a
%% binary) when it printed one.
-spec start(opts()) -> {ok, node()} | {error, term()}.
start(Opts) when is_map(Opts) ->
    try
        start1(check_opts(Opts))
    catch
        throw:{error, _} = Error -> Error
    end;
start(Opts) ->
    {error, {badarg, Opts}}.

start1(Opts) ->
    Timeout = maps:get(timeout, Opts, ?DEFAULT_TIMEOUT),
    Deadline = now_ms() + Timeout,
    Exe = case maps:find(executable, Opts) of
              {ok, E} -> to_list(E);
              error -> ok_or_throw(executable())
          end,
    ok = ensure_distributed(Deadline),
    Registry = maps:get(registry, Opts, ?DEFAULT_REGISTRY),
    Cookie = to_atom(maps:get(cookie, Opts, erlang:get_cookie())),
    Name = full_name(to_list(maps:get(sname, Opts, unique_name("kv_cnode")))),
    NameFlag = case longnames() of true -> "--name"; false -> "--sname" end,
    Argv = [NameFlag, Name, "--cookie", atom_to_list(Cookie),
            "--registry", atom_to_list(Registry), "--exit-on-stdin-eof"
            | [to_list(A) || A <- maps:get(args, Opts, [])]],
    Caller = self(),
    Tag = make_ref(),
    K = #{caller => Caller, tag => Tag, exe => Exe, argv => Argv,
          owner => maps:get(owner, Opts, Caller), deadline => Deadline,
          registry => Registry, cookie => Cookie},
    Keeper = spawn(fun() -> keeper(K) end),
    MRef = erlang:monitor(process, Keeper),
    receive
        {Tag, Result} ->
            erlang:demonitor(MRef, [flush]),
            Result;
        {'DOWN', MRef, process, Keeper, Why} ->
            {error, {keeper_died, Why}}
    end.

%% @doc Stop a node started by start/1 in this VM: SIGTERM (processes end with
%% `shutdown', watchers are told), then wait until the OS process has exited
%% and its epmd entry is gone (SIGKILL after 3 s if it does not stop).
%% Returns ok also for a node that is not (or no longer) running.
-spec stop(target()) -> ok.
stop({_Registry, Node}) when is_atom(Node) ->
    stop(Node);
stop(Node) when is_atom(Node) ->
    case keeper_pid(Node) of
        undefined -> ok;
        Pid ->
            MRef = erlang:monitor(process, Pid),
            Pid ! {stop, self(), MRef},
            receive
                {MRef, ok} -> erlang:demonitor(MRef, [flush]), ok;
                {'DOWN', MRef, process, Pid, _} -> ok
            end
    end.

%% @doc The OS pid of a node started by start/1 in this VM.
-spec os_pid(target()) -> {ok, integer()} | {error, not_running}.
os_pid({_Registry, Node}) when is_atom(Node) ->
    os_pid(Node);
os_pid(Node) when is_atom(Node) ->
    case keeper_pid(Node) of
        undefined -> {error, not_running};
        Pid ->
            MRef = erlang:monitor(process, Pid),
            Pid ! {os_pid, self(), MRef},
            receive
                {MRef, OsPid} -> erlang:demonitor(MRef, [flush]), {ok, OsPid};
                {'DOWN', MRef, process, Pid, _} -> {error, not_running}
            end
    end.

%% @doc Where start/1 finds the binary: priv/kv_cnode of this application,
%% else build/kv_cnode next to it (a checkout built with plain `make').
-spec executable() -> {ok, file:filename()} | {error, {no_executable, [file:filename()]}}.
executable() ->
    Candidates = candidates(),
    case [F || F <- Candidates, is_executable(F)] of
        [F | _] -> {ok, F};
        [] -> {error, {no_executable, Candidates}}
    end.

%%% ------------------------------------------------------------------
%%% Client calls (gen_server:call of the KV.Registry protocol)
%%% ------------------------------------------------------------------

%% @doc `{lookup, Name}' to the node's registry: `{ok, Bucket}' or `error'.
-spec lookup(target(), term()) -> {ok, pid()} | error.
lookup(Node, Name) -> gen_server:call(registry(Node), {lookup, Name}).

%% @doc `{create, Name}' (the call form): `{ok, Bucket}'.
-spec create(target(), term()) -> {ok, pid()}.
create(Node, Name) -> gen_server:call(registry(Node), {create, Name}).

%% @doc The value under Key, or `nil'.
-spec get(pid(), term()) -> term().
get(Bucket, Key) -> gen_server:call(Bucket, {get, Key}).

-spec put(pid(), term(), term()) -> ok.
put(Bucket, Key, Value) -> gen_server:call(Bucket, {put, Key, Value}).

%% @doc Remove Key; returns the old value or `nil'.
-spec delete(pid(), term()) -> term().
delete(Bucket, Key) -> gen_server:call(Bucket, {delete, Key}).

-spec keys(pid()) -> [term()].
keys(Bucket) -> gen_server:call(Bucket, keys).

registry({Registry, Node}) when is_atom(Registry), is_atom(Node) ->
    {Registry, Node};
registry(Node) when is_atom(Node) ->
    {persistent_term:get({?MODULE, registry, Node}, ?DEFAULT_REGISTRY), Node}.

%%% ------------------------------------------------------------------
%%% The keeper: owns the port, watches the owner
%%% ------------------------------------------------------------------

keeper(#{exe := Exe, argv := Argv, owner := Owner} = K) ->
    ORef = erlang:monitor(process, Owner),
    try open_port({spawn_executable, Exe},
                  [{args, Argv}, {line, 4096}, binary, exit_status,
                   stderr_to_stdout, use_stdio, hide]) of
        Port ->
            {os_pid, OsPid} = erlang:port_info(Port, os_pid),
            wait_ready(K#{port => Port, os_pid => OsPid, oref => ORef,
                          lines => [], partial => <<>>})
    catch
        error:Why -> reply(K, {error, {open_port, Why, Exe}})
    end.

wait_ready(#{port := Port, oref := ORef, deadline := Deadline} = K) ->
    receive
        {Port, {data, {eol, L0}}} ->
            {L, K1} = line(L0, K),
            case ready_line(L) of
                {ok, Node} -> answered(K1#{node => Node});
                nomatch -> wait_ready(K1)
            end;
        {Port, {data, {noeol, L}}} ->
            wait_ready(partial(L, K));
        {Port, {exit_status, Status}} ->
            reply(K, {error, exit_reason(Status, K)});
        {'DOWN', ORef, process, _, _} ->
            kill_os(K),
            reply(K, {error, owner_died})
    after max(0, Deadline - now_ms()) ->
        kill_os(K),
        reply(K, {error, {timeout, last_line(K)}})
    end.

%% The node is up (registered with epmd, listening): check that it answers.
answered(#{node := Node, cookie := Cookie, registry := Reg} = K) ->
    Cookie =:= erlang:get_cookie() orelse erlang:set_cookie(Node, Cookie),
    case poll_ping(K) of
        pong ->
            try gen_server:call({Reg, Node}, {lookup, '$kv_cnode_probe'},
                                max(1, maps:get(deadline, K) - now_ms())) of
                R when R =:= error; element(1, R) =:= ok ->
                    up(K);
                Other ->
                    fail(K, {registry_reply, Other})
            catch
                exit:Why -> fail(K, {registry_not_answering, Reg, Why})
            end;
        {exited, Status} ->
            reply(K, {error, exit_reason(Status, K)});
        owner_died ->
            stop_os(K),
            reply(K, {error, owner_died});
        pang ->
            fail(K, not_answering_ping)
    end.

poll_ping(#{node := Node, port := Port, oref := ORef, deadline := Deadline} = K) ->
    case net_adm:ping(Node) of
        pong -> pong;
        pang ->
            receive
                {Port, {exit_status, Status}} -> {exited, Status};
                {'DOWN', ORef, process, _, _} -> owner_died
            after 100 ->
                case now_ms() >= Deadline of
                    true -> pang;
                    false -> poll_ping(K)
                end
            end
    end.

fail(#{node := Node} = K, What) ->
    K1 = stop_os(K),
    reply(K1, {error, {What, Node, last_line(K1)}}).

up(#{node := Node, registry := Reg} = K) ->
    try register(keeper_name(Node), self()) of
        true ->
            Reg =:= ?DEFAULT_REGISTRY orelse
                persistent_term:put({?MODULE, registry, Node}, Reg),
            reply(K, {ok, Node}),
            loop(K)
    catch
        error:badarg -> fail(K, already_started)
    end.

loop(#{port := Port, oref := ORef} = K) ->
    receive
        {Port, {data, {eol, L}}} ->
            {_, K1} = line(L, K),
            loop(K1);
        {Port, {data, {noeol, L}}} ->
            loop(partial(L, K));
        {Port, {exit_status, _}} ->
            %% The node stopped on its own (sys:terminate of the registry...).
            forget(K);
        {'DOWN', ORef, process, _, _} ->
            forget(stop_os(K));
        {stop, From, Ref} ->
            forget(stop_os(K)),
            From ! {Ref, ok};
        {os_pid, From, Ref} ->
            From ! {Ref, maps:get(os_pid, K)},
            loop(K)
    end.

forget(#{node := Node, registry := Reg}) ->
    catch unregister(keeper_name(Node)),
    Reg =:= ?DEFAULT_REGISTRY orelse persistent_term:erase({?MODULE, registry, Node}),
    ok.

reply(#{caller := Caller, tag := Tag}, Result) ->
    Caller ! {Tag, Result},
    ok.

%% SIGTERM, wait for the exit (SIGKILL after 3 s), then for the epmd entry
%% to go. Returns K with the lines read meanwhile.
stop_os(#{port := Port} = K) ->
    receive
        {Port, {exit_status, _}} -> K
    after 0 ->
        signal("TERM", K),
        case wait_exit(K, now_ms() + 3000) of
            {ok, K1} -> wait_epmd_gone(K1), K1;
            {timeout, K1} -> kill_os(K1)
        end
    end.

%% SIGKILL and wait for the exit.
kill_os(K) ->
    signal("KILL", K),
    {_, K1} = wait_exit(K, now_ms() + 10000),
    K1.

wait_exit(#{port := Port} = K, Until) ->
    receive
        {Port, {exit_status, _}} -> {ok, K};
        {Port, {data, {eol, L}}} -> {_, K1} = line(L, K), wait_exit(K1, Until);
        {Port, {data, {noeol, L}}} -> wait_exit(partial(L, K), Until)
    after max(0, Until - now_ms()) ->
        {timeout, K}
    end.

signal(Sig, #{os_pid := OsPid}) ->
    _ = os:cmd("kill -" ++ Sig ++ " " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

wait_epmd_gone(#{node := Node}) ->
    [Name, Host] = string:split(atom_to_list(Node), "@"),
    Until = now_ms() + 2000,
    Gone = fun G() ->
                   case catch erl_epmd:port_please(Name, Host, 1000) of
                       {port, _, _} ->
                           now_ms() < Until andalso begin timer:sleep(20), G() end;
                       _ -> true
                   end
           end,
    Gone(),
    _ = erlang:disconnect_node(Node),
    ok;
wait_epmd_gone(_) ->
    ok.

%%% ------------------------------------------------------------------
%%% Output lines
%%% ------------------------------------------------------------------

line(L0, #{partial := P, lines := Ls} = K) ->
    L = <<P/binary, L0/binary>>,
    {L, K#{partial := <<>>, lines := lists:sublist([L | Ls], ?KEEP_LINES)}}.

partial(L, #{partial := P} = K) when byte_size(P) < 65536 ->
    K#{partial := <<P/binary, L/binary>>};
partial(_, K) ->
    K.

%% "kv_cnode NAME@HOST ready on port P"
ready_line(<<"kv_cnode ", Rest/binary>>) ->
    case binary:split(Rest, <<" ready on port ">>) of
        [Name, _Port] -> {ok, binary_to_atom(Name, utf8)};
        _ -> nomatch
    end;
ready_line(_) ->
    nomatch.

%% The node's error line: the last line that reports an error, else its
%% last line (a bad option prints exactly one line, "kv_cnode: ...").
exit_reason(Status, #{lines := Ls, partial := P}) ->
    All = [L || L <- [P | Ls], L =/= <<>>],
    Errors = [L || L <- All, binary:match(L, [<<" error:">>, <<"kv_cnode: ">>]) =/= nomatch],
    case {Errors, All} of
        {[E | _], _} -> E;
        {[], [L | _]} -> L;
        {[], []} -> {exit_status, Status}
    end.

last_line(#{lines := [L | _]}) -> L;
last_line(_) -> <<>>.

%%% ------------------------------------------------------------------
%%% Helpers
%%% ------------------------------------------------------------------

check_opts(Opts) ->
    maps:foreach(fun check_opt/2, Opts),
    Opts.

check_opt(K, V) ->
    Ok = case K of
             sname -> is_text(V) orelse is_atom(V);
             cookie -> is_text(V) orelse is_atom(V);
             registry -> is_atom(V);
             args -> is_list(V) andalso lists:all(fun is_text/1, V);
             owner -> is_pid(V);
             timeout -> is_integer(V) andalso V >= 0;
             executable -> is_text(V);
             _ -> unknown
         end,
    case Ok of
        true -> ok;
        false -> throw({error, {bad_option, K, V}});
        unknown -> throw({error, {unknown_option, K}})
    end.

is_text(V) when is_binary(V) -> true;
is_text(V) when is_list(V) -> io_lib:printable_unicode_list(V);
is_text(_) -> false.

to_list(V) when is_atom(V) -> atom_to_list(V);
to_list(V) when is_binary(V) -> unicode:characters_to_list(V);
to_list(V) when is_list(V) -> V.

to_atom(V) when is_atom(V) -> V;
to_atom(V) -> list_to_atom(to_list(V)).

ok_or_throw({ok, V}) -> V;
ok_or_throw({error, _} = E) -> throw(E).

now_ms() -> erlang:monotonic_time(millisecond).

unique_name(Prefix) ->
    Prefix ++ "_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

%% NAME -> NAME@HOST with this node's host, so both agree on the host part.
full_name(Name) ->
    case lists:member($@, Name) of
        true -> Name;
        false ->
            [_, Host] = string:split(atom_to_list(node()), "@"),
            Name ++ "@" ++ Host
    end.

longnames() ->
    try net_kernel:longnames() of
        B when is_boolean(B) -> B;
        _ -> false
    catch _:_ -> false
    end.

keeper_name(Node) ->
    list_to_atom("kv_cnode$" ++ atom_to_list(Node)).

keeper_pid(Node) ->
    try list_to_existing_atom("kv_cnode$" ++ atom_to_list(Node)) of
        Name -> whereis(Name)
    catch error:badarg -> undefined
    end.

%% Make this VM a distributed node (short names) if it is not one yet.
ensure_distributed(Deadline) ->
    case node() of
        nonode@nohost ->
            ensure_epmd(Deadline),
            Name = list_to_atom(unique_name("kv_cnode_client")),
            case net_kernel:start([Name, shortnames]) of
                {ok, _} -> ok;
                {error, {already_started, _}} -> ok;
                {error, Why} -> throw({error, {distribution, Why}})
            end;
        _ ->
            ok
    end.

ensure_epmd(Deadline) ->
    case epmd_up() of
        true -> ok;
        false ->
            case epmd_exe() of
                false -> throw({error, {distribution, no_epmd}});
                Epmd ->
                    Port = open_port({spawn_executable, Epmd},
                                     [{args, ["-daemon"]}, exit_status, hide]),
                    receive {Port, {exit_status, _}} -> ok
                    after max(0, Deadline - now_ms()) -> catch port_close(Port)
                    end,
                    wait_epmd(Deadline)
            end
    end.

wait_epmd(Deadline) ->
    case epmd_up() of
        true -> ok;
        false ->
            case now_ms() >= Deadline of
                true -> throw({error, {distribution, epmd_not_answering}});
                false -> timer:sleep(50), wait_epmd(Deadline)
            end
    end.

epmd_up() ->
    case catch erl_epmd:names("localhost") of
        {ok, _} -> true;
        _ -> false
    end.

epmd_exe() ->
    Erts = filename:join([code:root_dir(), "erts-" ++ erlang:system_info(version),
                          "bin", "epmd"]),
    case is_executable(Erts) of
        true -> Erts;
        false -> os:find_executable("epmd")
    end.

candidates() ->
    Priv = case code:priv_dir(kv_cnode) of
               {error, _} -> [];
               P -> [filename:join(P, "kv_cnode")]
           end,
    Lib = case code:lib_dir(kv_cnode) of
              {error, _} -> [];
              L -> [filename:join([L, "build", "kv_cnode"])]
          end,
    %% The source tree this module was compiled from (a checkout whose
    %% _build/ only has symlinks, or none to priv/).
    Src = case proplists:get_value(source, ?MODULE:module_info(compile)) of
              S when is_list(S) ->
                  D = filename:dirname(filename:dirname(S)),
                  [filename:join([D, "priv", "kv_cnode"]),
                   filename:join([D, "build", "kv_cnode"])];
              _ -> []
          end,
    uniq(Priv ++ Lib ++ Src).

uniq([]) -> [];
uniq([H | T]) -> [H | uniq([X || X <- T, X =/= H])].

is_executable(F) ->
    case file:read_file_info(F) of
        {ok, #file_info{type = regular, mode = M}} -> M band 8#111 =/= 0;
        _ -> false
    end.
