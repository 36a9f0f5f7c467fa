defmodule Locker.AcquireQueue do
  @moduledoc """
  Serves `Locker.acquire/2` callers of this node in arrival order, per key:
  one caller at a time (the head) makes attempts on a key; the others wait
  in a FIFO without sending anything to the masters. The head leaves when
  it has the lease, gives up or dies, and the next caller becomes the
  head. Started by the `locker` application, registered locally as
  `Locker.AcquireQueue`.

  The head waits for the holder's release or expiry through the local
  `locker` server (`:locker.wait_for_release/2`), see `Locker.acquire/2`.
  Order is kept among the callers of one node only: callers on different
  nodes race, and the masters' quorum decides.
  """

  use GenServer

  @typedoc "A caller's place in a queue (an alias of the caller)."
  @opaque ticket :: reference() | nil

  @doc "Starts the queue, registered locally as `Locker.AcquireQueue`."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc """
  Queues the caller for `key` and blocks until it is the head, or until
  `deadline` (`System.monotonic_time(:millisecond)`, or `:infinity`)
  passes. Without a running queue (or if it dies), the caller goes on
  unordered.
  """
  @spec join(term(), integer() | :infinity) :: {:ok, ticket()} | {:error, :timeout}
  def join(key, deadline) do
    case Process.whereis(__MODULE__) do
      nil ->
        {:ok, nil}

      queue ->
        ticket = :erlang.monitor(:process, queue, [{:alias, :demonitor}])
        GenServer.cast(queue, {:join, key, self(), ticket})

        receive do
          {^ticket, :go} ->
            {:ok, ticket}

          {:DOWN, ^ticket, :process, _, _} ->
            {:ok, nil}
        after
          remaining(deadline) ->
            leave(ticket)
            {:error, :timeout}
        end
    end
  end

  @doc "Leaves the queue (as head or waiter): the next caller becomes the head."
  @spec leave(ticket()) :: :ok
  def leave(nil), do: :ok

  def leave(ticket) do
    GenServer.cast(__MODULE__, {:leave, ticket})
    Process.demonitor(ticket, [:flush])

    receive do
      {^ticket, :go} -> :ok
    after
      0 -> :ok
    end
  end

  @doc "The callers queued for `key` on this node, the head first."
  @spec waiters(term()) :: [pid()]
  def waiters(key), do: GenServer.call(__MODULE__, {:waiters, key})

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  # keys: key => {head ticket, :queue of waiting tickets}
  # tickets: ticket => {key, pid, monitor}; monitors: monitor => ticket

  @impl true
  def init([]), do: {:ok, %{keys: %{}, tickets: %{}, monitors: %{}}}

  @impl true
  def handle_cast({:join, key, pid, ticket}, state) do
    mon = Process.monitor(pid)
    state = %{state | tickets: Map.put(state.tickets, ticket, {key, pid, mon})}
    state = %{state | monitors: Map.put(state.monitors, mon, ticket)}

    case state.keys do
      %{^key => {head, waiting}} ->
        {:noreply, %{state | keys: Map.put(state.keys, key, {head, :queue.in(ticket, waiting)})}}

      _ ->
        go(ticket)
        {:noreply, %{state | keys: Map.put(state.keys, key, {ticket, :queue.new()})}}
    end
  end

  def handle_cast({:leave, ticket}, state), do: {:noreply, remove(state, ticket)}

  @impl true
  def handle_call({:waiters, key}, _from, state) do
    pids =
      case state.keys do
        %{^key => {head, waiting}} ->
          for t <- [head | :queue.to_list(waiting)], do: elem(Map.fetch!(state.tickets, t), 1)

        _ ->
          []
      end

    {:reply, pids, state}
  end

  @impl true
  def handle_info({:DOWN, mon, :process, _pid, _reason}, state) do
    case state.monitors do
      %{^mon => ticket} -> {:noreply, remove(state, ticket)}
      _ -> {:noreply, state}
    end
  end

  defp remove(state, ticket) do
    case Map.pop(state.tickets, ticket) do
      {nil, _} ->
        state

      {{key, _pid, mon}, tickets} ->
        Process.demonitor(mon, [:flush])
        state = %{state | tickets: tickets, monitors: Map.delete(state.monitors, mon)}
        %{state | keys: dequeue(state.keys, key, ticket)}
    end
  end

  defp dequeue(keys, key, ticket) do
    case Map.fetch!(keys, key) do
      {^ticket, waiting} ->
        case :queue.out(waiting) do
          {{:value, next}, rest} ->
            go(next)
            Map.put(keys, key, {next, rest})

          {:empty, _} ->
            Map.delete(keys, key)
        end

      {head, waiting} ->
        Map.put(keys, key, {head, :queue.delete(ticket, waiting)})
    end
  end

  defp go(ticket), do: Kernel.send(ticket, {ticket, :go})
end
