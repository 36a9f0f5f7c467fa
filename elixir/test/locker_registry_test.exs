defmodule LockerRegistryTest do
  # Locker.Registry and Locker.Server/Fsm/Statem across three masters
  # (W = 2), with a registry lease of 300 ms (extended every 100 ms).
  use ExUnit.Case, async: false
  alias LockerTest.Cluster
  alias Locker.Registry

  @lease 300

  setup_all do
    {nodes, peers} = Cluster.start([:ra, :rb, :rc], registry_lease: @lease)
    on_exit(fn -> Cluster.stop(peers) end)
    %{nodes: nodes}
  end

  setup context do
    # A name per test.
    %{name: {context.test, System.unique_integer()}}
  end

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)
  # start_link through :erpc would link to the short-lived call process.
  defp start(node, m, f, a), do: rpc(node, LockerTest.Remote, :start_unlinked, [m, f, a])

  defp whereis(nodes, name), do: for(n <- nodes, do: rpc(n, Registry, :whereis_name, [name]))

  # Arms a wait_for_release on every node (a message, no polling): returns
  # the os time in us when the last node saw the name go.
  defp arm_release_watch(nodes, name, timeout) do
    for n <- nodes, do: rpc(n, LockerTest.Remote, :watch_release, [name, self(), timeout])
  end

  defp await_released(nodes, name) do
    for n <- nodes do
      assert_receive {:released, ^n, ^name, reply, at}, 5000
      assert reply in [{:ok, :released}, {:error, :key_not_locked}]
      at
    end
    |> Enum.max()
  end

  test "the :via contract: register_name, whereis_name, send, unregister_name", %{
    nodes: nodes,
    name: name
  } do
    [a, b, c] = nodes
    {:ok, pid} = rpc(a, LockerTest.Remote, :spawn_registered, [name])
    assert whereis(nodes, name) == [pid, pid, pid]

    # Held by a live owner anywhere: :no, from any node, for any pid.
    assert rpc(b, Registry, :register_name, [name, self()]) == :no
    assert rpc(c, Registry, :register_name, [name, pid]) == :no

    # send/2 returns the pid; an unknown name exits with {:badarg, {name, msg}}.
    assert rpc(b, Registry, :send, [name, :hello]) == pid
    assert {:badarg, {:nobody, :hello}} == catch_exit(Registry.send(:nobody, :hello))

    assert {:exception, {:badarg, {:nobody, :msg}}} ==
             catch_exit(rpc(c, Registry, :send, [:nobody, :msg]))

    assert rpc(c, Registry, :unregister_name, [name]) == :ok
    assert whereis(nodes, name) == [:undefined, :undefined, :undefined]
    assert rpc(c, Registry, :unregister_name, [name]) == :ok
    assert rpc(a, Registry, :whereis_name, [:never_registered]) == :undefined
    send(pid, :stop)
  end

  test "a GenServer and a :gen_statem are called by their via tuple from other nodes",
       %{nodes: [a, b, c], name: name} do
    via = {:via, Registry, name}
    {:ok, pid} = rpc(a, LockerTest.Echo, :start, [name])
    assert {:pong, ^a, ^pid} = rpc(b, GenServer, :call, [via, :ping])
    assert {:pong, ^a, ^pid} = rpc(c, GenServer, :call, [via, :ping])

    svia = {:via, Registry, {:statem, name}}
    {:ok, spid} = rpc(b, LockerTest.Light, :start, [{:statem, name}])
    assert rpc(c, :gen_statem, :call, [svia, :flip]) == {:on, b}
    assert rpc(a, :gen_statem, :call, [svia, :flip]) == {:off, b}
    assert rpc(a, Registry, :whereis_name, [{:statem, name}]) == spid

    GenServer.stop(pid)
    :gen_statem.stop(spid)
  end

  test "a second registration of a held name gets {:error, {:already_started, pid}}",
       %{nodes: [a, b, c], name: name} do
    {:ok, pid} = rpc(a, LockerTest.Echo, :start, [name])
    assert rpc(b, LockerTest.Echo, :start, [name]) == {:error, {:already_started, pid}}

    # start_link too (from a process that outlives the call).
    assert rpc(c, GenServer, :start, [LockerTest.Echo, nil, [name: {:via, Registry, name}]]) ==
             {:error, {:already_started, pid}}

    GenServer.stop(pid)
  end

  test "Process.exit(pid, :kill) frees the name on every node at once", %{
    nodes: nodes,
    name: name
  } do
    [a | _] = nodes
    {:ok, pid} = rpc(a, LockerTest.Echo, :start, [name])
    arm_release_watch(nodes, name, 5000)
    started = System.os_time(:microsecond)
    Process.exit(pid, :kill)
    last = await_released(nodes, name)
    ms = (last - started) / 1000

    IO.puts(
      "\n[registry] name gone on all 3 nodes #{Float.round(ms, 2)} ms after :kill (target 50 ms)"
    )

    assert whereis(nodes, name) == [:undefined, :undefined, :undefined]
    # Released by the keeper, not left to expire (the test asserts the
    # mechanism, not a latency: the 300 ms lease is far above the target).
    assert ms < @lease

    # The name is free again at once.
    {:ok, pid2} = rpc(a, LockerTest.Echo, :start, [name])
    GenServer.stop(pid2)
  end

  test "any exit reason frees the name, for a bare process as for a GenServer", %{
    nodes: nodes,
    name: name
  } do
    [_, b, c] = nodes

    for {reason, n} <- [normal: 1, shutdown: 2, crash: 3] do
      key = {name, n}
      {:ok, pid} = rpc(b, LockerTest.Remote, :spawn_registered, [key])
      arm_release_watch(nodes, key, 5000)
      Process.exit(pid, reason)
      if reason == :normal, do: send(pid, :stop)
      await_released(nodes, key)
      assert whereis(nodes, key) == [:undefined, :undefined, :undefined]
    end

    {:ok, pid} = rpc(c, LockerTest.Echo, :start, [name])
    arm_release_watch(nodes, name, 5000)
    GenServer.stop(pid, :shutdown)
    await_released(nodes, name)
  end

  test "a supervisor restarts a killed named child at once, under the same name",
       %{nodes: [a | _] = nodes, name: name} do
    {:ok, sup} = rpc(a, LockerTest.Remote, :start_echo_supervisor, [name])

    Enum.reduce(1..10, rpc(a, Registry, :whereis_name, [name]), fn _, pid ->
      assert is_pid(pid)
      Process.exit(pid, :kill)
      # The owner's node never returns the dead pid.
      assert rpc(a, Registry, :whereis_name, [name]) != pid
      Cluster.await(fn -> match?([p, p, p] when is_pid(p) and p != pid, whereis(nodes, name)) end)
      hd(whereis(nodes, name))
    end)

    assert [{:echo, _, :worker, _}] = rpc(a, Supervisor, :which_children, [sup])
    Process.exit(sup, :shutdown)
  end

  test "many owners killed at once, during extension rounds: every name is freed",
       %{nodes: [_, b, _] = nodes, name: name} do
    names = for i <- 1..40, do: {name, i}
    pids = for n <- names, do: elem(rpc(b, LockerTest.Remote, :spawn_registered, [n]), 1)
    for n <- names, do: arm_release_watch(nodes, n, 5000)
    Enum.each(pids, &Process.exit(&1, :kill))
    for n <- names, do: await_released(nodes, n)
    assert Enum.all?(names, &(whereis(nodes, &1) == [:undefined, :undefined, :undefined]))
    assert Enum.all?(rpc(b, Registry.Keeper, :names, []), fn {n, _} -> n not in names end)
  end

  test "a name survives several lease periods with no code in the owner", %{
    nodes: nodes,
    name: name
  } do
    [a, b, _] = nodes
    {:ok, pid} = rpc(b, LockerTest.Remote, :spawn_registered, [name])
    assert {:ok, _} = rpc(a, :locker, :dirty_read, [name])

    # Wait for a release that must not come within 5 leases: every node's
    # wait_for_release times out (a message wait, not a sleep).
    arm_release_watch(nodes, name, 5 * @lease)

    for n <- nodes do
      assert_receive {:released, ^n, ^name, :timeout, _}, 10 * @lease
    end

    assert whereis(nodes, name) == [pid, pid, pid]

    assert [{^name, ^pid}] =
             rpc(b, Registry.Keeper, :names, []) |> Enum.filter(&(elem(&1, 0) == name))

    send(pid, :stop)
    arm_release_watch(nodes, name, 5000)
    await_released(nodes, name)
  end

  test "when the owner's node dies, the name frees when its lease runs out",
       %{nodes: nodes, name: name} do
    # A fourth node, not a master, using the three masters.
    {[d], [peer]} = Cluster.start([:rd], registry_lease: @lease, masters: nodes)
    {:ok, pid} = rpc(d, LockerTest.Remote, :spawn_registered, [name])
    assert whereis(nodes, name) == [pid, pid, pid]
    arm_release_watch(nodes, name, 5000)
    stopped = System.os_time(:microsecond)
    :peer.stop(peer)
    last = await_released(nodes, name)
    assert whereis(nodes, name) == [:undefined, :undefined, :undefined]
    # Freed by expiry: no later than a lease after the last extension.
    ms = (last - stopped) / 1000

    IO.puts(
      "\n[registry] name of a dead node gone #{Float.round(ms, 1)} ms after its stop (lease #{@lease} ms)"
    )

    assert ms <= @lease + 200
  end

  test "a keeper restarted after a crash adopts the names of the old one", %{
    nodes: [_, b, _] = nodes,
    name: name
  } do
    {:ok, pid} = rpc(b, LockerTest.Remote, :spawn_registered, [name])
    old = rpc(b, Process, :whereis, [Registry.Keeper])
    Process.exit(old, :kill)

    Cluster.await(fn ->
      keeper = rpc(b, Process, :whereis, [Registry.Keeper])
      is_pid(keeper) and keeper != old
    end)

    assert {name, pid} in rpc(b, Registry.Keeper, :names, [])
    left = rpc(b, Registry.Keeper, :remaining, [name, pid])
    assert is_integer(left) and left > 0 and left < @lease
    assert rpc(b, Registry.Keeper, :remaining, [name, self()]) == :error
    # Still extended (no release within 3 leases), still released at once
    # when the owner exits (monitored again).
    arm_release_watch(nodes, name, 3 * @lease)
    for n <- nodes, do: assert_receive({:released, ^n, ^name, :timeout, _}, 10 * @lease)
    assert whereis(nodes, name) == [pid, pid, pid]
    arm_release_watch(nodes, name, 5000)
    send(pid, :stop)
    await_released(nodes, name)
  end

  test "the registry's timing: defaults, and settings that could not keep the margin refused" do
    reg = &Locker.Config.registry/1
    assert %{lease: 5000, margin: 1000, extend_interval: 1666, on_lost: :exit} = reg.([])
    assert %{margin: 200, extend_interval: 333} = reg.(registry_lease: 1000)
    assert %{margin: 100, extend_interval: 100} = reg.(registry_lease: 300)
    assert %{margin: 50, extend_interval: 33} = reg.(registry_lease: 100)
    assert %{margin: 52, on_lost: :notify} = reg.(registry_margin: 52, registry_on_lost: :notify)

    for bad <- [
          [registry_lease: 0],
          [registry_lease: 1000, registry_margin: 11],
          [registry_lease: 1000, registry_margin: 1000],
          [registry_lease: 1000, registry_extend_interval: 800],
          [registry_on_lost: :ignore]
        ] do
      assert_raise ArgumentError, fn -> reg.(bad) end
    end
  end

  describe "a node that is neither master nor replica" do
    setup %{nodes: nodes} do
      {[e], [peer]} = Cluster.start([:re], registry_lease: @lease, masters: nodes)
      on_exit(fn -> :peer.stop(peer) end)
      %{e: e}
    end

    test "resolves names with whereis_name, send and calls by via tuple, as a master does",
         %{nodes: [a, b, c] = nodes, e: e, name: name} do
      # e stores nothing: the answers come from a master.
      assert rpc(e, :locker, :dirty_read, [name]) == {:error, :not_found}
      assert rpc(e, Registry, :whereis_name, [name]) == :undefined

      assert {:exception, {:badarg, {^name, :hi}}} =
               catch_exit(rpc(e, Registry, :send, [name, :hi]))

      {:ok, pid} = rpc(a, LockerTest.Echo, :start, [name])
      assert rpc(e, Registry, :whereis_name, [name]) == pid
      assert {:pong, ^a, ^pid} = rpc(e, GenServer, :call, [{:via, Registry, name}, :ping])
      assert rpc(e, Registry, :send, [name, {:echo, self()}]) == pid
      assert_receive {:echoed, ^a, ^pid}
      # Cached, watched by a master.
      assert {name, pid} in rpc(e, Registry.Resolver, :cached, [])

      svia = {:via, Registry, {:statem, name}}
      {:ok, spid} = rpc(b, LockerTest.Light, :start, [{:statem, name}])
      assert rpc(e, :gen_statem, :call, [svia, :flip]) == {:on, b}

      # Unregistered elsewhere (the owner lives on): the master's watch
      # drops the cached owner.
      assert rpc(c, Registry, :unregister_name, [name]) == :ok
      Cluster.await(fn -> rpc(e, Registry, :whereis_name, [name]) == :undefined end)
      refute List.keymember?(rpc(e, Registry.Resolver, :cached, []), name, 0)

      # A new owner is found; a dead one is dropped (its DOWN).
      {:ok, pid2} = rpc(b, LockerTest.Echo, :start, [name])
      Cluster.await(fn -> rpc(e, Registry, :whereis_name, [name]) == pid2 end)
      Process.exit(pid2, :kill)
      Cluster.await(fn -> rpc(e, Registry, :whereis_name, [name]) == :undefined end)
      assert whereis(nodes, name) == [:undefined, :undefined, :undefined]
      GenServer.stop(pid)
      :gen_statem.stop(spid)
    end

    test "its own names: registered from it, resolved, never a dead local owner",
         %{nodes: nodes, e: e, name: name} do
      {:ok, pid} = rpc(e, LockerTest.Remote, :spawn_registered, [name])
      assert whereis(nodes, name) == [pid, pid, pid]
      assert rpc(e, Registry, :whereis_name, [name]) == pid
      # Cached now; once the owner is dead, e never returns it, even before
      # the DOWN reaches the cache.
      assert {name, pid} in rpc(e, Registry.Resolver, :cached, [])
      assert rpc(e, LockerTest.Remote, :kill_then_whereis, [pid, name]) == :undefined
      arm_release_watch(nodes, name, 5000)
      await_released(nodes, name)
    end
  end

  describe "Locker.Server (elixir_locker's API)" do
    test "start/2 and start_link/2 with name:, terminate with super, release", %{
      nodes: [a, b, _] = nodes,
      name: name
    } do
      for start <- [:start, :start_link] do
        key = {name, start}
        args = [report: self()]
        {:ok, pid} = start(a, LockerTest.LServer, start, [args, [name: key]])
        assert whereis(nodes, key) == [pid, pid, pid]
        # elixir_locker puts the name in the args.
        assert GenServer.call(pid, :args) == [name: key, report: self()]
        assert rpc(b, GenServer, :call, [{:via, Registry, key}, :stop]) == :ok
        assert_receive {:terminated, ^pid, :ok}
        # terminate/2 released the name before the process exited.
        assert whereis(nodes, key) == [:undefined, :undefined, :undefined]
      end
    end

    test "without opts the server starts unregistered", %{nodes: [a | _]} do
      for start <- [:start, :start_link] do
        {:ok, pid} = start(a, LockerTest.LServer, start, [[]])
        assert is_pid(pid)
        assert rpc(a, Registry.Keeper, :names, []) |> Enum.all?(fn {_, p} -> p != pid end)
        GenServer.stop(pid)
      end
    end

    test "the $locker_extend_lease clause extends, other messages reach handle_info/2",
         %{nodes: [a | _], name: name} do
      {:ok, pid} = rpc(a, LockerTest.LServer, :start, [[], [name: name]])
      {:ok, _, [{^name, ^pid, before} | _], _, _, _} = leases_of(a, name)
      send(pid, {:"$locker_extend_lease", name, pid})
      send(pid, {:echo, self()})
      assert_receive {:echoed, ^pid}
      {:ok, _, [{^name, ^pid, later} | _], _, _, _} = leases_of(a, name)
      # Extended by lease_length (1000 ms) rather than the registry's 300.
      assert later > before + 500
      GenServer.stop(pid)
    end
  end

  defp leases_of(node, name) do
    {:ok, promises, leases, t1, t2, t3} = rpc(node, :locker, :get_debug_state, [])
    {:ok, promises, Enum.filter(leases, &(elem(&1, 0) == name)), t1, t2, t3}
  end

  describe "Locker.Fsm (elixir_locker's API)" do
    test "start/2 and start_link/2 with name:, terminate with super", %{
      nodes: [_, b, c] = nodes,
      name: name
    } do
      for start <- [:start, :start_link] do
        key = {name, start}
        {:ok, pid} = start(b, LockerTest.LFsm, start, [[report: self()], [name: key]])
        assert whereis(nodes, key) == [pid, pid, pid]
        via = {:via, Registry, key}
        assert rpc(c, Locker.Fsm, :sync_send_all_state_event, [via, :ping]) == {:pong, :started}
        assert rpc(c, Locker.Fsm, :sync_send_all_state_event, [via, :stop]) == :ok
        assert_receive {:terminated, ^pid, :ok}
        assert whereis(nodes, key) == [:undefined, :undefined, :undefined]
      end
    end

    test "start_link/2 takes the name from args too, as elixir_locker's did", %{
      nodes: [_, b, _],
      name: name
    } do
      {:ok, pid} = start(b, LockerTest.LFsm, :start_link, [[name: name]])
      assert rpc(b, Registry, :whereis_name, [name]) == pid
      assert Locker.Fsm.sync_send_all_state_event(pid, :stop) == :ok
    end

    test "without opts the FSM starts unregistered", %{nodes: [_, b, _]} do
      {:ok, pid} = rpc(b, LockerTest.LFsm, :start, [[]])
      assert Locker.Fsm.sync_send_all_state_event(pid, :stop) == :ok
    end
  end

  describe "Locker.Statem" do
    test "start/2 and start_link/2 with name:, terminate with super", %{
      nodes: [a, _, c] = nodes,
      name: name
    } do
      for start <- [:start, :start_link] do
        key = {name, start}
        {:ok, pid} = start(c, LockerTest.LStatem, start, [[report: self()], [name: key]])
        via = {:via, Registry, key}
        assert rpc(a, :gen_statem, :call, [via, :ping]) == {:pong, :ready}
        assert rpc(a, :gen_statem, :call, [via, :stop]) == :ok
        assert_receive {:terminated, ^pid, :ok}
        assert whereis(nodes, key) == [:undefined, :undefined, :undefined]
      end

      {:ok, pid} = rpc(c, LockerTest.LStatem, :start, [[]])
      assert :gen_statem.call(pid, :stop) == :ok
    end
  end

  test "unregister/0 releases the caller's own name only", %{nodes: [a, b, _] = nodes, name: name} do
    {:ok, pid} = rpc(a, LockerTest.LServer, :start, [[], [name: name]])
    # Not this process's name: nothing happens.
    assert rpc(b, Registry, :unregister, []) == :ok
    assert whereis(nodes, name) == [pid, pid, pid]
    GenServer.stop(pid)
  end
end
