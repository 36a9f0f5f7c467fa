defmodule Locker.Registry.Keeper do
  @moduledoc """
  The per-node process that keeps `Locker.Registry` names alive: it
  monitors every owner on this node, extends their leases every
  `:registry_extend_interval` ms, releases a name as soon as its owner
  exits, and stops (or notifies) an owner whose lease it could not extend
  before the lease could run out on the masters. Started by the `locker`
  application, registered locally as `Locker.Registry.Keeper`.

  ## Deadlines

  For each name the keeper knows until when the masters certainly hold
  the lease: an extension (or the registration) that succeeds gives the
  owner validity until the moment its call **started** plus
  `:registry_lease` (the masters count the lease from when they receive
  the request, which is later). When no extension has succeeded by that
  validity minus `:registry_margin`, the name is lost: with the default
  `:registry_on_lost` `:exit`, the owner gets the exit signal
  `{:shutdown, {:locker_name_lost, name}}`; an owner that traps exits gets
  it as a message and is killed (`:kill`) if it is still alive at the
  validity minus half the margin. With `:notify` (`Locker.Registry.on_lost/2`
  per name) the owner only gets the message `{:locker_name_lost, name}` and
  keeps running. Either way the name is no longer extended.

  The deadline is a timer of the keeper itself, so it fires on time
  whatever the masters do: extension rounds run in a separate process (one
  round at a time, up to 32 extensions in flight) and each release after a
  `DOWN` runs in its own process, so the keeper handles deaths and
  deadlines at once however slow the masters are.

  The keeper mirrors its names in the ETS table of
  `Locker.Registry.Table`: a keeper restarted after a crash adopts them
  (monitors the owners again and enforces the same deadlines).
  """

  use GenServer
  require Logger
  alias Locker.{Config, Registry, Telemetry}
  alias Locker.Registry.Table

  @max_concurrency 32

  defstruct names: %{}, monitors: %{}, round: nil, again?: false, conf: nil

  @typedoc "What the keeper does to an owner that lost its name."
  @type action :: :exit | :notify

  @doc "Starts the keeper, registered locally as `Locker.Registry.Keeper`."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc """
  Makes the keeper on `pid`'s node watch `pid` as the owner of `name`,
  whose lease the masters hold for at least `remaining` ms from now (the
  caller measures it from before the lock request it sent). `value` is
  the value stored under `name` (`pid`, or `pid` with metadata, see
  `Locker.Registry.register/2`). `{:error, :no_registry_keeper}` when that
  node runs no keeper, `{:error, :node_unreachable}` when it cannot be
  reached.
  """
  @spec watch(term(), pid(), term(), non_neg_integer()) ::
          :ok | {:error, :no_registry_keeper | :node_unreachable}
  def watch(name, pid, value \\ nil, remaining) do
    value = value || pid
    GenServer.call({__MODULE__, node(pid)}, {:watch, name, pid, value, remaining})
  catch
    :exit, {{:nodedown, _}, _} -> {:error, :node_unreachable}
    :exit, _ -> {:error, :no_registry_keeper}
  end

  @doc "Makes the keeper on `pid`'s node forget `name` if `pid` owns it there."
  @spec unwatch(term(), pid()) :: :ok
  def unwatch(name, pid) do
    GenServer.call({__MODULE__, node(pid)}, {:unwatch, name, pid})
  catch
    :exit, _ -> :ok
  end

  @doc """
  Sets what the keeper on `pid`'s node does when `pid` loses `name`:
  `:exit` or `:notify`. `{:error, :not_registered}` when it does not watch
  `pid` as the owner of `name`.
  """
  @spec set_action(term(), pid(), action()) :: :ok | {:error, :not_registered}
  def set_action(name, pid, action) when action in [:exit, :notify] do
    GenServer.call({__MODULE__, node(pid)}, {:set_action, name, pid, action})
  catch
    :exit, _ -> {:error, :not_registered}
  end

  @doc "The names a keeper holds for live owners, with their owners (for operators and tests)."
  @spec names(node()) :: [{term(), pid()}]
  def names(node \\ node()), do: GenServer.call({__MODULE__, node}, :names)

  @doc """
  The names this node's keeper holds for live owners, as
  `{name, pid, meta}` (`meta` is `nil` for a name registered without
  metadata), read from `Locker.Registry.Table` without a message (for
  `Locker.Registry.select/1`).
  """
  @spec entries() :: [{term(), pid(), term()}]
  def entries do
    for {name, pid, _until, _action, nil, value} <- :ets.tab2list(Table.name()) do
      {name, pid, Registry.meta_of(value)}
    end
  rescue
    ArgumentError -> []
  end

  @doc """
  Milliseconds left before the keeper on `pid`'s node gives up `name`
  (its validity minus the margin), or `:error` when it does not hold
  `name` for `pid`.
  """
  @spec remaining(term(), pid()) :: non_neg_integer() | :error
  def remaining(name, pid), do: GenServer.call({__MODULE__, node(pid)}, {:remaining, name, pid})

  @impl true
  def init([]) do
    conf = Config.registry()

    # Started without the application's table owner: a table of its own.
    _ =
      if :ets.whereis(Table.name()) == :undefined,
        do: :ets.new(Table.name(), [:set, :public, :named_table])

    schedule(conf)
    {:ok, adopt(%__MODULE__{conf: conf})}
  end

  # Names a previous keeper watched (it crashed): monitored again, with
  # their deadlines. A dead owner's DOWN (:noproc) releases its name.
  defp adopt(state) do
    :ets.tab2list(Table.name())
    |> Enum.reduce(state, fn {name, pid, until, action, lost, value}, state ->
      ref = Process.monitor(pid)
      entry = %{pid: pid, value: value, ref: ref, until: until, action: action, lost: lost}
      arm(name, entry, state.conf)
      put(state, name, entry)
    end)
  end

  @impl true
  def handle_call({:watch, name, pid, value, remaining}, _from, state) do
    state = forget(state, name)
    ref = Process.monitor(pid)
    until = now() + remaining
    action = state.conf.on_lost
    entry = %{pid: pid, value: value, ref: ref, until: until, action: action, lost: nil}
    arm(name, entry, state.conf)
    {:reply, :ok, put(state, name, entry)}
  end

  def handle_call({:unwatch, name, pid}, _from, state) do
    case state.names do
      %{^name => %{pid: ^pid}} -> {:reply, :ok, forget(state, name)}
      _ -> {:reply, :ok, state}
    end
  end

  def handle_call({:set_action, name, pid, action}, _from, state) do
    case state.names do
      %{^name => %{pid: ^pid, lost: nil} = entry} ->
        {:reply, :ok, put(state, name, %{entry | action: action})}

      _ ->
        {:reply, {:error, :not_registered}, state}
    end
  end

  def handle_call(:names, _from, state) do
    {:reply, for({name, %{pid: pid, lost: nil}} <- state.names, do: {name, pid}), state}
  end

  def handle_call({:remaining, name, pid}, _from, state) do
    case state.names do
      %{^name => %{pid: ^pid, lost: nil, until: until}} ->
        {:reply, max(until - state.conf.margin - now(), 0), state}

      _ ->
        {:reply, :error, state}
    end
  end

  @impl true
  def handle_info({:DOWN, ref, :process, pid, reason}, %{round: ref} = state) do
    if reason != :normal,
      do:
        Logger.warning(
          "locker registry: extension round #{inspect(pid)} failed: #{inspect(reason)}"
        )

    state = %{state | round: nil}
    {:noreply, if(state.again?, do: start_round(state), else: state)}
  end

  def handle_info({:DOWN, ref, :process, pid, reason}, state) do
    case Map.pop(state.monitors, ref) do
      {nil, _} ->
        {:noreply, state}

      {name, monitors} ->
        started = System.monotonic_time()
        value = state.names |> Map.fetch!(name) |> Map.get(:value, pid)
        _ = spawn(fn -> release_dead(name, pid, value, reason, started) end)
        :ets.delete(Table.name(), name)
        {:noreply, %{state | monitors: monitors, names: Map.delete(state.names, name)}}
    end
  end

  def handle_info({:deadline, name, ref}, state) do
    case state.names do
      %{^name => %{ref: ^ref, lost: nil} = entry} ->
        if now() >= entry.until - state.conf.margin do
          {:noreply, lose(state, name, entry, :deadline)}
        else
          arm(name, entry, state.conf)
          {:noreply, state}
        end

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:hard_kill, name, ref}, state) do
    case state.names do
      %{^name => %{ref: ^ref, lost: :exit, pid: pid}} ->
        Logger.warning(
          "locker registry: #{inspect(pid)} (traps exits) did not exit after losing the name " <>
            "#{inspect(name)}: killed"
        )

        Process.exit(pid, :kill)

      _ ->
        :ok
    end

    {:noreply, state}
  end

  def handle_info(:extend, state) do
    state = %{state | conf: refresh(state.conf)}
    schedule(state.conf)

    case state.round do
      nil -> {:noreply, start_round(state)}
      _ -> {:noreply, %{state | again?: true}}
    end
  end

  def handle_info({:extended, name, pid, started}, state) do
    case state.names do
      %{^name => %{pid: ^pid, lost: nil, until: until} = entry} ->
        valid = started + state.conf.lease
        if valid > until, do: :ets.update_element(Table.name(), name, {3, valid})

        {:noreply,
         %{state | names: Map.put(state.names, name, %{entry | until: max(until, valid)})}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:not_held, name, pid}, state) do
    case state.names do
      %{^name => %{pid: ^pid, lost: nil} = entry} ->
        {:noreply, lose(state, name, entry, :not_held)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(msg, state) do
    Logger.debug("locker registry: unexpected message #{inspect(msg)}")
    {:noreply, state}
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp schedule(conf), do: Process.send_after(self(), :extend, conf.extend_interval)

  # The configuration as it is now; a bad change keeps the last good one.
  defp refresh(conf) do
    Config.registry()
  rescue
    e in ArgumentError ->
      Logger.warning("locker registry: configuration change ignored: #{Exception.message(e)}")
      conf
  end

  # The timer of `name`'s next check: at its deadline while held, at the
  # hard kill while an exit-lost owner is still alive.
  defp arm(name, %{lost: nil} = entry, conf) do
    Process.send_after(self(), {:deadline, name, entry.ref}, entry.until - conf.margin, abs: true)
  end

  defp arm(name, %{lost: :exit} = entry, conf) do
    at = max(entry.until - div(conf.margin, 2), now())
    Process.send_after(self(), {:hard_kill, name, entry.ref}, at, abs: true)
  end

  defp put(state, name, entry) do
    :ets.insert(
      Table.name(),
      {name, entry.pid, entry.until, entry.action, entry.lost, entry.value}
    )

    %{
      state
      | names: Map.put(state.names, name, entry),
        monitors: Map.put(state.monitors, entry.ref, name)
    }
  end

  defp forget(state, name) do
    case Map.pop(state.names, name) do
      {nil, _} ->
        state

      {%{ref: ref}, names} ->
        Process.demonitor(ref, [:flush])
        :ets.delete(Table.name(), name)
        %{state | names: names, monitors: Map.delete(state.monitors, ref)}
    end
  end

  # `name` is no longer the owner's (its lease may run out on the masters
  # within the margin, or another process holds it): stop extending it and
  # stop or notify the owner.
  defp lose(state, name, %{pid: pid} = entry, why) do
    left = entry.until - now()

    Logger.warning(
      "locker registry: lost the name #{inspect(name)} of #{inspect(pid)} " <>
        "(#{describe(why)}; lease held at most #{left} ms more): #{entry.action}"
    )

    Telemetry.execute([:registry, :lost], %{remaining: left}, %{
      name: name,
      pid: pid,
      reason: why,
      action: entry.action
    })

    case entry.action do
      :exit ->
        Process.exit(pid, {:shutdown, {:locker_name_lost, name}})
        entry = %{entry | lost: :exit}
        arm(name, entry, state.conf)
        put(state, name, entry)

      :notify ->
        Kernel.send(pid, {:locker_name_lost, name})
        value = entry.value
        _ = spawn(fn -> Registry.release_owned(name, value) end)
        forget(state, name)
    end
  end

  defp describe(:deadline), do: "lease not extended in time"
  defp describe(:not_held), do: "no longer held"

  defp start_round(%{names: names} = state) when map_size(names) == 0 do
    %{state | again?: false}
  end

  defp start_round(state) do
    keeper = self()

    entries =
      for {name, %{pid: pid, value: value, lost: nil}} <- state.names, do: {name, pid, value}

    lease = state.conf.lease
    {_pid, ref} = spawn_monitor(fn -> extend_round(keeper, entries, lease) end)
    %{state | round: ref, again?: false}
  end

  # Extends every lease, reporting each success with the instant its call
  # started, and each name found held by another (or by nobody).
  defp extend_round(keeper, entries, lease) do
    timeout = min(max(div(lease, 2), 1), 5000)

    entries
    |> Task.async_stream(&extend(keeper, &1, lease, timeout),
      max_concurrency: @max_concurrency,
      ordered: false,
      timeout: :infinity
    )
    |> Stream.run()
  end

  defp extend(keeper, {name, pid, value}, lease, timeout) do
    # An owner that just died is released by the keeper, not extended.
    if Process.alive?(pid) do
      started = now()

      case :locker.extend_lease(name, value, lease, timeout) do
        :ok ->
          Kernel.send(keeper, {:extended, name, pid, started})

        {:error, :no_quorum} ->
          # No quorum is not a loss by itself (the deadline decides); a
          # name seen held by another, or by nobody, is. A store that
          # cannot be read tells nothing.
          case Registry.read_owner(name) do
            {:ok, ^value} -> :ok
            :unreachable -> :ok
            _ -> Kernel.send(keeper, {:not_held, name, pid})
          end
      end
    end

    :ok
  end

  defp release_dead(name, pid, value, reason, started) do
    result = Registry.release_owned(name, value)
    duration = System.monotonic_time() - started

    Telemetry.execute([:registry, :down], %{duration: duration}, %{
      name: name,
      pid: pid,
      reason: reason,
      result: result
    })
  end
end
