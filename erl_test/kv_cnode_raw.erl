%% A raw distribution client for the Common Test suites: enough of the
%% protocol (version-6 handshake as the initiator, REG_SEND / SEND frames,
%% SEND replies, ticks) to send hand-built handshake packets and frames to
%% kv_cnode and watch what comes back, with the pieces split so that a case
%% can stop (or lie) at any step.  Used by kv_cnode_fault_SUITE and
%% kv_cnode_registry_SUITE.
%%
%% A connection is a map #{sock, pid, name, port}: pid is a hand-made pid of
%% the raw node (id 1), name its node name (a binary).
-module(kv_cnode_raw).
-export([flags/0, dial/1, dial/2, handshake/2, connect/1, connect/2, close/1,
         enc/1, pid/2, pid/3, call/3, call/4, calls/2, cast/3, send_ctrl/2, send_ctrl/3,
         send_frame/2, send_bytes/2, next_ctrl/2, wait_closed/2, port_of/1,
         gen_call_frame/4, ref/2]).

%% What an OTP 25/26 node offers, minus what kv_cnode would refuse to see
%% used (no atom cache, no fragments, no spawn/alias).
-define(FLAGS, (16#4 bor 16#8 bor 16#10 bor 16#20 bor 16#80 bor 16#100 bor 16#200 bor
                16#400 bor 16#800 bor 16#4000 bor 16#10000 bor 16#20000 bor 16#40000 bor
                16#1000000 bor 16#2000000 bor 16#4000000 bor (1 bsl 34))).

flags() -> ?FLAGS.

%% The distribution port of a node name (through the epmd erl_epmd uses),
%% or the port itself.
port_of(Port) when is_integer(Port) -> Port;
port_of(Node) when is_atom(Node) ->
    [Alive, Host] = string:split(atom_to_list(Node), "@"),
    {port, Port, _} = erl_epmd:port_please(Alive, Host),
    Port.

%% A plain TCP socket to the node's port, {packet, 2} (the handshake).
dial(NodeOrPort) -> dial(NodeOrPort, []).
dial(NodeOrPort, SockOpts) ->
    Port = port_of(NodeOrPort),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port,
                              [binary, {packet, 2}, {active, false} | SockOpts], 5000),
    S.

%% Run the initiator's handshake on a dialled socket.  Opts (a map):
%%   name    node name of the raw node (string; default raw_<unique>@host)
%%   cookie  (default: this node's cookie)
%%   flags   the flags of our 'N' (default flags())
%%   creation (default 1)
%% Returns {ok, Conn} | {status, Status} (a refusal status) |
%%         {error, Step, Reason}.
handshake(S, Opts) ->
    Host = host(),
    Me = iolist_to_binary(maps:get(name, Opts, kv_cnode_test_lib:unique("raw") ++ "@" ++ Host)),
    Cookie = maps:get(cookie, Opts, atom_to_list(erlang:get_cookie())),
    Flags = maps:get(flags, Opts, ?FLAGS),
    Creation = maps:get(creation, Opts, 1),
    case send_recv(S, <<"N", Flags:64, Creation:32, (byte_size(Me)):16, Me/binary>>) of
        {ok, <<"sok">>} ->
            case gen_tcp:recv(S, 0, 10000) of
                {ok, <<"N", _PFlags:64, Challenge:32, _Cr:32, NL:16, _Name:NL/binary>>} ->
                    Digest = erlang:md5([Cookie, integer_to_list(Challenge)]),
                    MyCh = rand:uniform(16#7fffffff),
                    case send_recv(S, <<"r", MyCh:32, Digest/binary>>) of
                        {ok, <<"a", D2:16/binary>>} ->
                            D2 = erlang:md5([Cookie, integer_to_list(MyCh)]),
                            ok = inet:setopts(S, [{packet, 4}]),
                            {ok, #{sock => S, name => Me, pid => pid(Me, 1, Creation),
                                   creation => Creation}};
                        Other -> {error, ack, Other}
                    end;
                Other -> {error, challenge, Other}
            end;
        {ok, <<"s", Status/binary>>} -> {status, Status};
        Other -> {error, status, Other}
    end.

%% A send that may meet a socket the node already closed.
send_recv(S, Packet) ->
    case gen_tcp:send(S, Packet) of
        ok -> gen_tcp:recv(S, 0, 10000);
        Error -> Error
    end.

%% dial + handshake, which must succeed.
connect(NodeOrPort) -> connect(NodeOrPort, #{}).
connect(NodeOrPort, Opts) ->
    S = dial(NodeOrPort, maps:get(sockopts, Opts, [])),
    case handshake(S, Opts) of
        {ok, C} -> C;
        Other -> gen_tcp:close(S), error({raw_handshake, Other})
    end.

close(#{sock := S}) -> gen_tcp:close(S).

%% External term format without the 131.
enc(T) ->
    <<131, R/binary>> = term_to_binary(T, [{minor_version, 2}]),
    R.

%% A pid on node NodeName (atom, string or binary), which need not exist.
pid(NodeName, Id) -> pid(NodeName, Id, 1).
pid(NodeName, Id, Creation) ->
    A = iolist_to_binary(if is_atom(NodeName) -> atom_to_binary(NodeName, utf8);
                            true -> NodeName
                         end),
    binary_to_term(<<131, 88, 119, (byte_size(A)), A/binary, Id:32, 0:32, Creation:32>>).

%% A reference of node NodeName.
ref(NodeName, N) ->
    A = iolist_to_binary(NodeName),
    binary_to_term(<<131, 90, 0, 3, 119, (byte_size(A)), A/binary, 1:32, N:32, 0:32, 0:32>>).

%% The frame body of a gen_server call from the raw node's pid with Tag.
gen_call_frame(#{pid := Me}, To, Tag, ReqBytes) ->
    Msg = <<131, 104, 3, (enc('$gen_call'))/binary, 104, 2, (enc(Me))/binary,
            (enc(Tag))/binary, ReqBytes/binary>>,
    Ctrl = if is_atom(To) -> {6, Me, '', To};
              is_pid(To) -> {2, '', To}
           end,
    [<<112>>, term_to_binary(Ctrl), Msg].

%% Call To (registered name or pid) with an encoded request (no 131);
%% the decoded reply, which must come within Ms (20 s for call/3).
call(C, To, ReqBytes) -> call(C, To, ReqBytes, 20000).
call(#{sock := S} = C, To, ReqBytes, Ms) ->
    Tag = make_ref(),
    ok = gen_tcp:send(S, gen_call_frame(C, To, Tag, ReqBytes)),
    [R] = replies(C, [Tag], deadline(Ms)),
    R.

%% Pipelined calls: [{To, ReqBytes}] all sent before any reply is read;
%% the replies in order.
calls(#{sock := S} = C, Reqs) ->
    Tagged = [{make_ref(), To, Req} || {To, Req} <- Reqs],
    [ok = gen_tcp:send(S, gen_call_frame(C, To, Tag, Req)) || {Tag, To, Req} <- Tagged],
    replies(C, [Tag || {Tag, _, _} <- Tagged], deadline(60000)).

%% A gen_server cast (REG_SEND to a name, SEND to a pid).
cast(#{sock := S, pid := Me}, To, ReqBytes) ->
    Msg = <<131, 104, 2, (enc('$gen_cast'))/binary, ReqBytes/binary>>,
    Ctrl = if is_atom(To) -> {6, Me, '', To};
              is_pid(To) -> {2, '', To}
           end,
    ok = gen_tcp:send(S, [<<112>>, term_to_binary(Ctrl), Msg]).

%% A control message (and an optional encoded message, with its 131).
send_ctrl(C, Ctrl) -> send_frame(C, [<<112>>, term_to_binary(Ctrl)]).
send_ctrl(C, Ctrl, MsgBin) -> send_frame(C, [<<112>>, term_to_binary(Ctrl), MsgBin]).

%% One frame: the 4-byte length is added (socket in {packet, 4}).
send_frame(#{sock := S}, Body) -> gen_tcp:send(S, Body).

%% Bytes as they are, no framing added (the socket goes {packet, raw}).
send_bytes(#{sock := S}, Bytes) ->
    ok = inet:setopts(S, [{packet, raw}]),
    gen_tcp:send(S, Bytes).

%% The next control message (ticks answered), none within Ms, or closed.
next_ctrl(#{sock := S} = C, Ms) ->
    case gen_tcp:recv(S, 0, Ms) of
        {ok, <<>>} -> _ = gen_tcp:send(S, <<>>), next_ctrl(C, Ms);
        {ok, <<112, Rest/binary>>} -> binary_to_term(Rest);
        {error, timeout} -> none;
        {error, _} -> closed
    end.

%% Read (and drop) everything until the node closes the connection:
%% closed | timeout.  Ticks are not answered: a closing node needs none.
wait_closed(#{sock := S}, Ms) ->
    _ = inet:setopts(S, [{packet, raw}]),
    wait_closed_sock(S, deadline(Ms)).

wait_closed_sock(S, Deadline) ->
    Left = Deadline - now_ms(),
    case Left > 0 andalso gen_tcp:recv(S, 0, Left) of
        false -> timeout;
        {ok, _} -> wait_closed_sock(S, Deadline);
        {error, timeout} -> timeout;
        {error, _} -> closed
    end.

%%--------------------------------------------------------------------

host() -> kv_cnode_test_lib:host().

now_ms() -> erlang:monotonic_time(millisecond).

deadline(Ms) -> now_ms() + Ms.

%% Collect the replies for Tags (any order on the wire), answering ticks
%% and skipping other frames; returned in the order of Tags.
replies(C, Tags, Deadline) ->
    Got = collect(C, maps:from_keys(Tags, []), length(Tags), #{}, Deadline),
    [maps:get(T, Got) || T <- Tags].

collect(_C, _Want, 0, Got, _Deadline) -> Got;
collect(#{sock := S} = C, Want, Left, Got, Deadline) ->
    Ms = Deadline - now_ms(),
    Ms > 0 orelse error({raw_reply_timeout, Left}),
    case gen_tcp:recv(S, 0, Ms) of
        {ok, <<>>} ->
            ok = gen_tcp:send(S, <<>>),
            collect(C, Want, Left, Got, Deadline);
        {ok, <<112, Rest/binary>>} ->
            {Ctrl, Used} = binary_to_term(Rest, [used]),
            <<_:Used/binary, MsgBin/binary>> = Rest,
            case {element(1, Ctrl), MsgBin} of
                {2, <<131, _/binary>>} ->
                    case binary_to_term(MsgBin) of
                        {Tag, Reply} when is_map_key(Tag, Want) ->
                            collect(C, maps:remove(Tag, Want), Left - 1,
                                    Got#{Tag => Reply}, Deadline);
                        _ -> collect(C, Want, Left, Got, Deadline)
                    end;
                _ -> collect(C, Want, Left, Got, Deadline)
            end;
        {error, Why} -> error({raw_connection, Why})
    end.
