%% kv_baseline - the BEAM baseline for `make bench`: the Elixir Mix & OTP
%% guide's KV application written in Erlang.
%%
%% As in the guide: a top supervisor (one_for_all) over a dynamic bucket
%% supervisor ('Elixir.KV.BucketSupervisor': simple_one_for_one, the Erlang
%% form of DynamicSupervisor, temporary children) and the registry
%% ('Elixir.KV.Registry'), whose state is {Names, Refs}: Names maps name ->
%% bucket pid, Refs maps monitor ref -> name.  lookup is a call and create a
%% cast, as in the guide; call create, call register and call count are
%% there for parity with kv_cnode.  Buckets are gen_servers (the guide's are
%% Agents, which are gen_servers too): call {get,K} -> V | nil,
%% call {put,K,V} -> ok, cast {put,K,V}.
%%
%% The bucket supervisor matters: the registry starts a bucket with a call
%% to it (a reference-tagged receive), so a registry with 100,000 create
%% casts queued does not rescan its mailbox for each start, as it would if
%% it called gen_server:start_link itself (proc_lib's ack is matched by pid).
-module(kv_baseline).
-export([start/0, stop/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(REG, 'Elixir.KV.Registry').
-define(SUP, 'Elixir.KV.BucketSupervisor').

%% Started from the bench client through peer:call: the tree is unlinked
%% from the short-lived caller.
start() ->
    {ok, Top} = supervisor:start_link({local, 'Elixir.KV.Supervisor'}, ?MODULE, top),
    unlink(Top),
    {ok, Top}.

stop() -> gen_server:stop('Elixir.KV.Supervisor').

%% supervisors
init(top) ->
    {ok, {#{strategy => one_for_all},
          [#{id => ?SUP, type => supervisor,
             start => {supervisor, start_link, [{local, ?SUP}, ?MODULE, bucket_sup]}},
           #{id => ?REG,
             start => {gen_server, start_link, [{local, ?REG}, ?MODULE, registry, []]}}]}};
init(bucket_sup) ->
    {ok, {#{strategy => simple_one_for_one},
          [#{id => bucket, restart => temporary,
             start => {gen_server, start_link, [?MODULE, bucket, []]}}]}};
%% gen_servers
init(registry) -> {ok, {#{}, #{}}};
init(bucket) -> {ok, {bucket, #{}}}.

%% --- bucket ---
handle_call({get, K}, _From, {bucket, M} = S) ->
    {reply, maps:get(K, M, nil), S};
handle_call({put, K, V}, _From, {bucket, M}) ->
    {reply, ok, {bucket, M#{K => V}}};
handle_call(_, _From, {bucket, _} = S) ->
    {reply, {error, unknown_call}, S};
%% --- registry ---
handle_call({lookup, Name}, _From, {Names, _} = S) when is_map(Names) ->
    {reply, maps:find(Name, Names), S};
handle_call({create, Name}, _From, {Names, _} = S) when is_map(Names) ->
    case Names of
        #{Name := Pid} -> {reply, {ok, Pid}, S};
        _ ->
            {Pid, S1} = new_bucket(Name, S),
            {reply, {ok, Pid}, S1}
    end;
handle_call({register, Name, Pid}, _From, {Names, Refs} = S) when is_map(Names) ->
    case Names of
        #{Name := Cur} -> {reply, {error, {already_registered, Cur}}, S};
        _ ->
            Ref = erlang:monitor(process, Pid),
            {reply, ok, {Names#{Name => Pid}, Refs#{Ref => Name}}}
    end;
handle_call(count, _From, {Names, _} = S) when is_map(Names) ->
    {reply, map_size(Names), S};
handle_call(_, _From, S) ->
    {reply, {error, unknown_call}, S}.

handle_cast({put, K, V}, {bucket, M}) ->
    {noreply, {bucket, M#{K => V}}};
handle_cast({create, Name}, {Names, _} = S) when is_map(Names) ->
    case maps:is_key(Name, Names) of
        true -> {noreply, S};
        false -> {_, S1} = new_bucket(Name, S), {noreply, S1}
    end;
handle_cast(_, S) ->
    {noreply, S}.

handle_info({'DOWN', Ref, process, _Pid, _Reason}, {Names, Refs}) when is_map(Names) ->
    case maps:take(Ref, Refs) of
        {Name, Refs1} -> {noreply, {maps:remove(Name, Names), Refs1}};
        error -> {noreply, {Names, Refs}}
    end;
handle_info(_, S) ->
    {noreply, S}.

new_bucket(Name, {Names, Refs}) ->
    {ok, Pid} = supervisor:start_child(?SUP, []),
    Ref = erlang:monitor(process, Pid),
    {Pid, {Names#{Name => Pid}, Refs#{Ref => Name}}}.
