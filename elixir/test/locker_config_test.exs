defmodule LockerConfigTest do
  # The application environment is checked at start (one message per bad
  # key, the application refuses to start), the server's options when it
  # starts, and calls before locker ever started raise a clear error.
  use ExUnit.Case, async: false
  alias LockerTest.Cluster

  defp rpc(node, m, f, a), do: Cluster.rpc(node, m, f, a)

  test "bad keys of the application environment: one message each, and no start" do
    {:ok, peer, n} = start_peer(:bc_env)

    :ok = rpc(n, Application, :load, [:locker])

    env = [
      masters: "a@127.0.0.1",
      registry_lease: "5000",
      lease_expire_interval: :fast,
      quorum: 0,
      registry_on_lost: :crash
    ]

    :ok = rpc(n, Application, :put_all_env, [[locker: env]])
    assert {:error, messages} = rpc(n, Locker.Config, :check, [])

    assert messages == [
             "locker: bad application environment: lease_expire_interval = :fast: " <>
               "expected a positive integer of milliseconds",
             ~s(locker: bad application environment: masters = "a@127.0.0.1": ) <>
               "expected a list of node names (atoms), or auto",
             "locker: bad application environment: quorum = 0: expected a positive integer " <>
               "(the write quorum; 0 let every lock succeed and is refused)",
             ~s(locker: bad application environment: registry_lease = "5000": ) <>
               "expected a positive integer of milliseconds",
             "locker: bad application environment: registry_on_lost = :crash: expected exit or notify (atoms)"
           ]

    assert {:error, {:locker, {{:bad_config, ^messages}, _}}} =
             rpc(n, Application, :ensure_all_started, [:locker])

    # The registry's cross-checks too, once every key has a good type.
    :ok =
      rpc(n, Application, :put_all_env, [
        [
          locker: [
            masters: [n],
            quorum: 1,
            lease_expire_interval: 1000,
            registry_lease: 5000,
            registry_on_lost: :exit,
            registry_margin: 4999,
            registry_extend_interval: 3000
          ]
        ]
      ])

    assert {:error, [message]} = rpc(n, Locker.Config, :check, [])
    assert message =~ ":registry_extend_interval must be a positive integer below"

    :ok = rpc(n, Application, :put_env, [:locker, :registry_extend_interval, 1000])
    :ok = rpc(n, Application, :put_env, [:locker, :registry_margin, 1000])
    assert rpc(n, Locker.Config, :check, []) == :ok
    assert {:ok, _} = rpc(n, Application, :ensure_all_started, [:locker])
    :peer.stop(peer)
  end

  test "before locker started on a node: Locker.NotStartedError, and {locker, not_started} from Erlang" do
    {:ok, peer, n} = start_peer(:bc_ns)
    :ok = rpc(n, Application, :load, [:locker])

    for {m, f, a} <- [
          {Locker, :lock, ["k", :v]},
          {Locker, :release, ["k", :v]},
          {Locker, :extend_lease, ["k", :v]},
          {Locker, :update, ["k", :v, :w]},
          {Locker, :master_dirty_read, ["k"]},
          {Locker, :acquire, ["k"]}
        ] do
      e = assert_raise Locker.NotStartedError, fn -> remote(n, m, f, a) end
      assert Exception.message(e) =~ "locker is not started on #{inspect(n)}"
    end

    assert {:locker, :not_started} ==
             (try do
                rpc(n, :locker, :lock, ["k", :v])
              catch
                :error, {:exception, reason, _stack} -> reason
              end)

    :peer.stop(peer)
  end

  test "other nodes as masters on a node started without a name: 'this node is not distributed'" do
    # A peer without distribution, driven over its standard input/output.
    paths = Enum.flat_map([:locker, :elixir, :logger], &[~c"-pa", :code.lib_dir(&1, :ebin)])
    {:ok, peer, :nonode@nohost} = :peer.start(%{connection: :standard_io, args: paths})

    try do
      call = fn m, f, a -> :peer.call(peer, m, f, a, 15_000) end
      assert call.(:erlang, :node, []) == :nonode@nohost
      :ok = call.(Application, :load, [:locker])
      :ok = call.(Application, :put_env, [:locker, :masters, [:"a@10.0.0.1", :nonode@nohost]])
      assert {:error, [message]} = call.(Locker.Config, :check, [])
      assert message =~ "masters = [:\"a@10.0.0.1\", :nonode@nohost]"
      assert message =~ "this node is not distributed"

      assert {:error, {:locker, {{:bad_config, [^message]}, _}}} =
               call.(Application, :ensure_all_started, [:locker])

      # Its own name alone is fine.
      :ok = call.(Application, :put_env, [:locker, :masters, [:nonode@nohost]])
      assert call.(Locker.Config, :check, []) == :ok
    after
      :peer.stop(peer)
    end
  end

  test "the server's options are checked when it starts" do
    assert_raise ArgumentError, ~r/unknown server options \[:qorum\]/, fn ->
      Locker.start_link(qorum: 2)
    end

    assert_raise ArgumentError, ~r/masters = "a@host": expected a list of node names/, fn ->
      Locker.start_link(masters: "a@host")
    end

    assert_raise ArgumentError, ~r/push_trans_log_interval = 0/, fn ->
      Locker.start_link(push_trans_log_interval: 0)
    end

    assert_raise ArgumentError, ~r/keyword list/, fn -> Locker.start_link(:nope) end
  end

  # An exception raised on `node`, raised here.
  defp remote(node, m, f, a) do
    rpc(node, m, f, a)
  catch
    :error, {:exception, e, stack} -> reraise e, stack
  end

  defp start_peer(name) do
    {peer, node} = Cluster.start_peer(name)
    {:ok, peer, node}
  end
end
