defmodule LockerTest.Cluster do
  @moduledoc false
  # Real BEAM nodes on loopback with OTP's :peer, each running the Mix
  # build of `locker` (code path: this build's ebin, Elixir's and Logger's).

  @doc """
  Starts one peer per name (in parallel), then the `locker` application on
  each in turn with `env` (plus `masters: nodes` unless given). Returns the
  nodes; `stop/1` stops them.
  """
  def start(names, env \\ []) do
    peers =
      names
      |> Enum.map(&Task.async(fn -> start_peer(&1) end))
      |> Enum.map(&Task.await(&1, 30_000))

    nodes = Enum.map(peers, &elem(&1, 1))
    env = Keyword.put_new(env, :masters, nodes)
    Enum.each(nodes, &start_app(&1, env))
    if Keyword.get(env, :autostart, true), do: await_ready(nodes)
    {nodes, Enum.map(peers, &elem(&1, 0))}
  end

  @doc """
  Waits until a lock from each of `nodes` gets the vote of every master:
  a server that found another master's server not yet started counts it
  as down until it looks again (within 500 ms).
  """
  def await_ready(nodes) do
    for n <- nodes do
      await(fn ->
        {masters, _, _} = rpc(n, :locker, :get_meta, [])
        probe = {:probe, n, make_ref()}
        result = rpc(n, :locker, :lock, [probe, :probe, 1000])
        _ = rpc(n, :locker, :release, [probe, :probe])
        match?({:ok, _, votes, _} when votes == length(masters), result)
      end)
    end

    :ok
  end

  @doc "Starts one peer without starting `locker` on it (`extra`: more VM arguments)."
  def start_peer(name, extra \\ []) do
    unique = :"#{name}_#{System.unique_integer([:positive])}"

    paths = Enum.flat_map([:locker, :elixir, :logger], &[~c"-pa", :code.lib_dir(&1, :ebin)])
    # Stopping a peer must not make `global` disconnect the others.
    args =
      [~c"-setcookie", Atom.to_charlist(Node.get_cookie())] ++
        [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false" | paths] ++ extra

    {:ok, peer, node} =
      :peer.start(%{name: unique, host: ~c"127.0.0.1", longnames: true, args: args})

    {peer, node}
  end

  @doc "Loads `locker` on `node`, sets its environment and starts it."
  def start_app(node, env) do
    :ok = rpc(node, Application, :load, [:locker])
    :ok = rpc(node, Application, :put_all_env, [[locker: env]])
    {:ok, _} = rpc(node, Application, :ensure_all_started, [:locker])
    :ok
  end

  def stop(peers), do: Enum.each(peers, &:peer.stop/1)

  def rpc(node, m, f, a), do: :erpc.call(node, m, f, a, 15_000)

  @doc "Calls `fun` until it returns a truthy value or `timeout` ms pass."
  def await(fun, timeout \\ 5000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_await(fun, deadline)
  end

  defp do_await(fun, deadline) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          raise ExUnit.AssertionError, message: "condition not met in time"
        end

        Process.sleep(1)
        do_await(fun, deadline)
    end
  end
end
