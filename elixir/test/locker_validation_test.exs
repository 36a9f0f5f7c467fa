defmodule LockerValidationTest do
  # Wrong arguments raise at once, naming the argument and what was
  # expected (no cluster is needed: nothing is sent).
  use ExUnit.Case, async: true

  defp message(fun) do
    try do
      fun.()
      flunk("no error raised")
    rescue
      e in ArgumentError -> Exception.message(e)
    end
  end

  test "lease lengths and timeouts of lock, extend_lease and release" do
    assert message(fn -> Locker.lock("k", self(), :forever) end) =~
             "3rd argument: expected a lease length"

    assert message(fn -> Locker.lock("k", self(), "5000") end) =~ "3rd argument"

    assert message(fn -> Locker.lock("k", self(), -5) end) =~
             "non-negative integer of milliseconds"

    assert message(fn -> Locker.lock("k", self(), 100, :soon) end) =~
             "4th argument: expected a timeout"

    assert message(fn -> Locker.extend_lease("k", self(), -10) end) =~ "3rd argument"

    assert message(fn -> Locker.release("k", self(), -1) end) =~
             "3rd argument: expected a timeout"

    assert message(fn -> Locker.update("k", 1, 2, "1") end) =~ "4th argument"
  end

  test "acquire options" do
    assert message(fn -> Locker.acquire("k", lease: :long) end) =~
             "option :lease must be a positive integer of milliseconds, got: :long"

    assert message(fn -> Locker.acquire("k", leese: 100) end) =~ "unknown keys [:leese]"
    assert message(fn -> Locker.acquire("k", retries: -1) end) =~ "option :retries"
    assert message(fn -> Locker.acquire("k", timeout: "1") end) =~ "option :timeout"
    assert message(fn -> Locker.acquire("k", jitter: 1.5) end) =~ "option :jitter"
    assert message(fn -> Locker.acquire("k", :not_a_list) end) =~ "keyword list"
  end

  test "transaction ttl and lease extension" do
    assert message(fn -> Locker.transaction("k", :ten, fn -> :ok end) end) =~
             "ttl must be a positive integer"

    lease = %Locker.Lease{key: "k", value: self(), token: 1, expires_at: 0}
    assert message(fn -> Locker.extend(lease, -10) end) =~ "lease must be a positive integer"
  end

  test "functions, owners and actions of the lock and registry helpers" do
    assert message(fn -> Locker.transaction("k", 100, :not_a_fun) end) =~
             "Locker.transaction/4: expected a function of no argument or of the lease"

    assert message(fn -> Locker.transaction("k", 100, fn -> :ok end, :nope) end) =~
             "options must be a keyword list"

    assert message(fn -> Locker.with_lock("k", [], fn _, _ -> :ok end) end) =~
             "Locker.with_lock/3: expected a function"

    assert message(fn -> Locker.Registry.register_name(:n, :not_a_pid) end) =~
             "expected a pid as the owner, got: :not_a_pid"

    assert message(fn -> Locker.Registry.on_lost(:n, :crash) end) =~
             "the action must be :exit or :notify, got: :crash"

    assert message(fn -> Locker.Registry.select([{:bad}]) end) =~ "match specification"
    assert message(fn -> Locker.Registry.keys(:me) end) =~ "keys/1: expected a pid, got: :me"
  end

  test "options of use Locker.Server and use Locker.Fsm, when the module compiles" do
    for {using, opts, expected} <- [
          {"Locker.Server", "lease_length: :long", ":lease_length must be a positive integer"},
          {"Locker.Server", "lease_treshold: 5", "unknown keys [:lease_treshold]"},
          {"Locker.Fsm", "lease_threshold: -1", ":lease_threshold must be a non-negative"}
        ] do
      code =
        "defmodule LockerValidationTest.Bad#{System.unique_integer([:positive])} do use #{using}, #{opts} end"

      assert message(fn -> Code.compile_string(code) end) =~ "use #{using}: #{expected}"
    end
  end

  test "start options of Locker.Server, Fsm and Statem processes" do
    assert message(fn -> LockerTest.LServer.start([], :nope) end) =~
             "start/2 (use Locker.Server): options must be a keyword list, got: :nope"

    assert message(fn -> LockerTest.LFsm.start_link([], "door") end) =~
             "Locker.Fsm.start_link/3: options must be a keyword list"

    assert message(fn -> LockerTest.LStatem.start([], [1, 2]) end) =~
             "Locker.Statem.start/3: options must be a keyword list, got: [1, 2]"
  end

  test "cluster settings" do
    assert message(fn -> Locker.set_w([node()], 0) end) =~ "expected a write quorum"
    assert message(fn -> Locker.set_nodes([node()], "a@host", []) end) =~ "node names"
  end

  test "elixir_locker's application environment is warned about, not silently ignored" do
    assert Locker.Config.legacy_env_warning() == nil
    Application.put_env(:elixir_locker, :quorum, 2)

    try do
      assert Locker.Config.legacy_env_warning() =~ "`config :elixir_locker` is not read"
    after
      Application.delete_env(:elixir_locker, :quorum)
    end
  end
end
