defmodule LockerTest.Remote do
  @moduledoc false
  # Functions the tests run on peer nodes through :erpc (the test modules
  # themselves are not loaded there).

  @doc "Spawns a bare process that registers itself under `name`; returns its pid."
  def spawn_registered(name) do
    parent = self()

    pid =
      spawn(fn ->
        result =
          try do
            Locker.Registry.register_name(name, self())
          catch
            # No quorum (a master just cut off): as good as :no here.
            :exit, {:locker_no_quorum, _} -> :no
          end

        send(parent, {:registered, self(), result})
        receive do: (:stop -> :ok)
      end)

    receive do
      {:registered, ^pid, :yes} -> {:ok, pid}
      {:registered, ^pid, :no} -> {:error, :no}
    end
  end

  @doc """
  Spawns a bare process that registers itself under `name`, asks to be
  notified (not stopped) when it loses it, and forwards every message it
  gets to `report` as `{:owner_got, self(), msg}`. Returns its pid.
  """
  def spawn_notified(name, report) do
    parent = self()

    pid =
      spawn(fn ->
        :yes = Locker.Registry.register_name(name, self())
        :ok = Locker.Registry.on_lost(name, :notify)
        send(parent, {:registered, self()})
        forward(report)
      end)

    receive do: ({:registered, ^pid} -> {:ok, pid})
  end

  defp forward(report) do
    receive do
      :stop ->
        :ok

      msg ->
        send(report, {:owner_got, self(), msg})
        forward(report)
    end
  end

  @doc """
  Spawns a process on this node that waits for `key` to be released here
  and sends `{:released, node(), key, os_time_us}` to `report`.
  Returns once the wait is armed (the key held here) or done.
  """
  def watch_release(key, report, timeout) do
    spawn(fn ->
      reply =
        try do
          Locker.wait_for_release(key, timeout)
        catch
          :exit, _ -> :timeout
        end

      send(report, {:released, node(), key, reply, System.os_time(:microsecond)})
    end)
  end

  @doc """
  Kills `pid` (of this node), then looks `name` up at once, from the same
  process (so the lookup's aliveness check sees the kill).
  """
  def kill_then_whereis(pid, name) do
    Process.exit(pid, :kill)
    Locker.Registry.whereis_name(name)
  end

  @doc """
  Drops this node's log events about refused connections (`net_kernel`'s
  disallowed nodes, `global`'s failed connects): partition tests cause
  hundreds of them.
  """
  def quiet_partition_logs do
    :logger.add_primary_filter(:locker_test_partition, {&__MODULE__.drop_partition_noise/2, nil})
  end

  @doc false
  def drop_partition_noise(%{msg: {:format, format, _}}, _) do
    text = IO.chardata_to_string(format)

    if text =~ "disallowed node" or text =~ "failed to connect to",
      do: :stop,
      else: :ignore
  rescue
    _ -> :ignore
  end

  def drop_partition_noise(
        %{msg: {:report, %{label: {:error_logger, _}, format: f, args: a}}},
        x
      ),
      do: drop_partition_noise(%{msg: {:format, f, a}}, x)

  def drop_partition_noise(%{msg: {:string, text}}, _) do
    if IO.chardata_to_string(text) =~ "failed to connect to", do: :stop, else: :ignore
  rescue
    _ -> :ignore
  end

  def drop_partition_noise(_, _), do: :ignore

  @doc "Sends `{:log, node, level, text}` to `pid` for every log event of this node."
  def forward_logs(pid) do
    :ok = :logger.add_primary_filter(:locker_test_forward, {&__MODULE__.forward_log/2, pid})
  end

  @doc false
  def forward_log(%{level: level, msg: msg} = event, pid) do
    text =
      case msg do
        {:string, s} -> IO.chardata_to_string(s)
        {:format, f, a} -> IO.chardata_to_string(:io_lib.format(f, a))
        other -> inspect(other)
      end

    send(pid, {:log, node(), level, text})
    _ = event
    :ignore
  rescue
    _ -> :ignore
  end

  @doc """
  Calls `apply(m, f, a)` in a new process that then stays alive (until
  its node stops), for calls that register the caller: `{:ok, result}`
  (`{:ok, {:exit, reason}}` when the call exits).
  """
  def call_in_new_process(m, f, a) do
    parent = self()

    pid =
      spawn(fn ->
        result =
          try do
            apply(m, f, a)
          catch
            :exit, reason -> {:exit, reason}
          end

        send(parent, {:called, self(), result})
        Process.sleep(:infinity)
      end)

    receive do
      {:called, ^pid, result} -> {:ok, result}
    end
  end

  @doc """
  Spawns a process that registers itself under `name` with `meta`,
  reports `{:registered, pid, result}` to `report`, and on `:unregister`
  calls `Locker.Registry.unregister/0` and reports `{:unregistered, result}`.
  """
  def spawn_register_meta(name, meta, report) do
    Kernel.spawn(fn ->
      send(report, {:registered, self(), Locker.Registry.register(name, meta)})
      receive do: (:unregister -> send(report, {:unregistered, Locker.Registry.unregister()}))
      Process.sleep(:infinity)
    end)
  end

  @doc "Evaluates Erlang expressions (`code`, ending with a dot) with `bindings`: their value."
  def eval_erlang(code, bindings) do
    {:ok, tokens, _} = :erl_scan.string(String.to_charlist(code))
    {:ok, exprs} = :erl_parse.parse_exprs(tokens)
    {:value, value, _} = :erl_eval.exprs(exprs, bindings_of(bindings))
    value
  end

  defp bindings_of(bindings) do
    Enum.reduce(bindings, :erl_eval.new_bindings(), fn {k, v}, acc ->
      :erl_eval.add_binding(k, v, acc)
    end)
  end

  @doc "Registers `n` processes as `{prefix, i}` (with `i` as metadata): their pids."
  def spawn_many_registered(prefix, n) do
    for i <- 1..n do
      {:ok, pid} = LockerTest.Echo.start({Locker.Registry, {prefix, i}, i})
      pid
    end
  end

  @doc """
  Median time of `apply(m, f, a)` over `runs` runs of `batch` calls each,
  in microseconds per call.
  """
  def median_us(m, f, a, runs, batch) do
    times =
      for _ <- 1..runs do
        t0 = System.monotonic_time(:nanosecond)
        for _ <- 1..batch, do: apply(m, f, a)
        (System.monotonic_time(:nanosecond) - t0) / batch / 1000
      end

    Float.round(Enum.at(Enum.sort(times), div(runs, 2)), 1)
  end

  @doc "Calls `apply(m, f, a)` (a start_link) and unlinks the started process from the caller."
  def start_unlinked(m, f, a) do
    with {:ok, pid} <- apply(m, f, a) do
      Process.unlink(pid)
      {:ok, pid}
    end
  end

  @doc "Starts a supervisor (not linked to the caller) of a `LockerTest.Echo` named `name`."
  def start_echo_supervisor(name) do
    children = [%{id: :echo, start: {LockerTest.Echo, :start_link, [name]}}]
    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one, max_restarts: 100)
    Process.unlink(sup)
    {:ok, sup}
  end

  @doc "Starts `{Locker, opts}` in a supervisor of its own, not linked to the caller."
  def start_locker_tree(opts) do
    {:ok, sup} = Supervisor.start_link([{Locker, opts}], strategy: :one_for_one)
    Process.unlink(sup)
    {:ok, sup}
  end

  @doc "Spawns an `acquire/2` caller that reports to `report` and holds until told."
  def spawn_acquirer(id, key, opts, report) do
    spawn(fn ->
      result = Locker.acquire(key, opts)
      send(report, {:acquired, id, node(), result})

      case result do
        {:ok, lease} ->
          receive do: (:release -> send(report, {:released_lease, id, Locker.release(lease)}))

        _ ->
          :ok
      end
    end)
  end

  @doc "Runs a transaction whose function raises; returns what propagated."
  def transaction_raise(key) do
    Locker.transaction(key, 5000, fn lease ->
      if lease.token > 0, do: raise("boom #{lease.token}"), else: :unreachable
    end)
  rescue
    e in RuntimeError -> {:raised, e.message}
  end

  @doc """
  Writes `n` times to `storage` (a `LockerTest.Fenced` on another node)
  under `key`, each time in a transaction carrying the lease's token.
  """
  def fenced_writes(key, storage, n) do
    for _ <- 1..n do
      Locker.transaction(
        key,
        2000,
        fn lease -> GenServer.call(storage, {:write, node(), lease.token}) end,
        timeout: 10_000
      )
    end
  end
end

defmodule LockerTest.Fenced do
  @moduledoc false
  # A resource protected by fencing tokens: accepts a write only with a
  # token above every token it has seen, records every write.
  use GenServer

  def start_link, do: GenServer.start_link(__MODULE__, nil)
  def writes(pid), do: GenServer.call(pid, :writes)

  @impl true
  def init(nil), do: {:ok, %{max: 0, writes: []}}

  @impl true
  def handle_call({:write, from, token}, _from, %{max: max} = s) when token > max,
    do: {:reply, :ok, %{s | max: token, writes: [{from, token} | s.writes]}}

  def handle_call({:write, _from, token}, _from2, s),
    do: {:reply, {:error, {:stale, token, s.max}}, s}

  def handle_call(:writes, _from, s), do: {:reply, Enum.reverse(s.writes), s}
end
