defmodule LockerAutoTest do
  # The libcluster scenario (issue 13): nodes started with the default
  # configuration (`masters: :auto`, here with `cluster_size: 3`), not
  # connected to each other at boot (`-connect_all false`: each is
  # connected to this test node only, which runs no automatic mode), then
  # connected with `Node.connect/1` as libcluster does.
  use ExUnit.Case, async: false
  alias LockerTest.Cluster

  @moduletag timeout: 180_000
  @env [cluster_size: 3, leave_grace_ms: 500, tick_ms: 200]

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)

  # Peers started with the default configuration plus @env, their log
  # events forwarded to this process.
  defp start_nodes(names) do
    peers =
      names
      |> Enum.map(&Task.async(fn -> Cluster.start_peer(&1, [~c"-connect_all", ~c"false"]) end))
      |> Enum.map(&Task.await(&1, 30_000))

    on_exit(fn -> Enum.each(peers, fn {peer, _} -> stop_peer(peer) end) end)

    for {_, node} <- peers do
      # The peer's log goes to this process only (not to the test output).
      for id <- rpc(node, :logger, :get_handler_ids, []),
          do: :ok = rpc(node, :logger, :remove_handler, [id])

      :ok = rpc(node, Application, :put_env, [:logger, :backends, []])

      :ok = rpc(node, LockerTest.LogForward, :add, [self()])
      :ok = Cluster.start_app(node, @env)
    end

    peers
    |> Enum.map(&elem(&1, 1))
    |> Enum.sort()
    |> then(&{&1, Map.new(peers, fn {p, n} -> {n, p} end)})
  end

  defp stop_peer(peer) do
    :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end

  defp status(node), do: rpc(node, :locker_auto, :status, [])

  defp await_masters(node, masters, timeout \\ 60_000) do
    Cluster.await(
      fn ->
        s = status(node)

        s.masters == Enum.sort(masters) and s.cluster != :undefined and s.quorum and
          not s.changing
      end,
      timeout
    )
  end

  defp await_log(node, substring) do
    receive do
      {:peer_log, ^node, _level, text} ->
        if String.contains?(text, substring), do: text, else: await_log(node, substring)
    after
      30_000 -> flunk("#{node} never logged #{inspect(substring)}")
    end
  end

  # The checker: every node of `nodes` tries to lock each of `rounds` fresh
  # keys at the same time; no key may be granted twice. Returns
  # {keys checked, attempts checked, grants}.
  defp contend(nodes, tag, rounds) do
    results =
      for i <- 1..rounds do
        key = {:contend, tag, i}

        grants =
          nodes
          |> Enum.map(&Task.async(fn -> rpc(&1, Locker, :lock, [key, &1, 2_000]) end))
          |> Enum.map(&Task.await(&1, 30_000))
          |> Enum.filter(&match?({:ok, _, _, _}, &1))

        assert length(grants) <= 1, "key #{inspect(key)} granted #{length(grants)} times"
        {1, length(nodes), length(grants)}
      end

    {keys, attempts, grants} =
      Enum.reduce(results, {0, 0, 0}, fn {k, a, g}, {k0, a0, g0} -> {k0 + k, a0 + a, g0 + g} end)

    IO.puts(
      "[auto] contention #{tag}: #{keys} keys, #{attempts} attempts, #{grants} grants, none twice"
    )

    {keys, attempts, grants}
  end

  # {:worker, 1} started on every node at once: how many got it, and the
  # pid every node resolves the name to.
  defp start_workers(nodes) do
    nodes
    |> Enum.map(&Task.async(fn -> rpc(&1, LockerTest.Echo, :start, [{:worker, 1}]) end))
    |> Enum.map(&Task.await(&1, 30_000))
  end

  defp start_until_registered(nodes, round) do
    started = start_workers(nodes)
    ok = Enum.filter(started, &match?({:ok, _}, &1))
    assert length(ok) <= 1, "{:worker, 1} registered twice: #{inspect(started)}"

    case ok do
      [{:ok, pid}] ->
        {pid, round}

      [] ->
        assert round < 100, "{:worker, 1} never registered: #{inspect(started)}"
        Process.sleep(50)
        start_until_registered(nodes, round + 1)
    end
  end

  test "a distributed node with the default masters: :auto and no cluster_size does not start, and says why" do
    {peer, n} = Cluster.start_peer("auto_nosize")

    try do
      :ok = rpc(n, Application, :load, [:locker])
      assert {:error, [message]} = rpc(n, Locker.Config, :check, [])
      assert message =~ "masters: :auto (the default) needs :cluster_size"

      assert {:error, {:locker, {{:bad_config, [^message]}, _}}} =
               rpc(n, Application, :ensure_all_started, [:locker])

      :ok = rpc(n, Application, :put_env, [:locker, :cluster_size, 0])
      assert {:error, [message]} = rpc(n, Locker.Config, :check, [])
      assert message =~ "cluster_size = 0: expected a positive integer"

      :ok = rpc(n, Application, :put_env, [:locker, :cluster_size, 3])
      assert rpc(n, Locker.Config, :check, []) == :ok
      assert {:ok, _} = rpc(n, Application, :ensure_all_started, [:locker])
      assert %{cluster: :undefined, masters: [^n], w: 2} = status(n)
      assert rpc(n, Locker, :lock, [:k, :v]) == {:error, :no_quorum}
    after
      stop_peer(peer)
    end
  end

  test "nodes connected after boot form one cluster: no grant before a quorum, one {:worker, 1}, joins and leaves" do
    {[a, b, c] = nodes, peers} = start_nodes(["auto_a", "auto_b", "auto_c"])

    # Alone, each node refuses, says why, and grants nothing.
    for n <- nodes do
      assert await_log(n, "no quorum: 1 of the 3 expected masters present") =~ "no_quorum"
      assert rpc(n, Locker, :lock, [{:alone, n}, n, 10_000]) == {:error, :no_quorum}
      assert %{cluster: :undefined, masters: [^n], w: 2, quorum: false} = status(n)
    end

    assert {3, 9, 0} = contend(nodes, :alone, 3)

    assert [] ==
             nodes |> start_workers() |> Enum.filter(&match?({:ok, _}, &1)),
           "{:worker, 1} registered before a quorum was connected"

    for n <- nodes,
        do: assert(rpc(n, Locker.Registry, :whereis_name, [{:worker, 1}]) == :undefined)

    # libcluster connects a and b: a quorum of the expected 3.
    t0 = System.monotonic_time(:millisecond)
    true = rpc(a, Node, :connect, [b])
    await_masters(a, [a, b])
    await_masters(b, [a, b])

    IO.puts(
      "[auto] a and b formed a cluster #{System.monotonic_time(:millisecond) - t0} ms after Node.connect"
    )

    assert await_log(a, "formed the cluster") =~ Atom.to_string(b)

    # Every node starts {:worker, 1} at once, again while none holds it (a
    # registration made while the configuration takes its epoch may be
    # refused, as a supervisor would restart it): exactly one succeeds,
    # ever.
    {pid, rounds} = start_until_registered(nodes, 1)
    IO.puts("[auto] {:worker, 1} registered after #{rounds} round(s) of 3 concurrent starts")
    assert node(pid) in [a, b]
    assert [] == nodes |> start_workers() |> Enum.filter(&match?({:ok, _}, &1))

    for n <- [a, b], do: assert(rpc(n, Locker.Registry, :whereis_name, [{:worker, 1}]) == pid)

    # Concurrent attempts may split the votes (then nobody gets the key);
    # never two holders. An attempt alone succeeds.
    {keys, attempts, grants} = contend([a, b, c], :two, 20)
    assert {keys, attempts} == {20, 60}
    assert grants <= 20
    assert {:ok, 2, _, _} = rpc(b, Locker, :lock, [:alone_two, b, 2_000])

    # c is connected later: it is added (through locker_membership).
    t1 = System.monotonic_time(:millisecond)
    true = rpc(c, Node, :connect, [a])
    true = rpc(c, Node, :connect, [b])
    for n <- nodes, do: await_masters(n, nodes)
    IO.puts("[auto] c added #{System.monotonic_time(:millisecond) - t1} ms after Node.connect")
    assert %{w: 2} = status(c)
    # A new master learns the names held before it joined from their next
    # extension (within registry_extend_interval); never another owner.
    Cluster.await(fn ->
      case rpc(c, Locker.Registry, :whereis_name, [{:worker, 1}]) do
        ^pid -> true
        :undefined -> false
        other -> flunk("c resolves {:worker, 1} to #{inspect(other)}, not #{inspect(pid)}")
      end
    end)

    assert [] == [c] |> start_workers() |> Enum.filter(&match?({:ok, _}, &1))

    {keys, attempts, grants} = contend(nodes, :three, 20)
    assert {keys, attempts} == {20, 60}
    assert grants <= 20
    assert {:ok, 2, _, _} = rpc(c, Locker, :lock, [:alone_three, c, 2_000])

    # c stops: removed after the grace period; {:worker, 1} stays one.
    t2 = System.monotonic_time(:millisecond)
    :ok = :peer.stop(peers[c])
    await_masters(a, [a, b])
    await_masters(b, [a, b])

    IO.puts(
      "[auto] c removed #{System.monotonic_time(:millisecond) - t2} ms after it stopped (grace 500 ms)"
    )

    assert rpc(a, Locker.Registry, :whereis_name, [{:worker, 1}]) == pid
    {keys, attempts, grants} = contend([a, b], :after_leave, 10)
    assert {keys, attempts} == {10, 20}
    assert grants <= 10
    assert {:ok, 2, 2, 2} = rpc(a, Locker, :lock, [:alone_after, a, 2_000])
  end
end
