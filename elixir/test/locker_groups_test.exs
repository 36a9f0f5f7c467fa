defmodule LockerGroupsTest do
  # Cluster mode through the Elixir application: two quorum groups of one
  # master each (W = 1) and a node in no group, started from the `:groups`
  # application environment. Names and acquisitions route by key.
  use ExUnit.Case, async: false
  alias LockerTest.Cluster
  alias Locker.Registry

  setup_all do
    peers =
      [:gra, :grb, :grc]
      |> Enum.map(&Task.async(fn -> Cluster.start_peer(&1) end))
      |> Enum.map(&Task.await(&1, 30_000))

    [a, b, c] = nodes = Enum.map(peers, &elem(&1, 1))
    groups = [%{id: 1, masters: [a], w: 1}, %{id: 2, masters: [b], w: 1}]
    Enum.each(nodes, &Cluster.start_app(&1, groups: groups, registry_lease: 1000))
    on_exit(fn -> Cluster.stop(Enum.map(peers, &elem(&1, 0))) end)

    # Every node reaches both groups' servers.
    for n <- nodes, k <- [{:probe, 1}, {:probe, 2}, {:probe, 3}, {:probe, 4}] do
      Cluster.await(fn ->
        match?({:ok, 1, 1, _}, rpc(n, :locker, :lock, [k, n, 1000])) and
          match?({:ok, _, _, _}, rpc(n, :locker, :release, [k, n]))
      end)
    end

    %{a: a, b: b, c: c, groups: groups}
  end

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)

  test "names land in their group's master and resolve from every node", ctx do
    %{a: a, b: b, c: c} = ctx
    names = for i <- 1..20, do: {:grouped_name, i}

    placed =
      for name <- names do
        {:ok, pid} = rpc(c, LockerTest.Remote, :spawn_registered, [name])
        group = rpc(c, :locker_groups, :group_of, [name])
        assert group == rpc(a, :locker_groups, :group_of, [name])
        {holder, other} = if group == 1, do: {a, b}, else: {b, a}

        # Stored on its group's master only.
        assert {:ok, _} = rpc(holder, :locker, :dirty_read, [name])
        assert {:error, :not_found} = rpc(other, :locker, :dirty_read, [name])
        assert rpc(holder, :locker, :holds, [name])
        refute rpc(other, :locker, :holds, [name])

        # Resolved from every node (the other group's master and the
        # client ask the name's group), and held against every node.
        for n <- [a, b, c], do: assert(rpc(n, Registry, :whereis_name, [name]) == pid)
        assert rpc(other, Registry, :register_name, [name, self()]) == :no
        group
      end

    assert Enum.sort(Enum.uniq(placed)) == [1, 2]

    for name <- names do
      assert rpc(a, Registry, :unregister_name, [name]) == :ok

      Cluster.await(fn ->
        Enum.all?([a, b, c], &(rpc(&1, Registry, :whereis_name, [name]) == :undefined))
      end)
    end
  end

  test "acquire routes by key: one holder per key, tokens increasing per key", ctx do
    %{a: a, b: b, c: c} = ctx

    for i <- 1..10 do
      key = {:grouped_job, i}
      {:ok, lease} = rpc(c, Locker, :acquire, [key, [lease: 10_000]])
      assert {:error, :no_quorum} = rpc(a, Locker, :acquire, [key, [lease: 10_000, retries: 0]])
      assert {:error, :no_quorum} = rpc(b, Locker, :acquire, [key, [lease: 10_000, retries: 0]])
      assert :ok = rpc(c, Locker, :release, [lease])
      {:ok, again} = rpc(b, Locker, :acquire, [key, [lease: 10_000]])
      assert again.token > lease.token
      assert :ok = rpc(b, Locker, :release, [again])
    end
  end
end
