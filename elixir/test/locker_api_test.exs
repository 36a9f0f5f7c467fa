defmodule LockerApiTest do
  # elixir_locker's `Locker` API and application on real nodes: three
  # masters started by the application itself (W by default a majority),
  # and two nodes with `autostart: false`.
  use ExUnit.Case, async: false
  alias LockerTest.{Cluster, Remote}

  setup_all do
    {nodes, peers} = Cluster.start([:aa, :ab, :ac])
    {others, more} = Cluster.start([:ad, :ae], autostart: false, masters: [])
    on_exit(fn -> Cluster.stop(peers ++ more) end)
    %{nodes: nodes, others: others}
  end

  setup context do
    %{key: {context.test, System.unique_integer()}}
  end

  defp rpc(node, f, a), do: Cluster.rpc(node, Locker, f, a)

  test "starting the application forms the cluster, W a majority of the masters", %{nodes: nodes} do
    for n <- nodes do
      assert Cluster.rpc(n, :locker, :get_meta, []) == {Enum.sort(nodes), [], 2}
      assert is_pid(Cluster.rpc(n, Process, :whereis, [:locker]))
      assert is_pid(Cluster.rpc(n, Process, :whereis, [Locker.Registry.Keeper]))
      assert is_pid(Cluster.rpc(n, Process, :whereis, [Locker.AcquireQueue]))
    end
  end

  test "lock/2,3,4, dirty_read/1, release/2,3 reply as :locker", %{nodes: [a, b, c], key: key} do
    me = self()
    assert rpc(a, :lock, [key, me]) == {:ok, 2, 3, 3}
    for n <- [a, b, c], do: assert(rpc(n, :dirty_read, [key]) == {:ok, me})
    # The default lease is 2000 ms (get_debug_state: wall-clock expiry).
    {:ok, [], leases, _, _, _} = Cluster.rpc(b, :locker, :get_debug_state, [])
    [{^key, ^me, expires}] = Enum.filter(leases, &(elem(&1, 0) == key))
    assert_in_delta expires - System.os_time(:millisecond), 2000, 500
    assert rpc(b, :lock, [key, :other]) == {:error, :no_quorum}
    assert rpc(b, :lock, [key, :other, 1000]) == {:error, :no_quorum}
    assert rpc(c, :release, [key, :other]) == {:error, :no_quorum}
    assert rpc(c, :release, [key, me]) == {:ok, 2, 3, 3}
    assert rpc(a, :dirty_read, [key]) == {:error, :not_found}
    assert rpc(a, :lock, [key, me, 60_000, 1000]) == {:ok, 2, 3, 3}
    assert rpc(a, :release, [key, me, 1000]) == {:ok, 2, 3, 3}
  end

  test "update/3,4 and extend_lease/2,3", %{nodes: [a, b, c], key: key} do
    assert rpc(a, :lock, [key, :v1, 60_000]) == {:ok, 2, 3, 3}
    assert rpc(b, :update, [key, :v1, :v2]) == {:ok, 2, 3, 3}
    assert rpc(c, :dirty_read, [key]) == {:ok, :v2}
    assert rpc(b, :update, [key, :v1, :v3, 1000]) == {:error, :no_quorum}
    assert rpc(c, :update, [key, :v2, :v3, 1000]) == {:ok, 2, 3, 3}
    assert rpc(a, :extend_lease, [key, :v3]) == :ok
    {:ok, [], leases, _, _, _} = Cluster.rpc(c, :locker, :get_debug_state, [])
    [{^key, :v3, expires}] = Enum.filter(leases, &(elem(&1, 0) == key))
    assert_in_delta expires - System.os_time(:millisecond), 2000, 500
    assert rpc(a, :extend_lease, [key, :v3, 30_000]) == :ok
    assert rpc(a, :extend_lease, [key, :nope, 30_000]) == {:error, :no_quorum}
    assert rpc(a, :release, [key, :v3]) == {:ok, 2, 3, 3}
  end

  test "wait_for/1,2 and wait_for_release/1,2", %{nodes: [a, b, c], key: key} do
    assert rpc(a, :wait_for_release, [key]) == {:error, :key_not_locked}
    assert rpc(a, :wait_for_release, [key, 100]) == {:error, :key_not_locked}
    assert {:exception, {:timeout, _}} = catch_exit(rpc(a, :wait_for, [key, 50]))

    waiter = Task.async(fn -> rpc(b, :wait_for, [key]) end)
    Cluster.await(fn -> waiting?(b) end)
    assert rpc(a, :lock, [key, :v, 60_000]) == {:ok, 2, 3, 3}
    assert Task.await(waiter) == {:ok, :v}
    assert rpc(c, :wait_for, [key, 100]) == {:ok, :v}

    waiter = Task.async(fn -> rpc(c, :wait_for_release, [key]) end)
    Cluster.await(fn -> waiting?(c) end)
    assert rpc(a, :release, [key, :v]) == {:ok, 2, 3, 3}
    assert Task.await(waiter) == {:ok, :released}
  end

  # Whether the store of `node` has a waiter (wait_for, wait_for_release).
  defp waiting?(node), do: Cluster.rpc(node, :locker_nif, :stats, []).waiters > 0

  test "master_dirty_read/1, lag/0, summary/0", %{nodes: [a, b, _], key: key} do
    assert rpc(a, :lock, [key, :v, 60_000]) == {:ok, 2, 3, 3}
    assert rpc(b, :master_dirty_read, [key]) == {:ok, :v}
    assert {ms, {:ok, 2, 3, 3}} = rpc(a, :lag, [])
    assert is_float(ms)
    assert [write_locks: 0, leases: n] = rpc(b, :summary, [])
    assert n >= 1
    assert rpc(a, :release, [key, :v]) == {:ok, 2, 3, 3}
  end

  test "set_w/2 and set_nodes/3", %{nodes: [a, b, c] = nodes, key: key} do
    on_exit(fn ->
      :ok = Cluster.rpc(a, :locker, :set_nodes, [nodes, nodes, []])
      :ok = Cluster.rpc(a, :locker, :set_w, [nodes, 2])
    end)

    assert rpc(a, :set_w, [nodes, 3]) == :ok
    assert Cluster.rpc(c, :locker, :get_meta, []) == {Enum.sort(nodes), [], 3}
    :ok = Cluster.rpc(c, :sys, :suspend, [Cluster.rpc(c, Process, :whereis, [:locker])])
    assert rpc(a, :lock, [key, :v, 60_000, 200]) == {:error, :no_quorum}
    :ok = Cluster.rpc(c, :sys, :resume, [Cluster.rpc(c, Process, :whereis, [:locker])])
    assert rpc(a, :set_w, [nodes, 2]) == :ok

    assert rpc(b, :set_nodes, [nodes, [a, b], [c]]) == :ok
    assert Cluster.rpc(a, :locker, :get_meta, []) == {Enum.sort([a, b]), [c], 2}
    assert rpc(a, :lock, [key, :v, 60_000]) == {:ok, 2, 2, 2}
    assert rpc(c, :wait_for, [key]) == {:ok, :v}
    # Released on the masters and the replica.
    assert rpc(a, :release, [key, :v]) == {:ok, 2, 2, 3}
    assert rpc(b, :set_nodes, [nodes, nodes, []]) == :ok
  end

  test "{Locker, opts} in one's own tree; the app without autostart; nodes without locker skipped",
       %{others: [d, e]} do
    # autostart: false: no server, but the keeper and the queue run.
    assert Cluster.rpc(d, Process, :whereis, [:locker]) == nil
    assert is_pid(Cluster.rpc(d, Process, :whereis, [Locker.Registry.Keeper]))
    assert is_pid(Cluster.rpc(d, Process, :whereis, [Locker.AcquireQueue]))

    # e runs no locker: d's announcement skips it instead of crashing.
    {:ok, sup} = Cluster.rpc(d, Remote, :start_locker_tree, [[masters: [d, e], quorum: 1]])

    assert [{Locker, pid, :worker, [:locker_server]}] =
             Cluster.rpc(d, Supervisor, :which_children, [sup])

    assert Cluster.rpc(d, Process, :whereis, [:locker]) == pid
    assert Cluster.rpc(d, :locker, :get_meta, []) == {Enum.sort([d, e]), [], 1}
    assert rpc(d, :lock, [:k, :v]) == {:ok, 1, 1, 1}
    assert rpc(d, :release, [:k, :v]) == {:ok, 1, 1, 1}

    # Then e starts its own with the same masters and announces them to d,
    # with the default W (a majority of two).
    {:ok, _} = Cluster.rpc(e, Remote, :start_locker_tree, [[masters: [d, e]]])
    assert Cluster.rpc(d, :locker, :get_meta, []) == {Enum.sort([d, e]), [], 2}
    Cluster.await_ready([d, e])
    assert rpc(d, :lock, [:k, :v]) == {:ok, 2, 2, 2}
    assert rpc(e, :release, [:k, :v]) == {:ok, 2, 2, 2}
  end

  test "configuration: :quorum, then :w, then a majority; opts over the environment" do
    ms = [:a@h, :b@h, :c@h, :d@h]

    assert %{w: 3, w_default?: true, masters: ^ms, replicas: []} =
             Locker.Config.server(masters: ms)

    assert %{w: 1, args: [1, 1000, 1000, 100]} = Locker.Config.server(masters: ms, w: 1)
    assert %{w: 2, w_default?: false} = Locker.Config.server(masters: ms, w: 1, quorum: 2)
    # test_helper.exs configures this node as the only master.
    conf = Locker.Config.server([])
    assert conf.masters == [node()]
    assert conf.w == Locker.Config.majority(conf.masters)
    assert conf.auto == nil

    # masters: :auto (the default when none are configured).
    assert %{masters: [n], w: 2, auto: %{cluster_size: 3, w: :undefined}} =
             Locker.Config.server(masters: :auto, cluster_size: 3)

    assert n == node()

    assert %{w: 3, auto: %{w: 3}} =
             Locker.Config.server(masters: :auto, cluster_size: 4, quorum: 3)

    assert %{w: 2, auto: %{cluster_size: :undefined}} = Locker.Config.server(masters: :auto, w: 2)

    assert_raise ArgumentError, ~r/needs :cluster_size/, fn ->
      Locker.Config.server(masters: :auto)
    end

    assert_raise ArgumentError, ~r/cluster_size = 0: expected a positive integer/, fn ->
      Locker.Config.server(masters: :auto, cluster_size: 0)
    end

    assert_raise ArgumentError, ~r/:w must be a quorum from 2 to 3.*got: 1/, fn ->
      Locker.Config.server(masters: :auto, cluster_size: 3, quorum: 1)
    end

    assert_raise ArgumentError, ~r/leave_grace_ms = -1: expected a non-negative integer/, fn ->
      Locker.Config.server(masters: :auto, cluster_size: 3, leave_grace_ms: -1)
    end

    assert_raise ArgumentError,
                 ~r/masters = "a@h": expected a list of node names \(atoms\), or auto/,
                 fn ->
                   Locker.Config.server(masters: "a@h")
                 end

    assert %{args: [2, 10, 20, 30]} =
             Locker.Config.server(
               masters: [:a@h, :b@h],
               lease_expire_interval: 10,
               lock_expire_interval: 20,
               push_trans_log_interval: 30
             )

    assert_raise ArgumentError, ~r/positive integer/, fn -> Locker.Config.server(quorum: 0) end
    assert Locker.Config.majority([:a@h]) == 1
    assert Locker.Config.majority([:a@h, :b@h]) == 2
    assert Locker.Config.majority([:a@h, :b@h, :c@h]) == 2
  end
end
