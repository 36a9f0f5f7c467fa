defmodule LockerRegistryParityTest do
  # Registry parity (lookup, meta, select/names/count, child spec, no
  # quorum told apart from a held name) across three masters and a fourth
  # node that is neither master nor replica.
  use ExUnit.Case, async: false
  alias LockerTest.Cluster
  alias Locker.Registry

  setup_all do
    {masters, peers} = Cluster.start([:bp_a, :bp_b, :bp_c])
    {[d], more} = Cluster.start([:bp_d], masters: masters)
    on_exit(fn -> Cluster.stop(peers ++ more) end)
    %{masters: masters, all: masters ++ [d], d: d}
  end

  setup context do
    %{name: {context.test, System.unique_integer()}}
  end

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)

  test "metadata is readable from every node, masters and others; plain names have nil",
       %{all: [a | _] = all, d: d, name: name} do
    {:ok, pid} = rpc(d, LockerTest.Echo, :start, [{Registry, name, %{shard: 3}}])
    {:ok, plain} = rpc(a, LockerTest.Echo, :start, [{name, :plain}])

    for n <- all do
      assert rpc(n, Registry, :lookup, [name]) == [{pid, %{shard: 3}}]
      assert rpc(n, Registry, :meta, [name]) == {:ok, %{shard: 3}}
      # The :via contract sees the pid, by the plain name and the tagged one.
      assert rpc(n, Registry, :whereis_name, [name]) == pid
      assert rpc(n, Registry, :whereis_name, [{Registry, name, :ignored}]) == pid
      assert rpc(n, GenServer, :call, [{:via, Registry, name}, :ping]) == {:pong, d, pid}
      assert rpc(n, Registry, :lookup, [{name, :plain}]) == [{plain, nil}]
      assert rpc(n, Registry, :meta, [{name, :nobody}]) == :error
      assert rpc(n, Registry, :lookup, [{name, :nobody}]) == []
    end

    # The keeper extends a name with metadata (the stored value is not the
    # bare pid): still held after several extension rounds.
    Process.sleep(Locker.Config.registry_extend_interval() * 3)
    assert rpc(a, Registry, :lookup, [name]) == [{pid, %{shard: 3}}]

    # Killed: released everywhere, metadata gone with it.
    Process.exit(pid, :kill)

    Cluster.await(fn ->
      Enum.all?(all, &(rpc(&1, Registry, :lookup, [name]) == []))
    end)

    GenServer.stop(plain)
  end

  test "register/2 for the caller: ok, already registered, unregister",
       %{masters: [a, b, _], d: d, name: name} do
    call = fn node, f, args ->
      {:ok, result} = rpc(node, LockerTest.Remote, :call_in_new_process, [Registry, f, args])
      result
    end

    assert call.(a, :register, [name, :m]) == :ok
    holder = rpc(a, Registry, :whereis_name, [name])
    assert is_pid(holder) and node(holder) == a
    assert call.(d, :register, [name, :other]) == {:error, {:already_registered, holder}}
    assert rpc(b, Registry, :meta, [name]) == {:ok, :m}
    assert rpc(d, Registry, :meta, [name]) == {:ok, :m}

    # Registered, then unregistered by the same process (on d, not a master).
    me = self()

    spawned = rpc(d, LockerTest.Remote, :spawn_register_meta, [{name, 2}, [1, 2], me])
    assert_receive {:registered, ^spawned, :ok}, 5000
    assert rpc(b, Registry, :lookup, [{name, 2}]) == [{spawned, [1, 2]}]
    send(spawned, :unregister)
    assert_receive {:unregistered, :ok}, 5000
    assert rpc(b, Registry, :lookup, [{name, 2}]) == []
    Process.exit(spawned, :kill)
    Process.exit(holder, :kill)
  end

  test "select, names and count list the names of every node, with their metadata",
       %{all: [a, b, _, d] = all, name: name} do
    {:ok, p1} = rpc(a, LockerTest.Echo, :start, [{Registry, {name, 1}, :one}])
    {:ok, p2} = rpc(b, LockerTest.Echo, :start, [{name, 2}])
    {:ok, p3} = rpc(d, LockerTest.Echo, :start, [{Registry, {name, 3}, :three}])
    # Held by a lock, not a registered name: not listed.
    {:ok, _, _, _} = rpc(a, Locker, :lock, [{name, :lock}, self(), 60_000])

    spec = [{{{name, :"$1"}, :"$2", :"$3"}, [], [{{:"$1", :"$2", :"$3"}}]}]
    want = [{1, p1, :one}, {2, p2, nil}, {3, p3, :three}]

    for n <- all do
      assert Enum.sort(rpc(n, Registry, :select, [spec])) == want
      names = rpc(n, Registry, :names, [])
      assert Enum.sort(for {^name, i} <- names, do: i) == [1, 2, 3]
      assert rpc(n, Registry, :count, []) >= 3
    end

    # The names of one pid, from any node.
    assert rpc(d, Registry, :keys, [p3]) == [{name, 3}]
    assert rpc(a, Registry, :keys, [self()]) == []

    # A guard in the spec, as Registry.select/2.
    only_meta = [{{{name, :_}, :"$1", :"$2"}, [{:"/=", :"$2", nil}], [:"$1"]}]
    assert Enum.sort(rpc(d, Registry, :select, [only_meta])) == Enum.sort([p1, p3])

    assert_raise ArgumentError, ~r/match specification/, fn -> Registry.select(:nope) end

    GenServer.stop(p2)
    Cluster.await(fn -> rpc(a, Registry, :select, [spec]) |> length() == 2 end)
    GenServer.stop(p1)
    GenServer.stop(p3)
    {:ok, _, _, _} = rpc(a, Locker, :release, [{name, :lock}, self()])
  end

  test "without a quorum, a via start fails with {:locker_no_quorum, name}, not already_started" do
    # One master of two up, W = 2: nothing can be granted.
    {[n], peers} =
      Cluster.start([:bp_nq],
        masters: [:"bp_nq_ghost@127.0.0.1"],
        quorum: 2,
        autostart: false
      )

    on_exit(fn -> Cluster.stop(peers) end)
    rpc(n, LockerTest.Remote, :forward_logs, [self()])

    {:ok, _} =
      rpc(n, LockerTest.Remote, :start_unlinked, [
        Locker,
        :start_link,
        [[masters: [n, :"bp_nq_ghost@127.0.0.1"], quorum: 2]]
      ])

    # The server's start says which master it cannot reach.
    assert_receive {:log, ^n, :warning, text}, 5000
    assert text =~ "unknown or unreachable nodes among the masters and replicas"
    assert text =~ "bp_nq_ghost@127.0.0.1"

    # (The telemetry event and the log line: LockerTelemetryTest.)
    assert rpc(n, LockerTest.Echo, :start, [:held_nowhere]) ==
             {:error, {:locker_no_quorum, :held_nowhere}}

    assert rpc(n, LockerTest.Remote, :call_in_new_process, [Registry, :register, [:x, 1]]) ==
             {:ok, {:error, :no_quorum}}
  end

  test "costs: lookup on a master and elsewhere, select and count over the cluster",
       %{masters: [a, b, _], d: d, name: name} do
    n = 1000
    pids = rpc(b, LockerTest.Remote, :spawn_many_registered, [name, n])

    median = fn node, f, args, batch ->
      rpc(node, LockerTest.Remote, :median_us, [Registry, f, args, 21, batch])
    end

    assert rpc(d, Registry, :lookup, [{name, 7}]) == [{Enum.at(pids, 6), 7}]
    spec = [{{{name, :"$1"}, :_, :_}, [], [:"$1"]}]
    assert length(rpc(d, Registry, :select, [spec])) == n
    assert rpc(a, Registry, :count, []) >= n

    IO.puts(
      "\n[registry] #{n} names on one node: lookup/1 median #{median.(a, :lookup, [{name, 7}], 100)} us " <>
        "on a master, #{median.(d, :lookup, [{name, 7}], 100)} us on a non-member; " <>
        "count/0 #{median.(d, :count, [], 1)} us, select/1 #{median.(d, :select, [spec], 1)} us " <>
        "(4 nodes asked)"
    )

    for p <- pids, do: GenServer.stop(p)
  end

  test "an owner on an unreachable node, or on a node without locker: a clear exit, the name released",
       %{masters: [a | _], name: name} do
    {peer, gone} = Cluster.start_peer(:bp_gone)
    far = rpc(gone, :erlang, :whereis, [:init])
    :peer.stop(peer)

    assert rpc(a, LockerTest.Remote, :call_in_new_process, [
             Locker.Registry,
             :register_name,
             [name, far]
           ]) ==
             {:ok, {:exit, {:node_unreachable, gone}}}

    {peer, bare} = Cluster.start_peer(:bp_bare)
    on_exit(fn -> :peer.stop(peer) end)
    pid = rpc(bare, :erlang, :whereis, [:init])

    assert rpc(a, LockerTest.Remote, :call_in_new_process, [
             Locker.Registry,
             :register_name,
             [name, pid]
           ]) ==
             {:ok, {:exit, {:no_registry_keeper, bare}}}

    # Released both times.
    assert rpc(a, Registry, :lookup, [name]) == []
  end

  test "a registry started in the user's own tree with the child spec", %{masters: masters} do
    {[n], peers} = Cluster.start([:bp_cs], masters: masters, registry_autostart: false)
    on_exit(fn -> Cluster.stop(peers) end)
    assert rpc(n, Process, :whereis, [Registry.Keeper]) == nil
    assert rpc(n, Registry, :child_spec, [[]]).type == :supervisor

    {:ok, _sup} =
      rpc(n, LockerTest.Remote, :start_unlinked, [
        Supervisor,
        :start_link,
        [[Registry], [strategy: :one_for_one]]
      ])

    {:ok, pid} = rpc(n, LockerTest.Echo, :start, [{:own_tree, n}])
    assert rpc(hd(masters), Registry, :whereis_name, [{:own_tree, n}]) == pid
    assert_raise ArgumentError, ~r/takes no options/, fn -> Registry.start_link(x: 1) end
  end
end
