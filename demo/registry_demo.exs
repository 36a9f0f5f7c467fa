# The README's demo, Elixir part: a GenServer registered cluster-wide as
# {:via, Locker.Registry, :counter} on a local three-master cluster, called
# from every node, killed, and started again on another node. Run by
# scripts/demo.sh (which builds locker with Mix first).

defmodule RegistryDemo do
  @counter """
  defmodule Demo.Counter do
    use GenServer
    def init(n), do: {:ok, n}
    def handle_call(:bump, _from, n), do: {:reply, {node(), n + 1}, n + 1}

    # Tells `report` when `name` is gone from this node's store.
    def watch_release(name, report) do
      spawn(fn ->
        _ = :locker.wait_for_release(name, 5000)
        send(report, {:released, node(), System.os_time(:microsecond)})
      end)
    end
  end
  """

  def main do
    say("starting three locker masters on 127.0.0.1 (W = 2, a majority)")
    peers = for name <- [:demo_ex_a, :demo_ex_b, :demo_ex_c], do: start_peer(name)
    nodes = for {_peer, node} <- peers, do: node
    [a, b, c] = nodes
    for n <- nodes, do: start_locker(n, nodes)
    await_quorum(nodes)

    # The counter's code, on every node.
    [{mod, bin}] = Code.compile_string(@counter)
    for n <- nodes, do: {:module, ^mod} = rpc(n, :code, :load_binary, [mod, ~c"counter", bin])

    name = {:via, Locker.Registry, :counter}

    {:ok, pid} =
      rpc(a, GenServer, :start, [mod, 0, [name: Locker.Registry.via(:counter, %{v: 1})]])

    say(
      "#{a}: GenServer.start(Counter, 0, name: {:via, Locker.Registry, :counter})  -> #{inspect(pid)}"
    )

    calls(nodes, name)

    say(
      "#{c}: Locker.Registry.lookup(:counter)  -> #{inspect(rpc(c, Locker.Registry, :lookup, [:counter]))}"
    )

    say(
      "#{b}: a second start under the same name  -> " <>
        inspect(rpc(b, GenServer, :start, [mod, 0, [name: name]]))
    )

    # Killed: every node is told at once (no waiting for the lease).
    for n <- nodes, do: rpc(n, mod, :watch_release, [:counter, self()])
    t0 = System.os_time(:microsecond)
    Process.exit(pid, :kill)
    gone = for n <- nodes, do: receive(do: ({:released, ^n, at} -> at))
    ms = (Enum.max(gone) - t0) / 1000

    say(
      "#{node(pid)}: Process.exit(#{inspect(pid)}, :kill); name released on every node after #{Float.round(ms, 1)} ms"
    )

    for n <- nodes do
      say(
        "#{n}: Locker.Registry.whereis_name(:counter)  -> #{inspect(rpc(n, Locker.Registry, :whereis_name, [:counter]))}"
      )
    end

    {:ok, pid2} = rpc(c, GenServer, :start, [mod, 100, [name: name]])

    say(
      "#{c}: GenServer.start(Counter, 100, name: {:via, Locker.Registry, :counter})  -> #{inspect(pid2)}"
    )

    calls(nodes, name)

    Logger.configure(level: :error)
    for {peer, _} <- peers, do: :peer.stop(peer)
    say("done")
  end

  defp calls(nodes, name) do
    for n <- nodes do
      say(
        "#{n}: GenServer.call({:via, Locker.Registry, :counter}, :bump)  -> " <>
          inspect(rpc(n, GenServer, :call, [name, :bump]))
      )
    end
  end

  defp start_peer(name) do
    paths = Enum.flat_map([:locker, :elixir, :logger], &[~c"-pa", :code.lib_dir(&1, :ebin)])
    args = [~c"-setcookie", Atom.to_charlist(Node.get_cookie()) | paths]

    {:ok, peer, node} =
      :peer.start_link(%{name: name, host: ~c"127.0.0.1", longnames: true, args: args})

    {peer, node}
  end

  defp start_locker(node, masters) do
    :ok = rpc(node, Application, :load, [:locker])
    :ok = rpc(node, Application, :put_env, [:locker, :masters, masters])
    {:ok, _} = rpc(node, Application, :ensure_all_started, [:locker])
  end

  # Each server counts the others as down until it has seen them start
  # (within 500 ms): wait until a lock from every node gets every vote.
  defp await_quorum(nodes) do
    for n <- nodes do
      wait_until(fn ->
        match?({:ok, _, 3, _}, rpc(n, :locker, :lock, [{:probe, n}, :probe, 1000])) and
          match?({:ok, _, _, _}, rpc(n, :locker, :release, [{:probe, n}, :probe]))
      end)
    end
  end

  defp wait_until(fun) do
    unless fun.() do
      Process.sleep(20)
      wait_until(fun)
    end
  end

  defp rpc(node, m, f, a), do: :erpc.call(node, m, f, a, 10_000)
  defp say(text), do: IO.puts("[demo] " <> text)
end

RegistryDemo.main()
