defmodule Locker.Registry.Keeper do
  @moduledoc """
  The per-node process that keeps `Locker.Registry` names alive: it
  monitors every owner on this node and extends their leases every
  `:registry_extend_interval` ms, and releases a name as soon as its owner
  exits. Started by the `locker` application, registered locally as
  `Locker.Registry.Keeper`.

  Extension rounds run in a separate process (one round at a time, up to
  32 extensions in flight), so the keeper handles `DOWN` messages at once
  whatever the masters' latency; each release after a `DOWN` runs in its
  own process too.
  """

  use GenServer
  require Logger
  alias Locker.{Config, Registry, Telemetry}

  @max_concurrency 32

  defstruct names: %{}, monitors: %{}, round: nil, again?: false

  @doc "Starts the keeper, registered locally as `Locker.Registry.Keeper`."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc """
  Makes the keeper on `pid`'s node watch `pid` as the owner of `name`.
  `{:error, :no_registry_keeper}` when that node runs no keeper.
  """
  @spec watch(term(), pid()) :: :ok | {:error, :no_registry_keeper}
  def watch(name, pid) do
    GenServer.call({__MODULE__, node(pid)}, {:watch, name, pid})
  catch
    :exit, _ -> {:error, :no_registry_keeper}
  end

  @doc "Makes the keeper on `pid`'s node forget `name` if `pid` owns it there."
  @spec unwatch(term(), pid()) :: :ok
  def unwatch(name, pid) do
    GenServer.call({__MODULE__, node(pid)}, {:unwatch, name, pid})
  catch
    :exit, _ -> :ok
  end

  @doc "The names a keeper watches, with their owners (for operators and tests)."
  @spec names(node()) :: [{term(), pid()}]
  def names(node \\ node()), do: GenServer.call({__MODULE__, node}, :names)

  @impl true
  def init([]) do
    schedule()
    {:ok, %__MODULE__{}}
  end

  @impl true
  def handle_call({:watch, name, pid}, _from, state) do
    state = forget(state, name)
    ref = Process.monitor(pid)
    state = %{state | names: Map.put(state.names, name, {pid, ref})}
    {:reply, :ok, %{state | monitors: Map.put(state.monitors, ref, name)}}
  end

  def handle_call({:unwatch, name, pid}, _from, state) do
    case state.names do
      %{^name => {^pid, _}} -> {:reply, :ok, forget(state, name)}
      _ -> {:reply, :ok, state}
    end
  end

  def handle_call(:names, _from, state) do
    {:reply, for({name, {pid, _}} <- state.names, do: {name, pid}), state}
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
        _ = spawn(fn -> release_dead(name, pid, reason, started) end)
        {:noreply, %{state | monitors: monitors, names: Map.delete(state.names, name)}}
    end
  end

  def handle_info(:extend, state) do
    schedule()

    case state.round do
      nil -> {:noreply, start_round(state)}
      _ -> {:noreply, %{state | again?: true}}
    end
  end

  def handle_info({:lost, lost}, state) do
    {:noreply, Enum.reduce(lost, state, &drop_lost/2)}
  end

  def handle_info(msg, state) do
    Logger.debug("locker registry: unexpected message #{inspect(msg)}")
    {:noreply, state}
  end

  defp schedule, do: Process.send_after(self(), :extend, Config.registry_extend_interval())

  defp forget(state, name) do
    case Map.pop(state.names, name) do
      {nil, _} ->
        state

      {{_pid, ref}, names} ->
        Process.demonitor(ref, [:flush])
        %{state | names: names, monitors: Map.delete(state.monitors, ref)}
    end
  end

  defp drop_lost({name, pid}, state) do
    case state.names do
      %{^name => {^pid, _}} ->
        Logger.warning(
          "locker registry: lost the name #{inspect(name)} of #{inspect(pid)} (lease not extended)"
        )

        Telemetry.execute([:registry, :lost], %{}, %{name: name, pid: pid})
        forget(state, name)

      _ ->
        state
    end
  end

  defp start_round(%{names: names} = state) when map_size(names) == 0 do
    %{state | again?: false}
  end

  defp start_round(state) do
    keeper = self()
    entries = for {name, {pid, _}} <- state.names, do: {name, pid}
    {_pid, ref} = spawn_monitor(fn -> extend_round(keeper, entries) end)
    %{state | round: ref, again?: false}
  end

  # Extends every lease; reports the names that are no longer the owner's.
  defp extend_round(keeper, entries) do
    lease = Config.registry_lease()
    timeout = min(max(div(lease, 2), 1), 5000)

    lost =
      entries
      |> Task.async_stream(&extend(&1, lease, timeout),
        max_concurrency: @max_concurrency,
        ordered: false,
        timeout: :infinity
      )
      |> Enum.flat_map(fn {:ok, result} -> result end)

    if lost != [], do: Kernel.send(keeper, {:lost, lost})
  end

  defp extend({name, pid}, lease, timeout) do
    # An owner that just died is released by the keeper, not extended.
    if Process.alive?(pid) do
      case :locker.extend_lease(name, pid, lease, timeout) do
        :ok -> []
        {:error, :no_quorum} -> if Registry.owner(name) == {:ok, pid}, do: [], else: [{name, pid}]
      end
    else
      []
    end
  end

  defp release_dead(name, pid, reason, started) do
    result = Registry.release_owned(name, pid)
    duration = System.monotonic_time() - started

    Telemetry.execute([:registry, :down], %{duration: duration}, %{
      name: name,
      pid: pid,
      reason: reason,
      result: result
    })
  end
end
