%% sb_cluster: one member of the Erlang clusters switchboard-bench's `cluster` family measures
%% beside Switchboard's. The bench embeds this file, compiles it with erlc into a temporary
%% directory, and starts N nodes with `-eval "sb_cluster:member(\"<seed>\")"`, the seed first.
%% Each member watches the cluster with net_kernel:monitor_nodes/2, connects to the seed (Erlang's
%% default -connect_all then links it to every node the seed knows: a full mesh), and writes
%% what it sees on stdout, stamped with the OS wall clock in microseconds, which the bench reads
%% exactly as it reads a Switchboard node's JSON log:
%%   SBC STARTED <us>
%%   SBC UP <node> <us>
%%   SBC DOWN <node> <us> <reason>
%% A line `ticktime <T>` on stdin starts a change of net_ticktime to T with a 5 s transition
%% (every node must start it within that), and `SBC TICKTIME <T> <us>` says when it took effect.
%% It runs until its stdin closes (the bench is gone, however it went).
-module(sb_cluster).
-export([member/1]).

member(Seed) ->
    ok = net_kernel:monitor_nodes(true, [nodedown_reason]),
    [_, Host] = string:split(atom_to_list(node()), "@"),
    SeedNode = list_to_atom(Seed ++ "@" ++ Host),
    say("STARTED", []),
    Self = self(),
    spawn_link(fun() -> until_eof(Self) end),
    case SeedNode =:= node() of
        true -> ok;
        % Asynchronously, so that the ups it brings are written when they happen.
        false -> spawn(fun() -> net_kernel:connect_node(SeedNode) end)
    end,
    watch().

watch() ->
    receive
        {nodeup, Node, _Info} ->
            say("UP", [atom_to_list(Node)]);
        {nodedown, Node, Info} ->
            Reason = proplists:get_value(nodedown_reason, Info, unknown),
            say("DOWN", [atom_to_list(Node), io_lib:format("~0p", [Reason])]);
        eof ->
            halt(0)
    end,
    watch().

%% `STARTED <us>`, `UP <node> <us>`, `DOWN <node> <us> <reason>`: the time after the node name.
say(What, []) ->
    io:format("SBC ~s ~b~n", [What, os:system_time(microsecond)]);
say(What, [Node | Rest]) ->
    io:format("SBC ~s ~s ~b~s~n", [What, Node, os:system_time(microsecond),
                                    [[" ", R] || R <- Rest]]).

until_eof(Owner) ->
    case io:get_line(standard_io, "") of
        eof -> Owner ! eof;
        {error, _} -> Owner ! eof;
        "ticktime " ++ Rest ->
            Ticktime = list_to_integer(string:trim(Rest)),
            net_kernel:set_net_ticktime(Ticktime, 5),
            spawn(fun() -> ticktime_set(Ticktime) end),
            until_eof(Owner);
        _ -> until_eof(Owner)
    end.

%% Says when the net_ticktime change to Ticktime has taken effect (after its transition).
ticktime_set(Ticktime) ->
    case net_kernel:get_net_ticktime() of
        Ticktime ->
            io:format("SBC TICKTIME ~b ~b~n", [Ticktime, os:system_time(microsecond)]);
        _ ->
            receive after 100 -> ticktime_set(Ticktime) end
    end.
