defmodule LockerNifTest do
  # The Mix build of the `locker` application: the NIF is built and loaded,
  # the application started the `locker` server itself, and the Erlang API
  # works from Elixir on a single node (this node, its only master).
  use ExUnit.Case, async: false

  setup do
    :ok = :locker_nif.clear()
    :ok = :locker.set_nodes([node()], [node()], [])
    :ok = :locker.set_w([node()], 1)
    :ok
  end

  test "the application started the locker server with this node as master" do
    assert is_pid(Process.whereis(:locker))
    assert {[node()], [], 1} == :locker.get_meta()
    assert is_pid(Process.whereis(Locker.Registry.Keeper))
    assert is_pid(Process.whereis(Locker.AcquireQueue))
  end

  test "lock, dirty_read, release on a single master" do
    assert {:ok, 1, 1, 1} = :locker.lock("k", self(), 60_000)
    assert {:ok, pid} = :locker.dirty_read("k")
    assert pid == self()
    assert {:error, :no_quorum} = :locker.lock("k", self())
    assert {:ok, 1, 1, 1} = :locker.release("k", self())
    assert {:error, :not_found} = :locker.dirty_read("k")
  end

  test "keys compare with =:=, values keep their exact terms" do
    value = %{a: [1, 2.5, {:x, "y"}], b: make_ref()}
    assert {:ok, 1, 1, 1} = :locker.lock({:k, 1}, value, 60_000)
    assert {:ok, ^value} = :locker.dirty_read({:k, 1})
    assert {:error, :not_found} = :locker.dirty_read({:k, 1.0})
  end

  test "bad arguments raise instead of crashing the VM" do
    assert_raise ArgumentError, fn -> :locker_nif.write(:t, :k, :v, :not_a_number) end
    assert_raise ArgumentError, fn -> :locker_nif.replay(:not_a_list, 10) end
  end
end
