defmodule LockerAcquireTest do
  # Locker.acquire/2, leases, transactions and fencing tokens across three
  # masters (W = 2).
  use ExUnit.Case, async: false
  alias LockerTest.{Cluster, Remote}
  alias Locker.Lease

  setup_all do
    {nodes, peers} = Cluster.start([:qa, :qb, :qc])
    on_exit(fn -> Cluster.stop(peers) end)
    %{nodes: nodes}
  end

  setup context do
    %{key: {context.test, System.unique_integer()}}
  end

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)

  defp acquirer(node, id, key, opts) do
    rpc(node, Remote, :spawn_acquirer, [id, key, opts, self()])
  end

  test "acquire, extend and release a lease", %{nodes: [a, b, c], key: key} do
    assert {:ok, %Lease{key: ^key, value: value, token: token} = lease} =
             rpc(a, Locker, :acquire, [key, [lease: 10_000, value: :me]])

    assert value == :me
    assert is_integer(token) and token > 0
    # expires_at is on a's monotonic clock.
    assert rpc(a, Lease, :remaining, [lease]) in 9000..10_000
    assert rpc(b, Locker, :dirty_read, [key]) == {:ok, :me}

    # Held: a second acquire gives up at its timeout, or with :no_quorum
    # after its retries.
    assert rpc(c, Locker, :acquire, [key, [timeout: 50]]) == {:error, :timeout}
    assert rpc(c, Locker, :acquire, [key, [retries: 0]]) == {:error, :no_quorum}

    assert {:ok, %Lease{token: ^token} = extended} = rpc(a, Locker, :extend, [lease, 20_000])
    assert rpc(a, Lease, :remaining, [extended]) in 19_000..20_000
    # Any node may extend it (the new expires_at is on that node's clock).
    assert {:ok, %Lease{token: ^token}} = rpc(b, Locker, :extend, [lease, 20_000])
    assert rpc(c, Locker, :release, [lease]) == :ok
    assert rpc(a, Locker, :dirty_read, [key]) == {:error, :not_found}
    assert rpc(a, Locker, :release, [lease]) == {:error, :no_quorum}
    assert rpc(a, Locker, :extend, [lease, 1000]) == {:error, :no_quorum}
  end

  test "waiters on one node are served in arrival order, woken by the release",
       %{nodes: [a, b, _], key: key} do
    # The holder is on another node; the waiters queue on a.
    holder = acquirer(b, :holder, key, lease: 30_000)
    assert_receive {:acquired, :holder, ^b, {:ok, %Lease{token: t0}}}

    waiters =
      for id <- 1..4 do
        pid = acquirer(a, id, key, lease: 30_000, timeout: 10_000)
        # Queued before the next one starts.
        Cluster.await(fn -> pid in rpc(a, Locker.AcquireQueue, :waiters, [key]) end)
        {id, pid}
      end

    assert rpc(a, Locker.AcquireQueue, :waiters, [key]) == Enum.map(waiters, &elem(&1, 1))
    refute_received {:acquired, _, _, _}
    release(holder, :holder)

    tokens =
      for {id, pid} <- waiters do
        assert_receive {:acquired, got, ^a, {:ok, %Lease{token: token}}}, 5000
        assert got == id
        release(pid, id)
        token
      end

    assert t0 < hd(tokens)
    assert tokens == Enum.sort(tokens) and Enum.uniq(tokens) == tokens
  end

  # Tells an acquirer to release its lease and waits until it did.
  defp release(pid, id) do
    send(pid, :release)
    assert_receive {:released_lease, ^id, :ok}, 5000
  end

  test "a waiter on another master is woken by the release", %{nodes: [a, b, c], key: key} do
    {:ok, lease} = rpc(a, Locker, :acquire, [key, [lease: 30_000]])
    pid = acquirer(c, :w, key, lease: 5000, timeout: 10_000)
    Cluster.await(fn -> [pid] == rpc(c, Locker.AcquireQueue, :waiters, [key]) end)
    refute_received {:acquired, :w, _, _}
    released = System.monotonic_time(:millisecond)
    assert rpc(b, Locker, :release, [lease]) == :ok
    assert_receive {:acquired, :w, ^c, {:ok, %Lease{token: token}}}, 5000
    assert token > lease.token

    IO.puts(
      "\n[acquire] waiter on another node woken #{System.monotonic_time(:millisecond) - released} ms after the release"
    )

    release(pid, :w)
  end

  test "a waiter is woken by the holder's expiry", %{nodes: [a, b, _], key: key} do
    {:ok, lease} = rpc(a, Locker, :acquire, [key, [lease: 200]])
    assert {:ok, next} = rpc(b, Locker, :acquire, [key, [lease: 1000, timeout: 5000]])
    assert next.token > lease.token
    assert rpc(b, Locker, :release, [next]) == :ok
  end

  test "transaction returns the result and releases, also when fun raises", %{
    nodes: [a, b, c],
    key: key
  } do
    assert rpc(a, Locker, :transaction, [key, 5000, &Function.identity/1]) |> is_struct(Lease)
    assert rpc(b, Locker, :dirty_read, [key]) == {:error, :not_found}

    assert {:raised, "boom " <> _} = rpc(c, Remote, :transaction_raise, [key])
    for n <- [a, b, c], do: assert(rpc(n, Locker, :dirty_read, [key]) == {:error, :not_found})

    # Lock failure.
    {:ok, lease} = rpc(a, Locker, :acquire, [key, [lease: 30_000]])

    assert rpc(b, Locker, :transaction, [key, 1000, &Function.identity/1, [timeout: 50]]) ==
             {:error, :lock_failure}

    assert rpc(b, Locker, :with_lock, [key, [timeout: 50], &Function.identity/1]) ==
             {:error, :timeout}

    assert rpc(b, Locker, :release, [lease]) == :ok

    assert {:ok, %Lease{}} =
             rpc(b, Locker, :with_lock, [key, [lease: 1000], &Function.identity/1])

    assert rpc(b, Locker, :dirty_read, [key]) == {:error, :not_found}
  end

  test "tokens fence a resource: holders on every node, strictly increasing", %{
    nodes: nodes,
    key: key
  } do
    {:ok, storage} = LockerTest.Fenced.start_link()

    nodes
    |> Enum.map(&Task.async(fn -> rpc(&1, Remote, :fenced_writes, [key, storage, 5]) end))
    |> Enum.flat_map(&Task.await(&1, 30_000))
    |> Enum.each(&assert(&1 == :ok))

    writes = LockerTest.Fenced.writes(storage)
    assert length(writes) == 15
    tokens = Enum.map(writes, &elem(&1, 1))
    assert tokens == Enum.sort(tokens) and Enum.uniq(tokens) == tokens
  end

  test "tokens keep increasing across a master restart while quorum holds", %{
    nodes: [a, b, c],
    key: key
  } do
    {:ok, l1} = rpc(a, Locker, :acquire, [key, [lease: 10_000]])
    :ok = rpc(a, Locker, :release, [l1])

    # c's locker server stops: a and b still make a quorum.
    :ok = rpc(c, Supervisor, :terminate_child, [Locker.Supervisor, Locker])
    {:ok, l2} = rpc(b, Locker, :acquire, [key, [lease: 10_000]])
    assert l2.token > l1.token
    :ok = rpc(b, Locker, :release, [l2])
    {:ok, l3} = rpc(a, Locker, :acquire, [key, [lease: 10_000]])
    assert l3.token > l2.token
    :ok = rpc(a, Locker, :release, [l3])

    {:ok, _} = rpc(c, Supervisor, :restart_child, [Locker.Supervisor, Locker])
    {:ok, l4} = rpc(c, Locker, :acquire, [key, [lease: 10_000]])
    assert l4.token > l3.token
    :ok = rpc(c, Locker, :release, [l4])
    {:ok, l5} = rpc(a, Locker, :acquire, [key, [lease: 10_000]])
    assert l5.token > l4.token
    :ok = rpc(b, Locker, :release, [l5])
  end
end
