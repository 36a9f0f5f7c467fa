defmodule LockerRegistryPartitionTest do
  # Singleton names across real partitions (issue 13, point 3): a node
  # cut off from the others, its reconnection refused with
  # `net_kernel:allow/1`, while this test node stays connected to every
  # node and observes: it monitors the old owners, and times on its own
  # monotonic clock when each old owner died (or was told) and when the
  # registration of the new owner on the majority side started. The
  # overlap (old owner's end minus new owner's start) must not exceed the
  # margin; the keeper aims at about minus the margin.
  #
  # Each test starts its own nodes (the allow lists stay on a node).
  use ExUnit.Case, async: false
  alias LockerTest.Cluster
  alias Locker.Registry

  @lease 1500
  @moduletag timeout: 120_000

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)
  defp now_us, do: System.monotonic_time(:microsecond)

  # A process of this node that stamps, on arrival, the deaths of the
  # processes it is asked to monitor, the messages owners forward, and the
  # lines and exit status of a port it opens.
  defp observer do
    test = self()
    spawn_link(fn -> observe(test, nil) end)
  end

  defp observe(test, port) do
    receive do
      {:monitor, pid} ->
        Process.monitor(pid)
        send(test, {:monitoring, pid})
        observe(test, port)

      {:open, exe, args} ->
        port =
          Port.open({:spawn_executable, exe}, [
            :binary,
            :exit_status,
            {:line, 4096},
            args: args,
            env: [{~c"RUST_LOG", ~c"error"}]
          ])

        {:os_pid, os_pid} = Port.info(port, :os_pid)
        send(test, {:opened, os_pid})
        observe(test, port)

      {:DOWN, _, :process, pid, reason} ->
        at = now_us()
        send(test, {:observed, :down, pid, reason, at})
        observe(test, port)

      {:owner_got, pid, msg} ->
        at = now_us()
        send(test, {:observed, :msg, pid, msg, at})
        observe(test, port)

      {^port, {:data, {:eol, line}}} ->
        at = now_us()
        send(test, {:observed, :line, line, at})
        observe(test, port)

      {^port, {:exit_status, status}} ->
        at = now_us()
        send(test, {:observed, :exit, status, at})
        observe(test, nil)
    end
  end

  defp monitor(obs, pid) do
    send(obs, {:monitor, pid})
    assert_receive {:monitoring, ^pid}
  end

  # Registers a new owner of `name` from `at` as soon as every master of
  # `majority` has let the old lease go: the time returned is taken on
  # this node before the successful registration's request was sent.
  defp take_over(name, majority, at) do
    Task.async(fn -> take_over(name, majority, at, 200) end)
  end

  defp take_over(name, majority, at, tries) do
    for n <- majority, do: rpc(n, :locker, :wait_for_release, [name, 30_000])
    started = now_us()

    case rpc(at, LockerTest.Remote, :spawn_registered, [name]) do
      {:ok, pid} -> {pid, started}
      {:error, :no} when tries > 1 -> take_over(name, majority, at, tries - 1)
    end
  end

  defp whereis(nodes, name), do: for(n <- nodes, do: rpc(n, Registry, :whereis_name, [name]))

  defp ms(us), do: Float.round(us / 1000, 1)

  test "owners cut off from the quorum stop (or are told) before the name can be taken elsewhere; one owner after the heal" do
    {[a, b, d] = nodes, peers} = Cluster.start([:npa, :npb, :npd], registry_lease: @lease)
    on_exit(fn -> Cluster.stop(peers) end)
    for n <- nodes, do: :ok = rpc(n, LockerTest.Remote, :quiet_partition_logs, [])
    %{margin: margin, extend_interval: interval} = rpc(d, Locker.Config, :registry, [[]])
    obs = observer()
    base = System.unique_integer([:positive])

    # Every kind of owner, on d; what each must become.
    starts = [
      plain: {fn n -> rpc(d, LockerTest.Remote, :spawn_registered, [n]) end, :lost},
      gen_server: {fn n -> rpc(d, LockerTest.Echo, :start, [n]) end, :lost},
      locker_server: {fn n -> rpc(d, LockerTest.LServer, :start, [[], [name: n]]) end, :lost},
      locker_server_trapping_exits:
        {fn n -> rpc(d, LockerTest.LServer, :start, [[trap: true], [name: n]]) end, :lost},
      locker_fsm: {fn n -> rpc(d, LockerTest.LFsm, :start, [[], [name: n]]) end, :lost},
      locker_statem: {fn n -> rpc(d, LockerTest.LStatem, :start, [[], [name: n]]) end, :lost},
      gen_server_ignoring_the_exit:
        {fn n -> rpc(d, LockerTest.TrapEcho, :start, [n]) end, :killed},
      notify_only: {fn n -> rpc(d, LockerTest.Remote, :spawn_notified, [n, obs]) end, :notified}
    ]

    owners =
      for {kind, {start, expect}} <- starts do
        name = {:partition, base, kind}
        {:ok, pid} = start.(name)
        monitor(obs, pid)
        %{kind: kind, name: name, pid: pid, expect: expect}
      end

    for o <- owners, do: assert(whereis([a, b, d], o.name) == [o.pid, o.pid, o.pid])

    # The partition: d refuses every node but this one, and drops a and b.
    cut_at = now_us()
    :ok = rpc(d, :net_kernel, :allow, [[node(), d]])
    for n <- [a, b], do: rpc(d, :erlang, :disconnect_node, [n])
    refute a in rpc(d, Node, :list, [])
    refute b in rpc(d, Node, :list, [])

    tasks = for o <- owners, do: take_over(o.name, [a, b], a)
    new = Task.await_many(tasks, 60_000)

    results =
      for {o, {new_pid, started}} <- Enum.zip(owners, new) do
        %{pid: pid, name: name} = o

        ended =
          case o.expect do
            :lost ->
              expected = {:shutdown, {:locker_name_lost, name}}
              assert_receive {:observed, :down, ^pid, ^expected, at}, 10_000
              at

            :killed ->
              assert_receive {:observed, :down, ^pid, :killed, at}, 10_000
              at

            :notified ->
              assert_receive {:observed, :msg, ^pid, {:locker_name_lost, ^name}, at}, 10_000
              assert rpc(d, Process, :alive?, [pid])
              at
          end

        Map.merge(o, %{new: new_pid, overlap: ended - started, after_cut: ended - cut_at})
      end

    IO.puts(
      "\n[partition] lease #{@lease} ms, margin #{margin} ms, extended every #{interval} ms; " <>
        "overlap = old owner's end (its DOWN, or the notice, on the observer) - start of the new " <>
        "owner's registration (negative: no overlap)"
    )

    for r <- results do
      IO.puts(
        "[partition]   #{String.pad_trailing(to_string(r.kind), 30)} overlap #{ms(r.overlap)} ms " <>
          "(ended #{ms(r.after_cut)} ms after the cut)"
      )
    end

    worst = Enum.max_by(results, & &1.overlap)
    IO.puts("[partition]   worst overlap #{ms(worst.overlap)} ms (bound: margin #{margin} ms)")

    for r <- results do
      assert r.overlap <= margin * 1000,
             "#{r.kind}: two owners for #{ms(r.overlap)} ms, above the margin (#{margin} ms)"
    end

    # The heal: d takes connections again. One owner per name, everywhere.
    :ok = rpc(d, :net_kernel, :allow, [[a, b]])
    for n <- [a, b], do: assert(rpc(d, :net_kernel, :connect_node, [n]))
    Cluster.await_ready([a, b, d])

    for r <- results do
      Cluster.await(fn -> whereis([a, b, d], r.name) == [r.new, r.new, r.new] end)
      if r.expect != :notified, do: refute(rpc(d, Process, :alive?, [r.pid]))
    end

    kept = rpc(d, Registry.Keeper, :names, [])
    assert Enum.all?(results, fn r -> not List.keymember?(kept, r.name, 0) end)
    alive_owners = Enum.count(results, &rpc(d, Process, :alive?, [&1.pid]))

    IO.puts(
      "[partition]   after the heal: old owners alive and registered: 0 (notified, alive: #{alive_owners})"
    )

    for r <- results do
      send(r.new, :stop)
      if r.expect == :notified, do: send(r.pid, :stop)
    end
  end

  @tag :lockerd
  test "a Rust client's owner cut off from the quorum learns it lost the name before it can be taken elsewhere" do
    exe = Path.expand("../../target/release/examples/registry_owner", __DIR__)
    {[a, b, d] = nodes, peers} = Cluster.start([:nqa, :nqb, :nqd])
    for n <- nodes, do: :ok = rpc(n, LockerTest.Remote, :quiet_partition_logs, [])
    obs = observer()
    svc = :"nsvc#{System.unique_integer([:positive])}@127.0.0.1"
    name = :"rust_owner_#{System.unique_integer([:positive])}"
    margin = 300

    args =
      ["--name", Atom.to_string(svc), "--cookie", Atom.to_string(Node.get_cookie())] ++
        ["--masters", Enum.join(nodes, ","), "--w", "2", "--register", Atom.to_string(name)] ++
        ["--lease-ms", Integer.to_string(@lease), "--margin-ms", Integer.to_string(margin)]

    send(obs, {:open, exe, args})
    assert_receive {:opened, os_pid}

    on_exit(fn ->
      System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
      Cluster.stop(peers)
    end)

    assert_receive {:observed, :line, "registered " <> _, _}, 20_000
    [owner | _] = whereis(nodes, name)
    assert is_pid(owner) and node(owner) == svc

    # The partition: a and b refuse the client's node and drop it (it
    # keeps d, one master of three: no quorum).
    cut_at = now_us()

    for n <- [a, b] do
      :ok = rpc(n, :net_kernel, :allow, [[node(), a, b, d]])
      rpc(n, :erlang, :disconnect_node, [svc])
    end

    {new_pid, started} = Task.await(take_over(name, [a, b], a), 60_000)
    lost = "lost #{name}"
    assert_receive {:observed, :line, ^lost, ended}, 10_000
    assert_receive {:observed, :exit, 3, exited}, 10_000
    overlap = ended - started

    IO.puts(
      "\n[partition] Rust client owner, lease #{@lease} ms, margin #{margin} ms: overlap " <>
        "#{ms(overlap)} ms (LeaseLost seen #{ms(ended - cut_at)} ms after the cut; " <>
        "process gone #{ms(exited - started)} ms after the new owner's start)"
    )

    assert overlap <= margin * 1000,
           "two owners for #{ms(overlap)} ms, above the margin (#{margin} ms)"

    # The heal: one owner, the new one, everywhere.
    for n <- [a, b], do: :ok = rpc(n, :net_kernel, :allow, [[svc]])
    Cluster.await(fn -> whereis(nodes, name) == [new_pid, new_pid, new_pid] end)
    send(new_pid, :stop)
  end
end
