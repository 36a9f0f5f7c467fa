defmodule LockerTelemetryTest do
  # Telemetry events, on this node alone (its only master), with a stand-in
  # `:telemetry` module loaded only for these tests: without it nothing is
  # emitted (and `locker` has no dependency on it).
  use ExUnit.Case, async: false

  @fake """
  defmodule :telemetry do
    def span(event, meta, fun) do
      send(:persistent_term.get(:locker_telemetry_test), {:span_start, event, meta})
      {result, stop_meta} = fun.()
      send(:persistent_term.get(:locker_telemetry_test), {:span_stop, event, stop_meta})
      result
    end

    def execute(event, measurements, meta) do
      send(:persistent_term.get(:locker_telemetry_test), {:event, event, measurements, meta})
      :ok
    end
  end
  """

  setup do
    :ok = :locker.set_nodes([node()], [node()], [])
    :ok = :locker.set_w([node()], 1)
    refute Locker.Telemetry.enabled?()
    :persistent_term.put(:locker_telemetry_test, self())
    Code.compile_string(@fake)
    assert Locker.Telemetry.enabled?()

    on_exit(fn ->
      :code.purge(:telemetry)
      :code.delete(:telemetry)
      :code.purge(:telemetry)
      :persistent_term.erase(:locker_telemetry_test)
    end)
  end

  test "spans of lock, extend, release and acquire" do
    assert Locker.lock(:tk, :v, 60_000) == {:ok, 1, 1, 1}
    assert_received {:span_start, [:locker, :lock], %{key: :tk, lease: 60_000}}
    assert_received {:span_stop, [:locker, :lock], %{key: :tk, result: {:ok, 1, 1, 1}}}
    assert Locker.extend_lease(:tk, :v) == :ok
    assert_received {:span_stop, [:locker, :extend], %{key: :tk, lease: 2000, result: :ok}}
    assert Locker.release(:tk, :v) == {:ok, 1, 1, 1}
    assert_received {:span_stop, [:locker, :release], %{key: :tk, result: {:ok, 1, 1, 1}}}

    {:ok, lease} = Locker.acquire(:tk, lease: 1000)
    token = lease.token
    assert_received {:span_start, [:locker, :acquire], %{key: :tk, lease: 1000, timeout: 5000}}
    assert_received {:span_stop, [:locker, :acquire], %{result: :ok, token: ^token}}
    assert {:ok, _} = Locker.extend(lease, 2000)
    assert_received {:span_stop, [:locker, :extend], %{key: :tk, lease: 2000, result: {:ok, _}}}
    assert Locker.acquire(:tk, retries: 0) == {:error, :no_quorum}
    assert_received {:span_stop, [:locker, :acquire], %{result: :no_quorum}}
    assert Locker.release(lease) == :ok
  end

  test "a registration without a quorum: result :no_quorum, a log line, and an exit" do
    ghost = :"beam_tel_ghost@127.0.0.1"
    :ok = :locker.set_nodes([node()], [node(), ghost], [])
    :ok = :locker.set_w([node()], 2)
    on_exit(fn -> :locker.set_nodes([node()], [node()], []) end)

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        assert catch_exit(Locker.Registry.register_name(:tnq, self())) ==
                 {:locker_no_quorum, :tnq}
      end)

    assert log =~ "could not register :tnq"
    assert log =~ "no quorum"
    me = self()

    assert_received {:event, [:locker, :registry, :register], _,
                     %{name: :tnq, pid: ^me, result: :no_quorum}}

    assert Locker.Registry.register(:tnq) == {:error, :no_quorum}
  end

  test "registry events: register, unregister, down" do
    {:ok, pid} = LockerTest.Echo.start(:tname)

    assert_received {:event, [:locker, :registry, :register], %{duration: _},
                     %{name: :tname, pid: ^pid, result: :yes}}

    assert Locker.Registry.register_name(:tname, self()) == :no
    me = self()

    assert_received {:event, [:locker, :registry, :register], _,
                     %{name: :tname, pid: ^me, result: :no}}

    Process.exit(pid, :kill)
    assert_receive {:event, [:locker, :registry, :down], %{duration: _}, meta}
    assert %{name: :tname, pid: ^pid, reason: :killed, result: :ok} = meta
    assert Locker.Registry.whereis_name(:tname) == :undefined

    {:ok, pid} = LockerTest.Echo.start(:tname)
    assert Locker.Registry.unregister_name(:tname) == :ok
    assert_received {:event, [:locker, :registry, :unregister], _, %{name: :tname, pid: ^pid}}
    GenServer.stop(pid)
  end
end
