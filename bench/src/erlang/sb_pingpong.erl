%% sb_pingpong: the Erlang side of switchboard-bench's `erlang` family, the baseline Switchboard
%% is held to. The bench embeds this file, compiles it with erlc into a temporary directory, and
%% starts two nodes with it: a server node (an echo process and a counting sink) and a client node
%% that the bench drives one command line at a time over stdin/stdout, so that the Erlang points
%% take their turns among the Switchboard ones like every other point of the bench.
%%
%% Commands (one line each; one reply line each):
%%   roundtrips N WarmupMs MeasureMs
%%       N processes each loop "send a binary to the echo process, wait for it back" for the
%%       warm-up, then the measured window. Only round trips that start and end inside the window
%%       are counted and timed, as the bench's own closed loop does.
%%       -> "roundtrips ElapsedNs Sample1 Sample2 ..." (each sample one round trip, in ns)
%%   casts WarmupMs MeasureMs
%%       One process sends the binary to the sink as fast as it can (64 sends, then a clock read)
%%       for the warm-up, then the window, then asks the sink for its count. Messages between two
%%       processes arrive in order, so the count's reply comes after the last cast was received:
%%       the elapsed time runs from the first send to the last delivery.
%%       -> "casts Delivered ElapsedNs Sent"
%%   anything that fails -> "error Reason"
-module(sb_pingpong).
-export([server/0, client/2]).

-define(BURST, 64).
-define(REPLY_TIMEOUT_MS, 5000).

%% The server node: registers `echo` and `sink`, says so on stderr, and runs until stdin closes
%% (the bench is gone, however it went).
server() ->
    or_halt(fun() ->
        register(echo, spawn(fun echo/0)),
        register(sink, spawn(fun() -> sink(0) end)),
        io:format(standard_error, "LISTENING ~s~n", [node()])
    end),
    until_eof().

%% Runs Start; if it fails, says why on stderr and stops the node, so the bench sees the node
%% end rather than waiting for a line that will never come.
or_halt(Start) ->
    try
        Start()
    catch
        Class:Reason ->
            io:format(standard_error, "sb_pingpong failed: ~p:~0p~n", [Class, Reason]),
            halt(1)
    end.

echo() ->
    receive
        {From, Ref, Payload} ->
            From ! {Ref, Payload},
            echo()
    end.

sink(Count) ->
    receive
        {cast, _Payload} -> sink(Count + 1);
        {count, From, Ref} -> From ! {Ref, Count}, sink(Count)
    end.

until_eof() ->
    case io:get_line(standard_io, "") of
        eof -> halt(0);
        {error, _} -> halt(0);
        _ -> until_eof()
    end.

%% The client node: connects to `Server`, finds its two processes, says READY and the OTP
%% release on stdout, then answers commands until stdin closes.
client(Server, PayloadBytes) ->
    {Echo, Sink} = or_halt(fun() ->
        true = net_kernel:connect_node(Server),
        E = rpc:call(Server, erlang, whereis, [echo]),
        S = rpc:call(Server, erlang, whereis, [sink]),
        true = is_pid(E) andalso is_pid(S),
        {E, S}
    end),
    Pattern = <<"switchboard-bench payload 0123456789 ">>,
    Payload = binary:part(binary:copy(Pattern, PayloadBytes div byte_size(Pattern) + 1),
                          0, PayloadBytes),
    io:format("READY ~s~n", [erlang:system_info(otp_release)]),
    commands(Echo, Sink, Payload).

commands(Echo, Sink, Payload) ->
    case io:get_line(standard_io, "") of
        eof ->
            halt(0);
        {error, _} ->
            halt(0);
        Line ->
            Reply =
                try
                    command(string:lexemes(string:trim(Line), " "), Echo, Sink, Payload)
                catch
                    Class:Reason -> io_lib:format("error ~p:~0p", [Class, Reason])
                end,
            io:put_chars([Reply, $\n]),
            commands(Echo, Sink, Payload)
    end.

command(["roundtrips", N, Warmup, Measure], Echo, _Sink, Payload) ->
    roundtrips(list_to_integer(N), list_to_integer(Warmup), list_to_integer(Measure), Echo, Payload);
command(["casts", Warmup, Measure], _Echo, Sink, Payload) ->
    casts(list_to_integer(Warmup), list_to_integer(Measure), Sink, Payload);
command(Other, _Echo, _Sink, _Payload) ->
    error({unknown_command, Other}).

%% Phases of a closed-loop measurement, in one atomic every pinger reads.
-define(WARMING, 0).
-define(MEASURING, 1).
-define(STOPPED, 2).

roundtrips(N, WarmupMs, MeasureMs, Echo, Payload) ->
    Phase = atomics:new(1, []),
    Self = self(),
    Pingers = [spawn(fun() -> Self ! {samples, self(), catch pinger(Echo, Payload, Phase)} end)
               || _ <- lists:seq(1, N)],
    timer:sleep(WarmupMs),
    atomics:put(Phase, 1, ?MEASURING),
    Started = erlang:monotonic_time(),
    timer:sleep(MeasureMs),
    atomics:put(Phase, 1, ?STOPPED),
    Elapsed = erlang:monotonic_time() - Started,
    Samples = [receive {samples, Pinger, S} -> S end || Pinger <- Pingers],
    case [S || S <- Samples, not is_list(S)] of
        [] -> ["roundtrips ", integer_to_list(nanoseconds(Elapsed)),
               [[$\s, integer_to_list(nanoseconds(T))] || List <- Samples, T <- List]];
        [Failure | _] -> error(Failure)
    end.

pinger(Echo, Payload, Phase) ->
    pinger(Echo, Payload, Phase, erlang:monotonic_time(), []).

%% One clock read per round trip: a round trip starts when the previous one ended.
pinger(Echo, Payload, Phase, Started, Samples) ->
    case atomics:get(Phase, 1) of
        ?STOPPED ->
            Samples;
        StartedIn ->
            Ref = make_ref(),
            Echo ! {self(), Ref, Payload},
            receive
                {Ref, Payload} -> ok
            after ?REPLY_TIMEOUT_MS ->
                exit(echo_timeout)
            end,
            Finished = erlang:monotonic_time(),
            Kept = case StartedIn =:= ?MEASURING andalso atomics:get(Phase, 1) =:= ?MEASURING of
                       true -> [Finished - Started | Samples];
                       false -> Samples
                   end,
            pinger(Echo, Payload, Phase, Finished, Kept)
    end.

casts(WarmupMs, MeasureMs, Sink, Payload) ->
    send_for(Sink, Payload, WarmupMs),
    Before = sink_count(Sink),
    Started = erlang:monotonic_time(),
    Sent = send_for(Sink, Payload, MeasureMs),
    After = sink_count(Sink),
    Elapsed = erlang:monotonic_time() - Started,
    io_lib:format("casts ~b ~b ~b", [After - Before, nanoseconds(Elapsed), Sent]).

send_for(Sink, Payload, Ms) ->
    End = erlang:monotonic_time() + erlang:convert_time_unit(Ms, millisecond, native),
    send_until(Sink, Payload, End, 0).

send_until(Sink, Payload, End, Sent) ->
    case erlang:monotonic_time() >= End of
        true -> Sent;
        false ->
            burst(Sink, Payload, ?BURST),
            send_until(Sink, Payload, End, Sent + ?BURST)
    end.

burst(_Sink, _Payload, 0) -> ok;
burst(Sink, Payload, K) ->
    Sink ! {cast, Payload},
    burst(Sink, Payload, K - 1).

sink_count(Sink) ->
    Ref = make_ref(),
    Sink ! {count, self(), Ref},
    receive
        {Ref, Count} -> Count
    after ?REPLY_TIMEOUT_MS ->
        error(sink_timeout)
    end.

nanoseconds(Native) ->
    erlang:convert_time_unit(Native, native, nanosecond).
